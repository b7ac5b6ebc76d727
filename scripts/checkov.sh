#!/usr/bin/env bash
# checkov over template.yaml, offline: fails on any failed check that .checkov.yaml does not skip.
#
#   scripts/checkov.sh             the CLI report of failed checks (exit 1 if there are any)
#   scripts/checkov.sh -o json     any further arguments go to checkov
#   scripts/checkov.sh --install-only   only install it (make test, while lint and mypy run)
#
# checkov pins boto3 (1.35.x) below both .venv's and SAM CLI's, so it gets a venv of its own,
# inside .venv-tools so that `make clean` removes it too. Installed once, from PyPI.
set -euo pipefail

cd "$(dirname "$0")/.."
CHECKOV_VERSION="${CHECKOV_VERSION:-3.3.30}"
VENV="${CHECKOV_VENV:-.venv-tools/checkov}"

if [ ! -x "$VENV/bin/checkov" ] || [ "$(cat "$VENV/.checkov-version" 2>/dev/null)" != "$CHECKOV_VERSION" ]; then
  # The project's own interpreter (a venv's python would tie this venv to .venv).
  base="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')" \
    || { echo "checkov: .venv missing (make setup)" >&2; exit 2; }
  echo "installing checkov==$CHECKOV_VERSION into $VENV" >&2
  rm -rf "$VENV"
  if ! { "$base" -m venv "$VENV" && "$VENV/bin/pip" install -q "checkov==$CHECKOV_VERSION"; }; then
    rm -rf "$VENV"
    echo "checkov: could not install checkov==$CHECKOV_VERSION (pip needs PyPI once)" >&2
    exit 2
  fi
  echo "$CHECKOV_VERSION" > "$VENV/.checkov-version"
fi

[ "${1:-}" = "--install-only" ] && exit 0

# --skip-download (in .checkov.yaml) and BC_SKIP_MAPPING keep checkov from fetching Prisma
# Cloud's guidelines; a template checkov cannot parse is a failure, not an empty pass.
export BC_SKIP_MAPPING=TRUE CKV_PARSE_ERROR_FAIL=TRUE
start=$SECONDS rc=0
"$VENV/bin/checkov" --config-file .checkov.yaml -f template.yaml "$@" || rc=$?
echo "checkov: $((SECONDS - start)) s" >&2
exit "$rc"

#!/usr/bin/env bash
# Validate template.yaml with the SAM CLI (offline), and with --build also run `sam build`.
#
#   scripts/sam-validate.sh            sam validate --lint (falls back to cfn-lint)
#   scripts/sam-validate.sh --install-only   only install aws-sam-cli (make test runs this
#                                      in the background while lint and mypy run)
#   scripts/sam-validate.sh --build    ... then sam build (`build` works too, as in make build):
#                                      everything when a Docker daemon answers, else all but
#                                      the scan image (it needs Docker) into .aws-sam/build-zip;
#                                      ARCHITECTURE=x86_64 for an x86_64 stack (default arm64)
#
# aws-sam-cli lives in its own venv (.venv-tools): its pins conflict with the project's.
set -euo pipefail

cd "$(dirname "$0")/.."
SAM_CLI_VERSION="${SAM_CLI_VERSION:-1.170.0}"
TOOLS="${SAM_TOOLS_VENV:-.venv-tools}"
REGION="${AWS_REGION:-us-east-1}"
# The stack's Architecture parameter. sam passes BuildArchitecture to its own builders but not
# to a makefile build, so layers/core/Makefile (CoreLayer: libmagic + wheels for Lambda) reads
# it from the environment: one value for the layer and the functions.
export ARCHITECTURE="${ARCHITECTURE:-arm64}"
case "$ARCHITECTURE" in arm64|x86_64) ;; *) echo "ARCHITECTURE must be arm64 or x86_64" >&2; exit 2 ;; esac

# sam validate translates locally and makes no AWS call, but boto3 under it wants a region and
# some credentials to exist; dummies keep it from ever looking for real ones.
export SAM_CLI_TELEMETRY=0
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-testing}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-testing}"
export AWS_DEFAULT_REGION="$REGION"

find_python312() {
  # A pyenv shim may exist without a 3.12 behind it, so ask each candidate for the real
  # interpreter path (the base one, should the candidate be a venv's python).
  local candidate
  for candidate in "$(command -v python3.12 || true)" \
                   "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python3.12; do
    [ -n "$candidate" ] && [ -x "$candidate" ] || continue
    "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys._base_executable)' \
      2>/dev/null && return
  done
  return 1
}

PY312="$(find_python312)" || { echo "python3.12 not found (sam build needs it on PATH)" >&2; exit 2; }
# sam build's python3.12 workflow looks the interpreter up on PATH by that exact name.
export PATH="$(dirname "$PY312"):$PATH"

if [ ! -x "$TOOLS/bin/sam" ]; then
  echo "installing aws-sam-cli==$SAM_CLI_VERSION into $TOOLS" >&2
  if ! { "$PY312" -m venv "$TOOLS" && "$TOOLS/bin/pip" install -q "aws-sam-cli==$SAM_CLI_VERSION"; }; then
    echo "aws-sam-cli could not be installed; falling back to cfn-lint" >&2
    exec .venv/bin/cfn-lint template.yaml
  fi
fi

[ "${1:-}" = "--install-only" ] && exit 0

start=$SECONDS
"$TOOLS/bin/sam" validate --lint --template template.yaml --region "$REGION"
echo "sam validate --lint: $((SECONDS - start)) s" >&2

case "${1:-}" in --build|build) ;; *) exit 0 ;; esac

start=$SECONDS
if docker info >/dev/null 2>&1; then
  "$TOOLS/bin/sam" build --template template.yaml --cached --parallel \
    --parameter-overrides "Architecture=$ARCHITECTURE"
else
  echo "no Docker daemon: building the zip functions only (ScanFunction is a container image)" >&2
  # `sam build <id>` builds one resource and replaces the build dir, so build one variant of
  # the template without the image function instead, with code paths made absolute because
  # the variant lives under .aws-sam/.
  mkdir -p .aws-sam
  .venv/bin/python - <<'PY'
import json
from pathlib import Path

from cfnlint.decode import cfn_yaml

template = json.loads(json.dumps(cfn_yaml.load("template.yaml")))
resources = template["Resources"]
for name in [n for n, r in resources.items() if r.get("Properties", {}).get("PackageType") == "Image"]:
    del resources[name]
for resource in resources.values():
    for key in ("CodeUri", "ContentUri"):
        if key in resource.get("Properties", {}):
            resource["Properties"][key] = str(Path(resource["Properties"][key]).resolve())
Path(".aws-sam/template-zip.json").write_text(json.dumps(template, indent=1))
PY
  "$TOOLS/bin/sam" build --template .aws-sam/template-zip.json --build-dir .aws-sam/build-zip \
    --cached --parallel --parameter-overrides "Architecture=$ARCHITECTURE"
fi
echo "sam build: $((SECONDS - start)) s" >&2

#!/usr/bin/env bash
# Creates .venv (Python >= 3.11, 3.12 preferred: the Lambda runtime) and installs the project
# with its dev extras, pinned by requirements.lock. Re-running is cheap: it reinstalls only
# when pyproject.toml or the lock changed.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.12)
  if command -v pyenv >/dev/null 2>&1; then
    for d in "$(pyenv root)"/versions/3.12*/bin/python3.12; do [ -x "$d" ] && candidates+=("$d"); done
  fi
  for d in /root/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
    [ -x "$d" ] && candidates+=("$d")
  done
  candidates+=(python3.13 python3.11 python3)
  for c in "${candidates[@]}"; do
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' >/dev/null 2>&1; then
      echo "$c"; return 0
    fi
  done
  return 1
}

if [ ! -x .venv/bin/python ]; then
  PY=$(find_python) || { echo "setup: Python >= 3.11 not found (3.12 preferred). Install it and retry." >&2; exit 1; }
  echo "setup: creating .venv with $("$PY" --version 2>&1) ($PY)"
  "$PY" -m venv .venv
fi

stamp=.venv/.mailmoat-installed
lockfiles=(pyproject.toml)
[ -f requirements.lock ] && lockfiles+=(requirements.lock)
want=$(cat "${lockfiles[@]}" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing mailmoat and its dependencies into .venv"
  constraints=()
  [ -f requirements.lock ] && constraints=(-c requirements.lock)
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]' "${constraints[@]}"
  echo "$want" > "$stamp"
fi

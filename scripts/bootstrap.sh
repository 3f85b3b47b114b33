#!/usr/bin/env bash
# Create or refresh .venv at the repository root. Idempotent: a stamp records the
# hash of what was installed, so a second run with nothing changed returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
want=$(cat pyproject.toml $( [[ -f constraints.txt ]] && echo constraints.txt ) | sha256sum | cut -c1-16)
if [[ -x .venv/bin/python && -f .venv/.stamp && "$(cat .venv/.stamp)" == "$want" ]]; then
  exit 0
fi
if [[ ! -x .venv/bin/python ]]; then
  echo "bootstrap: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check "uv>=0.5"
args=(-e ".[test]")
[[ -f constraints.txt ]] && args+=(-c constraints.txt)
echo "bootstrap: installing the package and its test tools into .venv (first run takes a few minutes)"
VIRTUAL_ENV="$PWD/.venv" .venv/bin/uv pip install --quiet --python .venv/bin/python "${args[@]}"
echo "$want" > .venv/.stamp

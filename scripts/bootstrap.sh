#!/usr/bin/env bash
# Creates .venv and installs card-agent with everything the suite needs, and
# node_modules/ with the extension's lint, type check and unit test tools.
# Re-running is cheap: pip and npm run only when their inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[pcsc,agent,test]'
  touch "$stamp"
fi

# The extension's checks (package.json, pinned in package-lock.json). node_modules/
# lives at the repository root, outside extension/, so it never ships with it.
npm_stamp=node_modules/.installed
if [ ! -f "$npm_stamp" ] || [ package-lock.json -nt "$npm_stamp" ] || [ package.json -nt "$npm_stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$npm_stamp"
fi

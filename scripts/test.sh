#!/usr/bin/env bash
# The whole test suite: set-up (venv, node_modules, Debian packages), lint, types, tests.
# This is the README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "== ruff"
ruff check .
ruff format --check .
echo "== mypy"
mypy
echo "== import contracts (pyproject.toml [tool.importlinter], docs/architecture.md)"
lint-imports
echo "== extension: eslint, tsc --checkJs, node --test"
npm run --silent lint
npm run --silent typecheck
npm run --silent test
echo "== pytest"
pytest "$@"

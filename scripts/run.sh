#!/usr/bin/env bash
# The main job: set up, then run card-agent on the built-in simulated card.
# Extra arguments go to `card-agent` (default: `serve`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh >&2
if [ $# -eq 0 ]; then
  set -- serve
fi
exec .venv/bin/card-agent "$@"

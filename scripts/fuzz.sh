#!/usr/bin/env bash
# Long coverage-guided fuzzing runs of the atheris harnesses in tests/fuzz/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 600 s each, every target)
#   targets: apdu card_os compat audit api
#
# Targets run one after the other (the machine is shared; libFuzzer uses one core).
# Each starts from the seed corpus in tests/fuzz/corpus/<target>/ plus what earlier
# long runs found (artifacts/fuzz/<target>/corpus/, kept between runs), and writes
# new inputs there and crash reproducers as artifacts/fuzz/<target>/crash-* (artifacts/
# is gitignored). Replay one with: .venv/bin/python tests/fuzz/fuzz_<target>.py FILE
# More libFuzzer flags in FUZZ_FLAGS, e.g. FUZZ_FLAGS="-len_control=0" (long inputs
# from the start instead of growing them slowly). Exit status: 0 when no target
# crashed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-600}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=(apdu card_os compat audit api)
fi
case "$seconds" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

PY=.venv/bin/python
[ -x "$PY" ] || bash scripts/bootstrap.sh

failed=()
for target in "${targets[@]}"; do
  harness=tests/fuzz/fuzz_${target}.py
  if [ ! -f "$harness" ]; then
    echo "no such target: $target (tests/fuzz/fuzz_*.py)" >&2
    exit 2
  fi
  out=artifacts/fuzz/$target
  mkdir -p "$out/corpus"
  echo "== $target: ${seconds}s, crashes -> $out/, log -> $out/fuzz.log"
  if "$PY" "$harness" "$out/corpus" "tests/fuzz/corpus/$target" \
      -max_total_time="$seconds" -artifact_prefix="$out/" -print_final_stats=1 ${FUZZ_FLAGS:-} \
      >"$out/fuzz.log" 2>&1; then
    grep -E '^(#[0-9]+ +DONE|stat::(number_of_executed_units|average_exec_per_sec))' \
      "$out/fuzz.log" || true
  else
    echo "!! $target crashed: $(ls -t "$out"/crash-* "$out"/timeout-* "$out"/oom-* 2>/dev/null | head -1)"
    grep -A 30 'Uncaught Python exception' "$out/fuzz.log" | head -40 || tail -20 "$out/fuzz.log"
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]}" >&2
  exit 1
fi

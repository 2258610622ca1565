"""A short, bounded run of every atheris harness (tests/fuzz/fuzz_*.py) on its seed corpus.

Each harness runs as its own process (libFuzzer owns the process and exits it) for a
fixed number of inputs with a fixed seed, starting from tests/fuzz/corpus/<target>/;
inputs it adds go to a temporary directory, so the kept corpus never changes here. A
crash fails the test with the reproducer's path and the harness's own report; replay
it with `python tests/fuzz/fuzz_<target>.py <reproducer>`. Longer runs:
`scripts/fuzz.sh` (docs/reliability.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CORPUS = HERE / "corpus"
SEED = 20241
# Inputs per harness: about 2-5 seconds each on a busy 2-core machine (measured figures
# in docs/reliability.md), most of it process start-up (card keys, the agent runtime).
RUNS = {"apdu": 30000, "card_os": 1500, "compat": 4000, "audit": 4000, "api": 3000}
TIMEOUT_S = 120

pytestmark = pytest.mark.fuzz


def reproducers(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))


@pytest.mark.parametrize("target", sorted(RUNS))
def test_harness_runs_clean(target: str, tmp_path: Path) -> None:
    runs = RUNS[target]
    found = tmp_path / "found"
    new_inputs = tmp_path / "new-inputs"
    found.mkdir()
    new_inputs.mkdir()
    command = [
        sys.executable,
        str(HERE / f"fuzz_{target}.py"),
        str(new_inputs),  # first corpus directory: where libFuzzer writes new inputs
        str(CORPUS / target),
        f"-runs={runs}",
        f"-seed={SEED}",
        f"-artifact_prefix={found}/",
        "-print_final_stats=1",
    ]
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    report = "\n".join(
        line for line in done.stderr.splitlines() if not line.startswith(("INFO:", "WARNING:"))
    )
    crashes = reproducers(found)
    if done.returncode != 0 or crashes:
        where = ", ".join(str(p) for p in crashes) or "(no reproducer written)"
        pytest.fail(
            f"fuzz_{target} failed (exit {done.returncode}); reproducer: {where}\n"
            f"replay: python tests/fuzz/fuzz_{target}.py {crashes[0] if crashes else ''}\n"
            f"{report[-6000:]}",
            pytrace=False,
        )
    executed = re.search(r"stat::number_of_executed_units:\s*(\d+)", done.stderr)
    assert executed is not None, report[-2000:]
    assert int(executed.group(1)) == runs, report[-2000:]


def test_every_harness_has_a_seed_corpus_and_a_smoke_run() -> None:
    harnesses = {p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py")}
    assert harnesses == set(RUNS)
    for target in harnesses:
        seeds = [p for p in (CORPUS / target).iterdir() if p.is_file()]
        assert seeds, target

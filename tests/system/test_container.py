"""The container harness itself, without booting anything.

The overlay's upper directory gives the container's `/` its owner and mode. The
pytest process's umask is not ours to trust: an in-process agent (build_runtime sets
0o077 for its state files) leaves it behind, and a 0700 upper directory made a `/`
only root could traverse. Every non-root service then failed: the agent with
200/CHDIR, and its stdout could not reach the journal socket (the full CI run's boot
timed out; the system tier alone passed).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.system.container import RUNS, Container

pytestmark = pytest.mark.system


@pytest.mark.skipif(os.geteuid() != 0, reason="the run directories are root's")
def test_the_container_root_keeps_the_lower_roots_mode_whatever_the_umask(
    tmp_path: Path,
) -> None:
    lower = tmp_path / "lower"
    lower.mkdir()
    lower.chmod(0o755)
    name = f"ca-sys-{os.getpid()}-umask"
    old = os.umask(0o077)
    try:
        box = Container(lower, name)
    finally:
        os.umask(old)
    try:
        upper = stat.S_IMODE((box.dir / "upper").stat().st_mode)
        assert upper == 0o755, f"upper dir {upper:o}: `/` in the container would be {upper:o}"
    finally:
        shutil.rmtree(RUNS / name, ignore_errors=True)

"""bench/sign_split.py still runs against the current agent: its sitecustomize wraps the
app `create_app` builds, and every row of the split gets a figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_sign_split_prints_every_part_of_the_path() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sign_split.py"), "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    for row in (
        "card (Server-Timing card)",
        "waiting for the card owner thread (queue)",
        "the sign handler's own work",
        "ASGI stack before the answer",
        "sending the answer",
        "outside the app",
        "overhead = latency - card - queue",
        "the whole ASGI app",
    ):
        match = re.search(re.escape(row) + r".*?(-?\d+\.\d{3})$", done.stdout, re.MULTILINE)
        assert match is not None, f"no figure for {row!r}:\n{done.stdout}"
    requests = re.search(r"POST /v1/sign \((\d+) requests\)", done.stdout)
    assert requests is not None, done.stdout
    assert int(requests.group(1)) > 0, done.stdout

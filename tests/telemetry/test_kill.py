"""The agent killed with SIGKILL: the last will marks the kiosk offline, and what was in
the outbox is sent after the restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.telemetry.outbox import OUTBOX_FILE
from tests.telemetry.conftest import Broker, Collector, wait_sync

ROOT = Path(__file__).resolve().parents[2]
KIOSK = "kiosk-kill"


class Child:
    def __init__(self, port: int, state: Path, run: int, events: int) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.telemetry.child",
                "--port",
                str(port),
                "--state",
                str(state),
                "--kiosk",
                KIOSK,
                "--run",
                str(run),
                "--events",
                str(events),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_line(self, line: str) -> None:
        wait_sync(lambda: line in self.lines or self.proc.poll() is not None, line, 20)
        assert line in self.lines, "\n".join(self.lines)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.poll() is None:
            child.kill()


def pending(state: Path) -> int:
    """Rows in the outbox, read by a second process (WAL: readers do not block it)."""
    db = sqlite3.connect(state / OUTBOX_FILE)
    try:
        return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        db.close()


def audit(events: list[dict]) -> list[tuple[int, int]]:
    return [(int(e["audit_id"][2:6], 16), int(e["audit_id"][6:], 16)) for e in events]


def test_sigkill_last_will_then_outbox_drains_after_restart(
    broker: Broker, collect: Callable[..., Collector], tmp_path: Path, children: list[Child]
) -> None:
    sub = collect(broker.port)
    state = tmp_path / "state"

    def status() -> dict:
        return sub.last_status() or {}

    # Run 1: connected, three events delivered; then SIGKILL -> the broker sends the will.
    first = Child(broker.port, state, run=1, events=3)
    children.append(first)
    wait_sync(lambda: len(sub.unique_events()) == 3 and status().get("state") == "online",
              "run 1 online with 3 events", 20)  # fmt: skip
    wait_sync(lambda: pending(state) == 0, "run 1's events acknowledged and deleted")
    first.kill()
    wait_sync(lambda: status().get("state") == "offline", "last will")
    assert status()["reason"] == "connection_lost"
    assert status()["kiosk"] == KIOSK

    # Run 2: the broker is down; 50 events are stored, then the agent is killed.
    broker.stop()
    second = Child(broker.port, state, run=2, events=50)
    children.append(second)
    second.wait_line("stored 50")
    second.kill()
    assert pending(state) == 50

    # Run 3 after the broker is back: the 50 stored events arrive, in order.
    broker.start()
    third = Child(broker.port, state, run=3, events=0)
    children.append(third)
    wait_sync(lambda: len(sub.unique_events()) == 53, "the stored events", 20)
    assert audit(sub.unique_events()) == [(1, i) for i in range(3)] + [(2, i) for i in range(50)]
    wait_sync(lambda: status().get("state") == "online", "online again")
    wait_sync(lambda: pending(state) == 0, "outbox empty")

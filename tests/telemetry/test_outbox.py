"""The SQLite outbox on its own: order, durability, overflow policy."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from pathlib import Path

import pytest

from agent.telemetry.outbox import AsyncOutbox, NewMessage, Outbox


def msg(n: int, *, critical: bool = False, topic: str = "t/events") -> NewMessage:
    return NewMessage(topic, {"n": n}, critical)


def ns(rows: list) -> list[int]:
    return [json.loads(r.payload)["n"] for r in rows]


def test_append_peek_delete_in_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_rows=100)
    box.open()
    seqs = box.append([msg(i) for i in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    rows = box.peek(3)
    assert ns(rows) == [0, 1, 2]
    assert [json.loads(r.payload)["seq"] for r in rows] == [1, 2, 3]
    assert box.delete([1, 2]) == 2
    assert ns(box.peek(10)) == [2, 3, 4]
    assert box.delete([1, 99]) == 0  # already gone: ignored
    assert box.stats().pending == 3
    box.close()


def test_survives_reopen_and_seq_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, max_rows=100)
    box.open()
    box.append([msg(i) for i in range(3)])
    box.delete([1, 2, 3])
    box.append([msg(3)])
    box.close()
    # The journal is WAL; the database is usable by a second process too.
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = Outbox(path, max_rows=100)
    again.open()
    assert again.stats().pending == 1
    assert again.append([msg(4)]) == [5]  # 1-3 were deleted: never handed out again
    assert ns(again.peek(10)) == [3, 4]
    again.close()


def test_overflow_drops_oldest_non_critical_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_rows=10)
    box.open()
    box.append([msg(i, critical=i % 2 == 0) for i in range(10)])  # 5 critical, 5 not
    box.append([msg(10 + i) for i in range(3)])  # 3 over: oldest non-critical go
    rows = box.peek(100)
    assert ns(rows) == [0, 2, 4, 6, 7, 8, 9, 10, 11, 12]
    stats = box.stats()
    assert (stats.pending, stats.dropped_total, stats.dropped_critical) == (10, 3, 0)
    # 8 more non-critical: every non-critical is older than them, then they go themselves
    box.append([msg(20 + i) for i in range(8)])
    assert ns(box.peek(100)) == [0, 2, 4, 6, 8, 23, 24, 25, 26, 27]
    # Only when nothing non-critical is left do critical ones go, oldest first.
    box.append([msg(30 + i, critical=True) for i in range(10)])
    assert ns(box.peek(100)) == list(range(30, 40))
    stats = box.stats()
    assert stats.dropped_total == 3 + 8 + 10
    assert stats.dropped_critical == 5
    box.close()
    # The drop counters are persistent.
    again = Outbox(tmp_path / "o.db", max_rows=10)
    again.open()
    assert again.stats().dropped_total == 21
    assert again.stats().dropped_critical == 5
    again.close()


def test_lowered_limit_applies_at_open(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", max_rows=50)
    box.open()
    box.append([msg(i) for i in range(30)])
    box.close()
    small = Outbox(tmp_path / "o.db", max_rows=10)
    small.open()
    assert ns(small.peek(100)) == list(range(20, 30))
    assert small.stats().dropped_total == 20
    small.close()


def test_async_outbox_runs_sqlite_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    real_append = Outbox.append

    def spy(self: Outbox, messages: list[NewMessage]) -> list[int]:
        threads.add(threading.current_thread().name)
        return real_append(self, messages)

    monkeypatch.setattr(Outbox, "append", spy)

    async def main() -> None:
        box = AsyncOutbox(tmp_path / "o.db", max_rows=100)
        await box.open()
        assert await box.append([msg(1), msg(2)]) == [1, 2]
        assert ns(await box.peek(10)) == [1, 2]
        await box.delete([1])
        assert box.stats().pending == 1
        await box.close()

    asyncio.run(main())
    assert threads
    assert all(name.startswith("telemetry-outbox") for name in threads)

"""The durable outbox: every telemetry message is stored before it is sent.

SQLite in the state directory (`telemetry-outbox.sqlite3`), WAL journal. Appends commit
with `synchronous=FULL` (the WAL is fsynced): a stored row survives a crash of the agent
and a power cut. Deletes commit with `synchronous=NORMAL` (no fsync of their own; the
next append's or checkpoint's fsync carries them): a power cut can undo the latest
deletes, which only sends those rows again — never loses one.

* `append` assigns each message the next `seq` (AUTOINCREMENT: never reused, also across
  restarts and deletions), writes it into the JSON payload and commits the batch in one
  transaction.
* `peek` returns the oldest rows in `seq` order; the publisher sends them and `delete`s
  a row only after the broker acknowledged it (PUBACK). A crash between the two sends
  the row again: delivery is at least once; consumers drop duplicates by `id`.
* Bounded: at most `max_rows`. When an append goes over, the oldest *non-critical* rows
  are dropped first (card presence events, metrics), then — only if every row left is
  critical — the oldest critical rows. Drops are counted in `dropped_total` and
  `dropped_critical`, kept in the database and published in status and metrics.

`Outbox` is synchronous and must be used from one thread at a time; `AsyncOutbox` runs
every call on one dedicated thread so nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

OUTBOX_FILE = "telemetry-outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    critical INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_noncritical ON outbox (critical, seq);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class NewMessage:
    """A message to store. `seq` is added to `payload` by the outbox."""

    topic: str
    payload: Mapping[str, Any]
    critical: bool


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    topic: str
    payload: bytes
    critical: bool


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dropped_total: int
    dropped_critical: int
    stored_total: int  # appended since this process opened the outbox
    deleted_total: int  # acknowledged (and deleted) since this process opened it


class Outbox:
    def __init__(self, path: Path, *, max_rows: int) -> None:
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        self.path = path
        self.max_rows = max_rows
        self._db: sqlite3.Connection | None = None
        self._durable = True  # the connection's current synchronous mode is FULL
        self._pending = 0
        self._dropped_total = 0
        self._dropped_critical = 0
        self._stored_total = 0
        self._deleted_total = 0

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        self._durable = True
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db
        self._pending = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        self._dropped_total = int(meta.get("dropped_total", 0))
        self._dropped_critical = int(meta.get("dropped_critical", 0))
        if self._pending > self.max_rows:  # the limit was lowered since the last run
            with self._transaction(durable=True) as cur:
                self._enforce_limit(cur)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # --- operations ------------------------------------------------------------------

    def append(self, messages: Sequence[NewMessage]) -> list[int]:
        """Store `messages` in one transaction; returns their seqs."""
        if not messages:
            return []
        seqs: list[int] = []
        with self._transaction(durable=True) as cur:
            row = cur.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
            seq = int(row[0]) if row is not None else 0
            rows = []
            for message in messages:
                seq += 1
                payload = dict(message.payload)
                payload["seq"] = seq
                body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
                rows.append((seq, message.topic, body.encode("utf-8"), int(message.critical)))
                seqs.append(seq)
            cur.executemany(
                "INSERT INTO outbox (seq, topic, payload, critical) VALUES (?, ?, ?, ?)", rows
            )
            self._pending += len(rows)
            self._stored_total += len(rows)
            self._enforce_limit(cur)
        return seqs

    def peek(self, limit: int) -> list[StoredMessage]:
        db = self._conn()
        rows = db.execute(
            "SELECT seq, topic, payload, critical FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [StoredMessage(int(s), str(t), bytes(p), bool(c)) for s, t, p, c in rows]

    def delete(self, seqs: Sequence[int]) -> int:
        """Delete acknowledged rows (rows already dropped are ignored)."""
        if not seqs:
            return 0
        with self._transaction(durable=False) as cur:
            cur.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            deleted = max(0, cur.rowcount)  # summed over the statements
        self._pending -= deleted
        self._deleted_total += deleted
        return deleted

    def stats(self) -> OutboxStats:
        return OutboxStats(
            pending=self._pending,
            dropped_total=self._dropped_total,
            dropped_critical=self._dropped_critical,
            stored_total=self._stored_total,
            deleted_total=self._deleted_total,
        )

    # --- internals ---------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    def _transaction(self, *, durable: bool) -> _Transaction:
        db = self._conn()
        if durable != self._durable:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        return _Transaction(db)

    def _enforce_limit(self, cur: sqlite3.Cursor) -> None:
        excess = self._pending - self.max_rows
        if excess <= 0:
            return
        dropped = 0
        dropped_critical = 0
        for critical in (0, 1):
            if excess <= 0:
                break
            cur.execute(
                "DELETE FROM outbox WHERE seq IN "
                "(SELECT seq FROM outbox WHERE critical = ? ORDER BY seq LIMIT ?)",
                (critical, excess),
            )
            n = cur.rowcount
            excess -= n
            dropped += n
            if critical:
                dropped_critical += n
        self._pending -= dropped
        self._dropped_total += dropped
        self._dropped_critical += dropped_critical
        cur.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [("dropped_total", self._dropped_total), ("dropped_critical", self._dropped_critical)],
        )


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Cursor:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        return cur

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


class AsyncOutbox:
    """`Outbox` with every call on one dedicated thread (no SQLite on the event loop)."""

    def __init__(self, path: Path, *, max_rows: int) -> None:
        self._outbox = Outbox(path, max_rows=max_rows)
        self._executor: ThreadPoolExecutor | None = None

    @property
    def path(self) -> Path:
        return self._outbox.path

    def stats(self) -> OutboxStats:
        """Counters as of the last completed call (read without waiting for the thread)."""
        return self._outbox.stats()

    async def open(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="telemetry-outbox")
        await self._call(self._outbox.open)

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        await self._call(self._outbox.close)
        self._executor = None
        executor.shutdown(wait=False)

    async def append(self, messages: Sequence[NewMessage]) -> list[int]:
        return await self._call(self._outbox.append, messages)

    async def peek(self, limit: int) -> list[StoredMessage]:
        return await self._call(self._outbox.peek, limit)

    async def delete(self, seqs: Sequence[int]) -> int:
        return await self._call(self._outbox.delete, seqs)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise RuntimeError("outbox is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

"""Append-only, hash-chained audit log (JSON lines) in the agent's state directory.

Why this shape:
- One JSON object per line, written by a single ``os.write`` on an O_APPEND fd and fsynced
  before ``append`` returns: an audit id handed to a client names a record already on disk.
- Each record's ``prev`` is the SHA-256 of the previous line's exact bytes, so editing,
  deleting or reordering records breaks the chain at a line ``verify_audit_log`` reports.
  Dropping the newest records leaves a valid chain: detecting that needs an anchor kept
  elsewhere (e.g. the last seq/hash sent with telemetry).
- Every record is fsynced before the next write starts, so a crash (kill -9, power loss)
  can only tear the LAST line. Opening the log detects that, moves the torn bytes to a
  quarantine file and logs ``log_recovered``: never silently accepted nor silently dropped.
  Anything worse than one bad trailing line is not a crash and is refused.
- Synchronous and thread-safe: fsync blocks, so the service calls it via asyncio.to_thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "MAX_LINE_BYTES",
    "ZERO_HASH",
    "AuditLog",
    "AuditLogCorrupt",
    "AuditLogError",
    "AuditRecord",
    "AuditVerifyResult",
    "verify_audit_log",
]

log = logging.getLogger(__name__)

ZERO_HASH = "0" * 64
# Records are small (titles, digests, ids). A cap keeps a garbage line from costing
# unbounded memory in verify/recovery, and it is the same limit on both sides.
MAX_LINE_BYTES = 64 * 1024
# How long the writer gathers records nobody waits for (`append_later`) before it writes
# them; a record someone waits for (`submit`, `flush`) is written at once, with them.
LAZY_WINDOW_S = 0.01
_BLOCK = 64 * 1024

# Defence in depth: the service never means to log these, so a field with such a name is
# a bug to surface loudly rather than a secret to write to disk. Matched case-insensitively,
# also inside nested objects.
_SECRET_KEYS = frozenset({"pin", "passwd", "password", "token", "new_pin", "old_pin", "data"})
_SECRET_SUFFIXES = ("_pin", "_passwd", "_password", "_token", "_secret")
_RESERVED_KEYS = frozenset({"seq", "id", "time", "prev", "event"})


class AuditLogError(Exception):
    """The audit log cannot be used (in use elsewhere, or an earlier write failed)."""


class AuditLogCorrupt(AuditLogError):
    """The tail is damaged beyond what a crash can produce: needs an operator."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    id: str
    time: str
    prev: str
    event: str
    fields: Mapping[str, Any]
    line_sha256: str  # what the next record's ``prev`` will be


@dataclass(frozen=True, slots=True)
class AuditVerifyResult:
    ok: bool
    records: int  # records verified good before the first bad line (all of them if ok)
    first_bad_line: int | None  # 1-based
    reason: str | None
    torn_tail: bool  # the last line is what the agent quarantines on its next start
    # The newest record's (seq, line SHA-256) of a log that verifies: the anchor to keep
    # elsewhere. 0 and ZERO_HASH otherwise.
    last_seq: int = 0
    last_sha256: str = ZERO_HASH
    # Signature requests whose outcome record is missing (a crash between the card's
    # answer and the outcome's write); their ids, at most MAX_REPORTED_REQUESTS.
    requests_without_outcome: int = 0
    request_ids_without_outcome: tuple[str, ...] = ()
    # Against a given anchor: True it matches, False it does not, None not checked.
    anchor_ok: bool | None = None
    anchor_reason: str | None = None


def _check_keys(fields: Mapping[str, object], *, top: bool) -> None:
    for key, value in fields.items():
        low = str(key).lower()
        if top and low in _RESERVED_KEYS:
            raise ValueError(f"reserved audit field: {key!r}")
        if low in _SECRET_KEYS or low.endswith(_SECRET_SUFFIXES):
            raise ValueError(f"refusing secret-like audit field: {key!r}")
        _check_value(value)


def _check_value(value: object) -> None:
    if isinstance(value, Mapping):
        _check_keys(value, top=False)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_value(item)


def _encode(record: Mapping[str, object]) -> bytes:
    # allow_nan=False: NaN/Infinity are not JSON; refuse them rather than write them.
    text = json.dumps(
        record, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A string that is not text (a lone surrogate) must not cost the record: written
        # \u-escaped it is still valid JSON and reads back as the same string.
        return json.dumps(
            record, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False
        ).encode("ascii")


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None
    return obj if isinstance(obj, dict) else None


def _shape_error(rec: Mapping[str, Any]) -> str | None:
    seq = rec.get("seq")
    if type(seq) is not int or seq < 1:
        return "bad or missing seq"
    prev = rec.get("prev")
    if not (isinstance(prev, str) and len(prev) == 64 and set(prev) <= set("0123456789abcdef")):
        return "bad or missing prev"
    for key in ("id", "time", "event"):
        if not isinstance(rec.get(key), str):
            return f"bad or missing {key}"
    return None


def _sha256(line: bytes) -> str:
    return hashlib.sha256(line).hexdigest()


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    parts: list[bytes] = []
    while n > 0:
        chunk = os.pread(fd, n, offset)
        if not chunk:
            raise AuditLogError("audit log shrank while being read")
        parts.append(chunk)
        n -= len(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    # One os.write in practice: regular files only write short on ENOSPC or a signal.
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _rfind_newline(fd: int, end: int) -> int:
    """Offset of the last b"\\n" before ``end``, or -1; reads backwards in blocks (O(tail))."""
    pos = end
    while pos > 0:
        start = max(0, pos - _BLOCK)
        i = _pread_exact(fd, pos - start, start).rfind(b"\n")
        if i >= 0:
            return start + i
        pos = start
    return -1


def _record_ending_at(fd: int, end: int) -> tuple[int, int | None, str]:
    """The line that ends just before offset ``end`` (which follows a newline).

    Returns (line start, seq or None if the line is not a valid record, line hash).
    ``end == 0`` is the empty prefix: a valid state with no records.
    """
    if end == 0:
        return 0, 0, ZERO_HASH
    start = _rfind_newline(fd, end - 1) + 1
    length = end - 1 - start
    if length > MAX_LINE_BYTES:
        return start, None, ""
    line = _pread_exact(fd, length, start)
    rec = _parse(line)
    if rec is None or _shape_error(rec) is not None:
        return start, None, ""
    return start, int(rec["seq"]), _sha256(line)


def _fsync_dir(directory: Path) -> None:
    # A new file (log or quarantine) is only durable once its directory entry is.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Pending:
    """A record before it has its place in the chain (seq and prev)."""

    event: str
    fields: dict[str, object]
    id: str
    time: str

    def record(self, seq: int, prev: str) -> dict[str, object]:
        return {
            **self.fields,
            "event": self.event,
            "seq": seq,
            "id": self.id,
            "time": self.time,
            "prev": prev,
        }


class AuditLog:
    """Single writer of one audit log file (an exclusive flock keeps a second agent out)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()  # the chain: order of writes, seq, prev, the fd
        self._failed: OSError | None = None
        # Records queued by append_later, and the writer thread that writes them.
        self._queue_cond = threading.Condition()
        self._queue: deque[tuple[_Pending, Future[AuditRecord] | None]] = deque()
        self._queued = 0
        self._done = 0
        self._closing = False
        self._flush_wanted = False
        self._writer: threading.Thread | None = None
        self._fd = -1
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                # Two writers would fork the chain (duplicate seq): refuse the second.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AuditLogError(f"{self.path} is open in another process") from None
            _fsync_dir(self.path.parent)
            self._fd = fd
            size = os.fstat(fd).st_size
            torn_from, self._seq, self._prev = self._find_tail(size)
            torn_file = self._quarantine(torn_from, size) if torn_from < size else None
        except BaseException:
            os.close(fd)
            raise
        if torn_file is not None:
            try:
                self.append("log_recovered", torn_bytes=size - torn_from, torn_file=torn_file)
            except BaseException:
                self.close()
                raise

    def _find_tail(self, size: int) -> tuple[int, int, str]:
        """(offset where torn bytes start, last seq, last line hash)."""
        if size == 0:
            return 0, 0, ZERO_HASH
        last_nl = _rfind_newline(self._fd, size)
        torn_from = size if last_nl == size - 1 else last_nl + 1  # no final newline: torn
        start, seq, digest = _record_ending_at(self._fd, torn_from)
        if seq is None and torn_from == size:
            # A newline-terminated but invalid last line (e.g. zero-filled blocks after a
            # power cut): also the torn write, if the line before it is sound.
            torn_from = start
            start, seq, digest = _record_ending_at(self._fd, torn_from)
        if seq is None:
            raise AuditLogCorrupt(
                f"{self.path}: line at byte {start} is not a valid record and is not a crash "
                "tail; run `card-agent audit verify` and move the log aside"
            )
        return torn_from, seq, digest

    def _quarantine(self, torn_from: int, size: int) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        for n in itertools.count():
            name = f"{self.path.name}.torn-{stamp}" + (f".{n}" if n else "")
            try:
                qfd = os.open(
                    self.path.parent / name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                    0o600,
                )
            except FileExistsError:
                continue
            break
        try:
            pos = torn_from
            while pos < size:
                chunk = _pread_exact(self._fd, min(_BLOCK, size - pos), pos)
                _write_all(qfd, chunk)
                pos += len(chunk)
            os.fsync(qfd)
        finally:
            os.close(qfd)
        # Copy durable before cutting: a crash in between only repeats the recovery.
        _fsync_dir(self.path.parent)
        os.ftruncate(self._fd, torn_from)
        os.fsync(self._fd)
        return name

    def append(self, event: str, **fields: object) -> AuditRecord:
        """Write one record and fsync it before returning (blocks: call it off the loop)."""
        pending = self._prepare(event, fields)
        with self._lock:
            return self._write([pending])[0]

    def submit(self, event: str, **fields: object) -> Future[AuditRecord]:
        """Queue a record for the writer thread; the future completes once it is written
        and fsynced (group commit: the writer writes and fsyncs what queued up meanwhile
        at once). Never blocks: the event loop awaits it with `asyncio.wrap_future`, no
        worker thread involved. Bad fields raise here, as with `append`."""
        pending = self._prepare(event, fields)
        future: Future[AuditRecord] = Future()
        self._enqueue(pending, future)
        return future

    def append_later(self, event: str, **fields: object) -> str:
        """`submit` without waiting: the record's id at once; the writer writes it within
        `LAZY_WINDOW_S` (sooner with a record someone waits for). A crash can lose a
        record not yet written: use it only for records whose loss `audit verify` can
        report (the outcome of a request whose own record was written durably first)."""
        pending = self._prepare(event, fields)
        self._enqueue(pending, None)
        return pending.id

    def _enqueue(self, pending: _Pending, future: Future[AuditRecord] | None) -> None:
        with self._queue_cond:
            if self._fd < 0 or self._closing:
                raise ValueError("audit log is closed")
            self._queue.append((pending, future))
            self._queued += 1
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._writer_main, name="audit-writer", daemon=True
                )
                self._writer.start()
            self._queue_cond.notify_all()

    def _urgent(self) -> bool:
        """Someone waits: a caller of `submit`, or of `flush`. Under _queue_cond."""
        return self._flush_wanted or any(future is not None for _, future in self._queue)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is written and fsynced; False on timeout."""
        with self._queue_cond:
            self._flush_wanted = True
            self._queue_cond.notify_all()
            target = self._queued
            return self._queue_cond.wait_for(lambda: self._done >= target, timeout)

    @property
    def anchor(self) -> tuple[int, str]:
        """(seq, SHA-256 of the line) of the newest record: kept elsewhere (telemetry, an
        operator's note), it lets `audit verify --anchor` detect an edited or cut-off tail."""
        with self._lock:
            return self._seq, self._prev

    def _prepare(self, event: str, fields: Mapping[str, object]) -> _Pending:
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")
        _check_keys(fields, top=True)
        pending = _Pending(event, dict(fields), "a-" + secrets.token_hex(6), _now_rfc3339())
        # Encode once now, so that an unencodable or oversized record fails its caller
        # and never the writer thread.
        if len(_encode(pending.record(1 << 62, ZERO_HASH))) > MAX_LINE_BYTES:
            raise ValueError("audit record too large")
        return pending

    def _write(self, batch: list[_Pending]) -> list[AuditRecord]:
        """Write `batch` as consecutive records with one write and one fsync. Under _lock."""
        if self._fd < 0:
            raise ValueError("audit log is closed")
        if self._failed is not None:
            # Fail closed: after a failed write/fsync the file state is unknown; the next
            # start recovers it. The caller must not proceed unaudited.
            raise AuditLogError("an earlier audit write failed") from self._failed
        seq, prev = self._seq, self._prev
        lines: list[bytes] = []
        written: list[AuditRecord] = []
        for pending in batch:
            seq += 1
            line = _encode(pending.record(seq, prev))
            lines.append(line)
            written.append(
                AuditRecord(
                    seq=seq,
                    id=pending.id,
                    time=pending.time,
                    prev=prev,
                    event=pending.event,
                    fields=pending.fields,
                    line_sha256=(prev := _sha256(line)),
                )
            )
        try:
            _write_all(self._fd, b"".join(line + b"\n" for line in lines))
            os.fsync(self._fd)
        except OSError as exc:
            self._failed = exc
            raise
        self._seq, self._prev = seq, prev
        return written

    def _writer_main(self) -> None:
        while True:
            with self._queue_cond:
                self._queue_cond.wait_for(lambda: bool(self._queue) or self._closing)
                if not self._queue:
                    return
                if not self._closing and not self._urgent():
                    # Only records nobody waits for (outcomes queued as an answer goes
                    # out): gather for a moment rather than take the GIL from that answer.
                    self._queue_cond.wait_for(
                        lambda: self._closing or self._urgent(), timeout=LAZY_WINDOW_S
                    )
                batch = list(self._queue)
                self._queue.clear()
                self._flush_wanted = False
            try:
                with self._lock:
                    records = self._write([pending for pending, _ in batch])
            except Exception as exc:
                # Later appends fail closed (self._failed); the records of this batch
                # are lost: their futures say so, and requests they complete show as
                # without outcome in `audit verify`.
                log.error("audit log: %d queued record(s) not written: %s", len(batch), exc)
                for _, future in batch:
                    if future is not None:
                        future.set_exception(exc)
            else:
                for (_, future), record in zip(batch, records, strict=True):
                    if future is not None:
                        future.set_result(record)
            with self._queue_cond:
                self._done += len(batch)
                self._queue_cond.notify_all()

    def close(self) -> None:
        with self._queue_cond:
            self._closing = True
            self._queue_cond.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(10)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)  # also releases the flock
                self._fd = -1

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iter_lines(f: BinaryIO) -> Iterator[tuple[bytes | None, bool]]:
    """(line without newline, or None if longer than MAX_LINE_BYTES; had a newline)."""
    limit = MAX_LINE_BYTES + 1
    while chunk := f.readline(limit):
        if chunk.endswith(b"\n"):
            yield chunk[:-1], True
        elif len(chunk) < limit:
            yield chunk, False  # end of file without a newline
        else:
            complete = False
            while rest := f.readline(_BLOCK):
                if rest.endswith(b"\n"):
                    complete = True
                    break
            yield None, complete


REQUEST_EVENT = "sign_request"  # written (fsynced) while the card signs
OUTCOME_EVENT = "sign"  # names its request in `request`
MAX_REPORTED_REQUESTS = 20
_MAX_OPEN_REQUESTS = 100_000  # memory bound against a hostile log


class _Requests:
    """Signature requests seen, less those whose outcome record followed."""

    def __init__(self) -> None:
        self.open: dict[str, None] = {}
        self.overflow = 0

    def see(self, rec: Mapping[str, Any]) -> None:
        event = rec.get("event")
        if event == REQUEST_EVENT:
            if len(self.open) < _MAX_OPEN_REQUESTS:
                self.open[str(rec["id"])] = None
            else:
                self.overflow += 1
        elif event == OUTCOME_EVENT and isinstance(rec.get("request"), str):
            self.open.pop(rec["request"], None)


def verify_audit_log(path: Path, anchor: tuple[int, str] | None = None) -> AuditVerifyResult:
    """Check JSON, seq continuity and the hash chain of every line; streams.

    A broken link between lines j-1 and j is ambiguous on its own; line j+1 settles it:
    if j+1 still chains to j, record j-1 was altered, otherwise record j was. The newest
    record has no successor: only an `anchor` (seq, line SHA-256) kept elsewhere shows
    that it was edited, or that records after it were cut off.
    """
    expected_seq, prev_hash = 1, ZERO_HASH
    bad: tuple[int, str] | None = None
    suspect = 0  # line whose prev did not match, awaiting the next line
    lineno, last_complete, last_valid = 0, True, True
    requests = _Requests()
    anchor_seen: str | None = None
    with open(path, "rb") as f:
        for line, complete in _iter_lines(f):
            lineno += 1
            rec = _parse(line) if line is not None else None
            last_complete = complete
            last_valid = rec is not None and _shape_error(rec) is None
            if bad is not None:
                continue  # keep reading only to learn what the tail looks like
            if suspect:
                if suspect > 1 and rec is not None and rec.get("prev") == prev_hash:
                    bad = (suspect - 1, "prev hash mismatch: record altered after the next")
                else:
                    bad = (suspect, "prev hash mismatch")
                continue
            if line is None:
                bad = (lineno, "line too long")
            elif rec is None:
                bad = (lineno, "not JSON")
            elif (err := _shape_error(rec)) is not None:
                bad = (lineno, err)
            elif rec["seq"] != expected_seq:
                bad = (lineno, f"seq gap: expected {expected_seq}, got {rec['seq']}")
            else:
                if rec["prev"] != prev_hash:
                    suspect = lineno
                expected_seq += 1
                prev_hash = _sha256(line)
                requests.see(rec)
                if anchor is not None and rec["seq"] == anchor[0]:
                    anchor_seen = prev_hash
    if suspect and bad is None:
        bad = (suspect, "prev hash mismatch")
    torn = lineno > 0 and (not last_complete or not last_valid)
    if torn and (bad is None or bad[0] == lineno):
        what = "has no newline" if not last_complete else "is not a valid record"
        bad = (
            lineno,
            f"unrecovered crash tail: last line {what} (the agent moves it aside "
            "and logs log_recovered on its next start)",
        )
    open_ids = tuple(requests.open)
    common: dict[str, Any] = {
        "requests_without_outcome": len(open_ids) + requests.overflow,
        "request_ids_without_outcome": open_ids[:MAX_REPORTED_REQUESTS],
    }
    if anchor is not None:
        if anchor_seen is None:
            common["anchor_ok"] = False
            common["anchor_reason"] = (
                f"record {anchor[0]} is missing: records were cut off (or the anchor is "
                "from another log)"
            )
        elif anchor_seen != anchor[1]:
            common["anchor_ok"] = False
            common["anchor_reason"] = f"record {anchor[0]} differs from the anchor: altered"
        else:
            common["anchor_ok"] = True
    if bad is None:
        return AuditVerifyResult(
            anchor is None or common["anchor_ok"] is True,
            lineno,
            None,
            None,
            False,
            last_seq=expected_seq - 1,
            last_sha256=prev_hash,
            **common,
        )
    # No anchor to offer for a log that does not verify.
    return AuditVerifyResult(False, bad[0] - 1, bad[0], bad[1], torn, **common)

"""Pairing of clients (browser extension, local tools) and their bearer tokens.

Flow: a client calls ``request`` and shows the returned 8-digit code; the kiosk operator
types it into ``card-agent pair approve CODE`` (a separate process); the client polls
``claim`` and receives its token exactly once; later requests are checked by
``authenticate``.

Why this shape:
- The store is one JSON file shared by the agent and the CLI. Every change is a
  read-modify-write under an exclusive flock on a sidecar ``.lock`` file (the data file is
  replaced by rename, so a lock on it would lock a stale inode), written to a temp file,
  fsynced and renamed: readers never lock and always see a whole file.
- The agent keeps a parsed copy and re-reads when os.stat (inode, size, mtime, ctime)
  changes, so a revoke from the CLI applies on the next request without a restart.
- Only SHA-256(token) is stored; the token is minted by ``claim`` and exists only in that
  response. Tokens are bound to the origin that paired (None: a local tool sending no
  Origin) and are refused from any other origin.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agent.text import is_text

__all__ = ["PairedClient", "PairingError", "PairingRequest", "PairingStore"]

_T = TypeVar("_T")
_VERSION = 1
_NAME_MAX = 64
_ORIGIN_MAX = 256
_TOKEN_MAX = 256
_TOUCH_INTERVAL_S = 60.0  # last_used_at granularity: bounds writes to one a minute per client
_LOCK_TIMEOUT_S = 5.0
# A write landing in the same timestamp tick as our read can leave inode/size/mtime/ctime
# unchanged (coarse kernel clock, inode reuse). Until the file is older than this, re-read
# on every call instead of trusting the stat ("racy git" problem).
_RACY_NS = 2_000_000_000
_CODE_RE = re.compile(r"[0-9]{8}")


class PairingError(Exception):
    """``code`` is stable and safe to return to clients."""

    def __init__(self, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.code = code


@dataclass(frozen=True, slots=True)
class PairingRequest:
    # The requesting client's claim handle, a bearer secret until claimed: only the
    # requester gets it; operator-facing results (approve, pending) carry "".
    request_id: str
    code: str  # "1234-5678"
    client_name: str
    origin: str | None
    created_at: float
    expires_at: float
    approved: bool


@dataclass(frozen=True, slots=True)
class PairedClient:
    client_id: str
    client_name: str
    origin: str | None
    created_at: float
    last_used_at: float


@dataclass(slots=True)
class _Pending:
    request_id: str
    code: str  # 8 digits, no dash
    client_name: str
    origin: str | None
    created_at: float
    expires_at: float
    approved_at: float | None = None

    def public(self, *, for_operator: bool = False) -> PairingRequest:
        return PairingRequest(
            request_id="" if for_operator else self.request_id,
            code=f"{self.code[:4]}-{self.code[4:]}",
            client_name=self.client_name,
            origin=self.origin,
            created_at=self.created_at,
            expires_at=self.expires_at,
            approved=self.approved_at is not None,
        )


@dataclass(slots=True)
class _Client:
    client_id: str
    token_sha256: str
    client_name: str
    origin: str | None
    created_at: float
    last_used_at: float

    def public(self) -> PairedClient:
        return PairedClient(
            self.client_id, self.client_name, self.origin, self.created_at, self.last_used_at
        )


@dataclass(slots=True)
class _State:
    pending: list[_Pending] = field(default_factory=list)
    clients: list[_Client] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "pending": [asdict(p) for p in self.pending],
            "clients": [asdict(c) for c in self.clients],
        }

    @classmethod
    def from_json(cls, obj: Any) -> _State:
        if not isinstance(obj, dict) or obj.get("version") != _VERSION:
            raise ValueError("unknown pairing store format")
        pending = [
            _Pending(
                request_id=_str(p, "request_id"),
                code=_str(p, "code"),
                client_name=_str(p, "client_name"),
                origin=_opt_str(p, "origin"),
                created_at=_num(p, "created_at"),
                expires_at=_num(p, "expires_at"),
                approved_at=None if p.get("approved_at") is None else _num(p, "approved_at"),
            )
            for p in _list(obj, "pending")
        ]
        clients = [
            _Client(
                client_id=_str(c, "client_id"),
                token_sha256=_str(c, "token_sha256"),
                client_name=_str(c, "client_name"),
                origin=_opt_str(c, "origin"),
                created_at=_num(c, "created_at"),
                last_used_at=_num(c, "last_used_at"),
            )
            for c in _list(obj, "clients")
        ]
        return cls(pending, clients)


def _list(obj: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = obj.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(key)
    return value


def _str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(key)
    return value


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    return None if obj.get(key) is None else _str(obj, key)


def _num(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(key)
    return float(value)


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _clean_name(name: object) -> str:
    if not isinstance(name, str):
        raise PairingError("invalid_client_name")
    # Control, format (bidi overrides) and separator characters become spaces: the operator
    # must see the name as it will be stored, on one line.
    text = "".join(ch if ch.isprintable() else " " for ch in name[: _NAME_MAX * 4])
    text = " ".join(text.split())[:_NAME_MAX].strip()
    if not text:
        raise PairingError("invalid_client_name")
    return text


def _check_origin(origin: object) -> str | None:
    if origin is None:
        return None
    if (
        not isinstance(origin, str)
        or not 0 < len(origin) <= _ORIGIN_MAX
        or not origin.isascii()
        or not origin.isprintable()
        or " " in origin
    ):
        raise PairingError("invalid_origin")
    return origin


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class PairingStore:
    def __init__(
        self,
        path: Path,
        *,
        code_ttl_s: float = 300,
        max_pending: int = 64,
        max_pending_per_origin: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._ttl = float(code_ttl_s)
        self._max_pending = max_pending
        self._max_per_origin = max_pending_per_origin
        self._clock = clock
        self._state = _State()
        self._by_hash: dict[str, _Client] = {}
        self._key: tuple[int, int, int, int, int] | None = None
        self._racy = True  # nothing loaded yet

    # -- file handling ---------------------------------------------------------------

    def _read(self) -> tuple[_State, os.stat_result | None]:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed below, fstat needs the handle
        except FileNotFoundError:
            return _State(), None
        with f:
            st = os.fstat(f.fileno())  # the stat of exactly the bytes we read
            raw = f.read()
        try:
            return _State.from_json(json.loads(raw)), st
        except ValueError as exc:
            raise PairingError("store_corrupt", f"{self.path}: {exc}") from None

    def _remember(self, state: _State, st: os.stat_result | None) -> None:
        self._state = state
        self._by_hash = {c.token_sha256: c for c in state.clients}
        self._key = None if st is None else _stat_key(st)
        self._racy = st is not None and time.time_ns() - st.st_mtime_ns < _RACY_NS

    def _refresh(self) -> _State:
        """The current state; one os.stat when nothing changed."""
        try:
            key: tuple[int, int, int, int, int] | None = _stat_key(os.stat(self.path))
        except FileNotFoundError:
            key = None
        if self._racy or key != self._key:
            self._remember(*self._read())
        return self._state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            self._match_owner(fd)
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    # Holders only do a small read-modify-write; a long wait means a stuck
                    # process, and the caller should get an answer rather than hang.
                    if time.monotonic() > deadline:
                        raise PairingError("store_busy") from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _match_owner(self, fd: int) -> None:
        # The operator may run the CLI as root: files it creates must stay readable by the
        # service user, who owns the state directory. (Unprivileged: nothing to do.)
        if os.geteuid() == 0:
            st = os.stat(self.path.parent)
            os.fchown(fd, st.st_uid, st.st_gid)

    def _write(self, state: _State) -> None:
        data = json.dumps(state.to_json(), indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                self._match_owner(f.fileno())
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)  # make the rename durable
        finally:
            os.close(dfd)
        # Still under the flock, so no other writer can have replaced it since.
        self._remember(state, os.stat(self.path))

    def _mutate(self, change: Callable[[_State, float], _T]) -> _T:
        """Read-modify-write under the lock, always from a fresh read (never the cache)."""
        with self._locked():
            state, st = self._read()
            before = state.to_json()
            now = self._clock()
            # Expired requests stay one more TTL so a late poller hears "expired".
            state.pending = [p for p in state.pending if now < p.expires_at + self._ttl]
            result = change(state, now)
            if state.to_json() != before:
                self._write(state)
            else:
                self._remember(state, st)
            return result

    # -- pairing ---------------------------------------------------------------------

    def request(self, origin: str | None, client_name: str) -> PairingRequest:
        name, origin = _clean_name(client_name), _check_origin(origin)

        def change(state: _State, now: float) -> PairingRequest:
            live = [p for p in state.pending if now < p.expires_at]
            # Requests wait per origin ("" for local tools without one): over the limit
            # the origin's longest-waiting request yields. A flood from one origin (a
            # local process needs none, and can forge any) never locks out another, nor
            # its own origin for the code's lifetime.
            same = sorted((p for p in live if p.origin == origin), key=lambda p: p.created_at)
            for stale in same[: max(0, len(same) - self._max_per_origin + 1)]:
                state.pending.remove(stale)
                live.remove(stale)
            if len(live) >= self._max_pending:
                raise PairingError("too_many_pending")
            used = {p.code for p in state.pending}
            code = f"{secrets.randbelow(10**8):08d}"
            while code in used:
                code = f"{secrets.randbelow(10**8):08d}"
            entry = _Pending(
                request_id=secrets.token_urlsafe(16),
                code=code,
                client_name=name,
                origin=origin,
                created_at=now,
                expires_at=now + self._ttl,
            )
            state.pending.append(entry)
            return entry.public()

        return self._mutate(change)

    def approve(self, code: str) -> PairingRequest:
        """Operator approval; "1234-5678", "12345678" and "1234 5678" are all accepted."""
        digits = re.sub(r"[\s-]", "", code) if isinstance(code, str) else ""
        if not _CODE_RE.fullmatch(digits):
            raise PairingError("unknown_code")

        def change(state: _State, now: float) -> PairingRequest:
            for p in state.pending:
                if hmac.compare_digest(p.code, digits) and now < p.expires_at:
                    if p.approved_at is None:
                        p.approved_at = now
                    return p.public(for_operator=True)
            raise PairingError("unknown_code")

        return self._mutate(change)

    def _claimable(self, state: _State, request_id: str, origin: str | None) -> _Pending:
        found = None
        for p in state.pending:  # at most a few entries; compare all without early exit
            if hmac.compare_digest(p.request_id.encode(), request_id.encode()):
                found = p
        if found is None:
            raise PairingError("unknown_request")
        if found.origin != origin:
            raise PairingError("origin_mismatch")
        if self._clock() >= found.expires_at:
            raise PairingError("expired")
        return found

    def claim(self, request_id: str, origin: str | None) -> str | None:
        """The token once approved (exactly once), None while pending."""
        if not isinstance(request_id, str) or len(request_id) > _TOKEN_MAX:
            raise PairingError("unknown_request")
        if not is_text(request_id):
            raise PairingError("unknown_request")
        # Polls are frequent: answer "still pending" from the cache without the lock.
        if self._claimable(self._refresh(), request_id, origin).approved_at is None:
            return None

        def change(state: _State, now: float) -> str | None:
            entry = self._claimable(state, request_id, origin)  # re-check: claims may race
            if entry.approved_at is None:
                return None
            token = secrets.token_urlsafe(32)
            state.pending.remove(entry)
            state.clients.append(
                _Client(
                    client_id="c-" + secrets.token_hex(6),
                    token_sha256=_hash_token(token),
                    client_name=entry.client_name,
                    origin=entry.origin,
                    created_at=now,
                    last_used_at=now,
                )
            )
            return token

        return self._mutate(change)

    def pending(self) -> list[PairingRequest]:
        now = self._clock()
        live = [p for p in self._refresh().pending if now < p.expires_at]
        return [p.public(for_operator=True) for p in sorted(live, key=lambda p: p.created_at)]

    # -- tokens ----------------------------------------------------------------------

    def lookup(self, token: str, origin: str | None) -> tuple[PairedClient | None, bool]:
        """``authenticate`` without its write: (the client or None, last_used_at is due).

        Never blocks on the store's lock or the disk beyond one os.stat (and a re-read
        when the file changed), so the event loop may call it; when the bool is True,
        call ``authenticate`` (which writes, fsync included) from a worker thread.
        """
        client = self._check(token, origin)
        if client is None:
            return None, False
        return client.public(), self._clock() - client.last_used_at >= _TOUCH_INTERVAL_S

    def _check(self, token: str, origin: str | None) -> _Client | None:
        if not isinstance(token, str) or not token or len(token) > _TOKEN_MAX:
            return None
        if not is_text(token):
            return None  # a lone surrogate cannot be a token (nor be hashed)
        digest = _hash_token(token)
        self._refresh()
        client = self._by_hash.get(digest)
        if client is None or not hmac.compare_digest(client.token_sha256, digest):
            return None
        if client.origin != origin:
            return None
        return client

    def authenticate(self, token: str, origin: str | None) -> PairedClient | None:
        client = self._check(token, origin)
        if client is None:
            return None
        now = self._clock()
        if now - client.last_used_at < _TOUCH_INTERVAL_S:
            return client.public()

        def touch(state: _State, now: float) -> _Client | None:
            for c in state.clients:
                if c.client_id == client.client_id:
                    c.last_used_at = now
                    return c
            return None  # revoked since our read

        try:
            touched = self._mutate(touch)
        except (OSError, PairingError):
            # last_used_at is bookkeeping: a full disk or a busy store must not lock
            # clients out. The token itself was verified above.
            return client.public()
        return None if touched is None else touched.public()

    def list_clients(self) -> list[PairedClient]:
        return [c.public() for c in self._refresh().clients]

    def revoke(self, client_id: str) -> bool:
        def change(state: _State, now: float) -> bool:
            kept = [c for c in state.clients if c.client_id != client_id]
            removed = len(kept) != len(state.clients)
            state.clients = kept
            return removed

        return self._mutate(change)

"""Pairing store: flow, origin binding, cross-process revoke/approve, expiry, file hygiene."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent import pairing
from agent.pairing import PairingError, PairingStore

REPO = Path(__file__).resolve().parents[2]
EXT = "chrome-extension://abcdefghijklmnop"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "pairing.json"


def _pair(agent: PairingStore, operator: PairingStore, origin: str | None = EXT) -> tuple[str, str]:
    req = agent.request(origin, "Kiosk extension")
    operator.approve(req.code)
    token = agent.claim(req.request_id, origin)
    assert token is not None
    clients = [c for c in agent.list_clients() if c.origin == origin]
    return token, clients[-1].client_id


def _errcode(exc: pytest.ExceptionInfo[PairingError]) -> str:
    return exc.value.code


def test_full_flow(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    req = store.request(EXT, "Kiosk extension")
    assert re.fullmatch(r"\d{4}-\d{4}", req.code)
    assert not req.approved
    assert req.expires_at == clock.now + 300
    assert store.claim(req.request_id, EXT) is None  # pending

    [shown] = store.pending()
    assert (shown.code, shown.client_name, shown.origin) == (req.code, "Kiosk extension", EXT)

    assert store.approve(req.code).approved
    token = store.claim(req.request_id, EXT)
    assert token is not None
    assert len(token) >= 43
    with pytest.raises(PairingError) as exc:  # exactly once
        store.claim(req.request_id, EXT)
    assert _errcode(exc) == "unknown_request"

    client = store.authenticate(token, EXT)
    assert client is not None
    assert client.client_name == "Kiosk extension"
    assert store.list_clients() == [client]
    assert store.pending() == []
    assert store.authenticate(token + "x", EXT) is None
    assert store.authenticate("", EXT) is None


@pytest.mark.parametrize("form", ["{a}-{b}", "{a}{b}", " {a} {b} "])
def test_approve_code_forms(path: Path, form: str) -> None:
    store = PairingStore(path)
    req = store.request(EXT, "x")
    a, b = req.code.split("-")
    assert store.approve(form.format(a=a, b=b)).code == req.code


@pytest.mark.parametrize("code", ["0000-0000", "123", "abcd-efgh", "١٢٣٤٥٦٧٨"])
def test_unknown_code(path: Path, code: str) -> None:
    store = PairingStore(path)
    store.request(EXT, "x")
    with pytest.raises(PairingError) as exc:
        store.approve(code)
    assert _errcode(exc) == "unknown_code"


def test_token_bound_to_origin(path: Path) -> None:
    store = PairingStore(path)
    token, _ = _pair(store, store)
    assert store.authenticate(token, EXT) is not None
    assert store.authenticate(token, "https://evil.example") is None
    assert store.authenticate(token, None) is None
    assert store.authenticate(token, EXT + "/") is None

    local, _ = _pair(store, store, origin=None)  # a local tool: no Origin at all
    assert store.authenticate(local, None) is not None
    assert store.authenticate(local, EXT) is None


def test_claim_from_other_origin_refused(path: Path) -> None:
    store = PairingStore(path)
    req = store.request(EXT, "x")
    store.approve(req.code)
    with pytest.raises(PairingError) as exc:
        store.claim(req.request_id, "https://evil.example")
    assert _errcode(exc) == "origin_mismatch"
    assert store.claim(req.request_id, EXT) is not None  # the rightful client still can


def test_expired_code_refused(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    req = store.request(EXT, "x")
    clock.now += 301
    with pytest.raises(PairingError) as exc:
        store.approve(req.code)
    assert _errcode(exc) == "unknown_code"
    with pytest.raises(PairingError) as exc:
        store.claim(req.request_id, EXT)
    assert _errcode(exc) == "expired"
    assert store.pending() == []


def test_approved_but_unclaimed_expires(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    req = store.request(EXT, "x")
    store.approve(req.code)
    clock.now += 301
    with pytest.raises(PairingError) as exc:
        store.claim(req.request_id, EXT)
    assert _errcode(exc) == "expired"
    assert store.list_clients() == []


def test_max_pending(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock, max_pending=3, max_pending_per_origin=3)
    store.request(EXT, "c0")
    store.request(None, "c1")
    store.request("chrome-extension://" + "b" * 32, "c2")
    with pytest.raises(PairingError) as exc:
        store.request("chrome-extension://" + "c" * 32, "one too many")
    assert _errcode(exc) == "too_many_pending"
    clock.now += 301  # the old ones expire and stop counting
    store.request(EXT, "again")
    assert len(store.pending()) == 1


def test_per_origin_pending_yield_to_the_newest(path: Path, clock: FakeClock) -> None:
    """A flood from one origin (or from local tools, which send none) only ever replaces
    its own oldest requests: the others still get codes."""
    store = PairingStore(path, clock=clock, max_pending_per_origin=3)
    mine = store.request(EXT, "extension")
    flood = [store.request(None, f"flood {i}") for i in range(10)]
    pending = store.pending()
    assert sorted(p.client_name for p in pending) == [
        "extension",
        "flood 7",
        "flood 8",
        "flood 9",
    ]
    with pytest.raises(PairingError) as exc:
        store.claim(flood[0].request_id, None)  # yielded to a newer one
    assert _errcode(exc) == "unknown_request"
    assert store.claim(mine.request_id, EXT) is None  # still pending, not crowded out


def test_client_name_sanitised(path: Path) -> None:
    store = PairingStore(path)
    req = store.request(EXT, "\x1b[31mEvil\u202eName\n\t" + "x" * 200)
    assert req.client_name.isprintable()
    assert len(req.client_name) <= 64
    assert req.client_name.startswith("[31mEvil Name x")
    for bad in ["", " \n\t ", "\u202e"]:
        with pytest.raises(PairingError) as exc:
            store.request(EXT, bad)
        assert _errcode(exc) == "invalid_client_name"
    with pytest.raises(PairingError) as exc:
        store.request("https://a.example\r\nX: y", "x")
    assert _errcode(exc) == "invalid_origin"


def test_revoke_seen_by_other_instance_without_restart(path: Path, clock: FakeClock) -> None:
    agent = PairingStore(path, clock=clock)
    cli = PairingStore(path, clock=clock)  # the `card-agent pair` process
    token, client_id = _pair(agent, cli)
    assert agent.authenticate(token, EXT) is not None
    assert [c.client_id for c in cli.list_clients()] == [client_id]
    assert cli.revoke(client_id) is True
    assert agent.authenticate(token, EXT) is None
    assert cli.revoke(client_id) is False
    assert agent.list_clients() == []


def test_recent_write_reread_even_if_stat_looks_unchanged(
    path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Within one coarse timestamp tick (and with inode reuse) a rewrite can leave the stat
    # identical; a file written in the last seconds is therefore re-read every time.
    monkeypatch.setattr(pairing, "_stat_key", lambda st: (0, 0, 0, 0, 0))
    agent = PairingStore(path, clock=clock)
    token, client_id = _pair(agent, agent)
    assert agent.authenticate(token, EXT) is not None
    PairingStore(path, clock=clock).revoke(client_id)
    assert agent.authenticate(token, EXT) is None


def test_token_never_written_to_disk(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    token, _ = _pair(store, store)
    clock.now += 120
    assert store.authenticate(token, EXT) is not None  # forces a last_used_at write
    everything = b"".join(p.read_bytes() for p in path.parent.rglob("*") if p.is_file())
    assert token.encode() not in everything
    stored = json.loads(path.read_bytes())
    assert stored["clients"][0]["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()


def test_file_modes(path: Path) -> None:
    old = os.umask(0o022)
    try:
        PairingStore(path).request(EXT, "x")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.with_name("pairing.json.lock").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["pairing.json", "pairing.json.lock"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to own files as another user")
def test_files_created_by_root_belong_to_state_dir_owner(path: Path) -> None:
    os.chown(path.parent, 65534, 65534)  # the service user owns the state directory
    PairingStore(path).request(EXT, "x")
    for name in ("pairing.json", "pairing.json.lock"):
        st = path.with_name(name).stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_operator_views_do_not_carry_the_claim_handle(path: Path) -> None:
    store = PairingStore(path)
    req = store.request(EXT, "x")
    assert req.request_id
    assert store.approve(req.code).request_id == ""
    assert [p.request_id for p in store.pending()] == [""]


def test_last_used_written_at_most_once_a_minute(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    token, _ = _pair(store, store)
    created = store.list_clients()[0].last_used_at
    snapshot = path.read_bytes()
    clock.now += 30
    client = store.authenticate(token, EXT)
    assert client is not None
    assert client.last_used_at == created
    assert path.read_bytes() == snapshot  # no write
    clock.now += 31
    client = store.authenticate(token, EXT)
    assert client is not None
    assert client.last_used_at == clock.now
    assert PairingStore(path).list_clients()[0].last_used_at == clock.now


def test_claim_race_between_instances_mints_once(path: Path) -> None:
    a, b = PairingStore(path), PairingStore(path)
    req = a.request(EXT, "x")
    b.approve(req.code)
    assert a.claim(req.request_id, EXT) is not None
    with pytest.raises(PairingError) as exc:
        b.claim(req.request_id, EXT)
    assert _errcode(exc) == "unknown_request"
    assert len(a.list_clients()) == 1


def test_corrupt_store_refused(path: Path) -> None:
    path.write_text("{not json")
    store = PairingStore(path)
    with pytest.raises(PairingError) as exc:
        store.authenticate("x" * 43, EXT)
    assert _errcode(exc) == "store_corrupt"
    with pytest.raises(PairingError):
        store.request(EXT, "x")
    assert path.read_text() == "{not json"  # never overwritten


_APPROVER = """
import sys, time
from pathlib import Path
from agent.pairing import PairingStore
path, ready, go = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
store = PairingStore(path)
ready.touch()
while not go.exists():
    time.sleep(0.001)
for code in sys.argv[4:]:
    store.approve(code)
"""


def test_concurrent_approve_from_two_processes(path: Path) -> None:
    store = PairingStore(path, max_pending=40, max_pending_per_origin=40)
    codes = [store.request(EXT, f"client {i}").code for i in range(40)]
    go = path.with_name("go")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ready = [path.with_name(f"ready{i}") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPROVER, str(path), str(r), str(go), *half], env=env
        )
        for r, half in zip(ready, (codes[0::2], codes[1::2]), strict=True)
    ]
    # Release both at once when both are up, so their read-modify-writes overlap.
    deadline = time.monotonic() + 10
    while not all(r.exists() for r in ready):
        assert all(p.poll() is None for p in procs)
        assert time.monotonic() < deadline
        time.sleep(0.001)
    go.touch()
    assert [p.wait(timeout=20) for p in procs] == [0, 0]
    json.loads(path.read_bytes())  # still one whole JSON document
    pending = PairingStore(path).pending()
    assert len(pending) == 40
    assert all(p.approved for p in pending)  # no approval lost to a concurrent write


def test_lookup_never_writes_and_says_when_a_touch_is_due(path: Path, clock: FakeClock) -> None:
    store = PairingStore(path, clock=clock)
    token, client_id = _pair(store, store)
    snapshot = path.read_bytes()
    client, due = store.lookup(token, EXT)
    assert client is not None
    assert client.client_id == client_id
    assert due is False
    clock.now += 61
    client, due = store.lookup(token, EXT)
    assert client is not None
    assert due is True
    assert path.read_bytes() == snapshot  # lookup itself never writes (the loop calls it)
    assert store.lookup(token, "https://evil.example") == (None, False)
    assert store.lookup("not-a-token", EXT) == (None, False)
    store.revoke(client_id)
    assert store.lookup(token, EXT) == (None, False)

"""PC/SC tier: a private pcscd with two vpcd readers, and virtual cards to plug in.

Isolation. pcsc-lite's client library takes its socket path from the environment
variable PCSCLITE_CSOCK_NAME, but the Debian pcscd (1.9.9) ignores it and always
listens on /run/pcscd/pcscd.comm (checked: the daemon binary does not even contain
the name). So pcscd runs in its own mount namespace (`unshare`) with a per-session
directory bind-mounted over /run/pcscd; this process points PCSCLITE_CSOCK_NAME at
that directory. vpcd's ports come from a per-session reader.conf (`pcscd -c`), so
neither a system pcscd nor a concurrent run (another checkout, xdist worker) clashes
with ours. Without mount namespaces (non-root and no user namespaces) we fall back to
the default socket, but only if no other pcscd owns it.

The socket name is read once per process by libpcsclite, on the first context, so it
is set when this module is imported (by tests/conftest.py): before any test can
establish a context.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.backends.simulated import SimulatedBackend
from simulator.card_os import SimulatedCard
from simulator.knobs import CardKnobs, TimingModel
from simulator.pcscd import (
    SBIN_PATH,
    free_port_pair,
    pcscd_command,
    unshare_prefix,
    vpcd_driver,
    write_vpcd_conf,
)
from simulator.state import CardState
from simulator.vpcd import VpcdLink
from tests.skf.softskf.plugged import SkfCard

READERS = ("Virtual PCD 00 00", "Virtual PCD 00 01")
DEFAULT_SOCKET = Path("/run/pcscd/pcscd.comm")


# --- prerequisites -----------------------------------------------------------------


def _missing_prerequisites() -> list[str]:
    missing = []
    if shutil.which("pcscd", path=SBIN_PATH) is None:
        missing.append("pcscd (Debian: pcscd)")
    if vpcd_driver() is None:
        missing.append("the vpcd driver (Debian: vsmartcard-vpcd)")
    if _pyscard_missing():
        missing.append("pyscard (pip install '.[pcsc]')")
    return missing


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _skip_or_fail(reason: str) -> None:
    # Locally a missing system package skips the tier; in CI it must be loud.
    if _in_ci():
        pytest.fail(f"PC/SC tier cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"PC/SC tier skipped: {reason} (scripts/system-deps.sh installs it)")


def _pyscard_missing() -> bool:
    try:
        import smartcard.scard  # noqa: F401
    except ImportError:
        return True
    return False


# --- isolation ---------------------------------------------------------------------


def _default_socket_in_use() -> bool:
    if not DEFAULT_SOCKET.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(DEFAULT_SOCKET))
        except OSError:
            return False
    return True


@dataclass
class _Isolation:
    unshare: list[str] | None  # None: pcscd uses the default socket
    sock_dir: Path | None


def _prepare_isolation() -> _Isolation:
    if _missing_prerequisites():
        return _Isolation(None, None)
    unshare = unshare_prefix()
    if unshare is None:
        return _Isolation(None, None)
    sock_dir = Path(tempfile.mkdtemp(prefix="ca-pcscd-"))  # short: sun_path is 108 bytes
    atexit.register(shutil.rmtree, sock_dir, ignore_errors=True)
    os.environ["PCSCLITE_CSOCK_NAME"] = str(sock_dir / "pcscd.comm")
    return _Isolation(unshare, sock_dir)


_ISOLATION = _prepare_isolation()


# --- the daemon --------------------------------------------------------------------


class PcscDaemon:
    """One pcscd we started (and only ever stop ourselves, by its pid)."""

    def __init__(self, workdir: Path, isolation: _Isolation, driver: Path) -> None:
        self.base_port = free_port_pair()
        self.readers = READERS
        self._isolation = isolation
        self._conf_dir = workdir / "reader.conf.d"
        write_vpcd_conf(self._conf_dir, self.base_port, driver)
        self.log_path = workdir / "pcscd.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def isolated(self) -> bool:
        return self._isolation.unshare is not None

    def port(self, slot: int) -> int:
        return self.base_port + slot

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> None:
        assert not self.running
        cmd = pcscd_command(self._conf_dir, self._isolation.sock_dir, self._isolation.unshare)
        with self.log_path.open("ab") as log:
            # unshare and sh exec into pcscd: the pid we hold is pcscd's.
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Poll (with a deadline) until a client sees both vpcd readers."""
        from card.pcsc import PcscContext  # after PCSCLITE_CSOCK_NAME is set

        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"pcscd exited; see {self.log_path}:\n{self._log_tail()}")
            try:
                ctx = PcscContext()
            except Exception as e:
                last = str(e)
            else:
                try:
                    names = ctx.list_readers()
                    if all(r in names for r in self.readers):
                        return
                    last = f"readers {names}"
                finally:
                    ctx.release()
            time.sleep(0.02)
        raise RuntimeError(f"pcscd not ready after {timeout}s ({last}):\n{self._log_tail()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        self._signal(signal.SIGTERM, wait=5.0)

    def kill(self) -> None:
        """SIGKILL: the harsh way pcscd can vanish under a running agent."""
        self._signal(signal.SIGKILL, wait=5.0)

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """pcscd stopped (SIGSTOP) for the block: alive, holding every socket, answering
        nothing, the way a hung daemon looks to its clients. Always continued after."""
        proc = self._proc
        assert proc is not None, "pcscd was not started"
        assert proc.poll() is None, "pcscd is not running"
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals, wait: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


@pytest.fixture(scope="session")
def pcscd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PcscDaemon]:
    """The private pcscd with readers `Virtual PCD 00 00` / `00 01` up."""
    missing = _missing_prerequisites()
    if missing:
        _skip_or_fail("missing " + ", ".join(missing))
    if _ISOLATION.unshare is None and _default_socket_in_use():
        _skip_or_fail(
            "another pcscd owns /run/pcscd/pcscd.comm and pcscd cannot be isolated here "
            "(needs mount namespaces: root, or unprivileged user namespaces); "
            "stop it first: systemctl stop pcscd.socket pcscd"
        )
    driver = vpcd_driver()
    assert driver is not None
    daemon = PcscDaemon(tmp_path_factory.mktemp("pcscd"), _ISOLATION, driver)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


# --- reader state helpers ----------------------------------------------------------


class ReaderWatch:
    """Waits, event-driven and with a deadline, for pcscd's view of a reader."""

    def present(self, reader: str, timeout: float = 3.0) -> float:
        return self._wait(reader, lambda state: self._present(state), timeout)

    def empty(self, reader: str, timeout: float = 3.0) -> float:
        return self._wait(reader, lambda state: not self._present(state), timeout)

    @staticmethod
    def _present(state: int) -> bool:
        from smartcard import scard

        return bool(state & scard.SCARD_STATE_PRESENT)

    def _wait(self, reader: str, done: Callable[[int], bool], timeout: float) -> float:
        """Seconds until `done(state)` held; fails the test after `timeout`."""
        from smartcard import scard

        from card.pcsc import PcscContext

        start = time.monotonic()
        deadline = start + timeout
        state = scard.SCARD_STATE_UNAWARE
        ctx: PcscContext | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"{reader!r}: state 0x{state:X} did not change in {timeout}s")
                if ctx is None:
                    with contextlib.suppress(Exception):
                        ctx = PcscContext()
                    if ctx is None:  # pcscd (re)starting: poll again shortly
                        time.sleep(0.02)
                        continue
                hr, states = ctx.get_status_change(int(remaining * 1000), [(reader, state)])
                if hr == scard.SCARD_S_SUCCESS:
                    state = states[0][1] & ~scard.SCARD_STATE_CHANGED
                    if done(state):
                        return time.monotonic() - start
                elif hr != scard.SCARD_E_TIMEOUT:
                    ctx.release()  # e.g. pcscd restarted under us
                    ctx, state = None, scard.SCARD_STATE_UNAWARE
        finally:
            if ctx is not None:
                ctx.release()


@pytest.fixture
def watch(pcscd: PcscDaemon) -> ReaderWatch:
    return ReaderWatch()


# --- virtual cards -----------------------------------------------------------------


def make_atr(label: bytes) -> bytes:
    """A well-formed T=1 ATR with `label` as historical bytes (<= 15) and its TCK."""
    body = bytes([0x80 | len(label), 0x80, 0x01]) + label
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


ECHO_AID = bytes.fromhex("A000000003454348")


@dataclass
class EchoCard:
    """A tiny ISO card: SELECT of ECHO_AID -> 9000, other SELECT -> 6A82, GET DATA
    (INS CA) -> 4-byte APDU counter, PSO (INS 2A) -> 32 bytes, INS EE raises (for the
    6F00 test), anything else 6D00. Counts power events."""

    label: bytes = b"echo"
    processed: int = 0
    power_ons: int = 0
    power_offs: int = 0
    resets: int = 0
    _atr: bytes = field(init=False)

    def __post_init__(self) -> None:
        self._atr = make_atr(self.label)

    @property
    def atr(self) -> bytes:
        return self._atr

    def power_on(self) -> None:
        self.power_ons += 1

    def power_off(self) -> None:
        self.power_offs += 1

    def reset(self) -> None:
        self.resets += 1

    def process(self, apdu: bytes) -> bytes:
        self.processed += 1
        ins = apdu[1]
        if ins == 0xA4:
            return b"\x90\x00" if apdu[5:] == ECHO_AID else b"\x6a\x82"
        if ins == 0xCA:
            return self.processed.to_bytes(4, "big") + b"\x90\x00"
        if ins == 0x2A:
            return bytes(range(32)) + b"\x90\x00"
        if ins == 0xEE:
            raise RuntimeError("simulated card bug")
        return b"\x6d\x00"


SELECT_ECHO = bytes([0x00, 0xA4, 0x04, 0x00, len(ECHO_AID)]) + ECHO_AID
GET_COUNTER = bytes.fromhex("00CA000004")
PSO_SIGN = bytes.fromhex("002A9E9A00")


@dataclass
class Apdus:
    select: bytes = SELECT_ECHO
    counter: bytes = GET_COUNTER
    pso: bytes = PSO_SIGN
    failing: bytes = bytes.fromhex("00EE000000")


@pytest.fixture
def apdus() -> Apdus:
    return Apdus()


@pytest.fixture
def make_card() -> Callable[..., EchoCard]:
    return EchoCard


Plug = Callable[..., VpcdLink]


@pytest.fixture
def plug(pcscd: PcscDaemon, watch: ReaderWatch) -> Iterator[Plug]:
    """`plug(card, slot=0, inserted=True)` -> a started VpcdLink on that reader; with
    `inserted` it returns once pcscd sees the card. Teardown pulls every card and
    waits until pcscd sees the readers empty, so tests do not leak into each other."""
    links: list[tuple[VpcdLink, int]] = []

    def _plug(card: EchoCard, slot: int = 0, *, inserted: bool = True) -> VpcdLink:
        link = VpcdLink(card, port=pcscd.port(slot))
        links.append((link, slot))
        link.start(inserted=inserted)
        if inserted:
            watch.present(pcscd.readers[slot])
        return link

    yield _plug
    for link, _slot in links:
        link.stop()
    if pcscd.running:
        for _link, slot in links:
            watch.empty(pcscd.readers[slot])


# --- the software E-Port card in a vpcd reader, for the agent tiers -------------


@dataclass
class PcscCard:
    """A software card behind vpcd, in one of the private pcscd's readers."""

    card: SimulatedCard
    link: VpcdLink
    reader: str
    port: int


# The backends the agent and compat tiers run on: the software card in process, behind
# pcscd + vpcd, and behind the SKF driver in softskf (tests/skf/softskf/plugged.py).
BACKENDS = [
    "simulated",
    pytest.param("pcsc", marks=pytest.mark.pcsc),
    pytest.param("skf", marks=pytest.mark.skf),
]
_readers_in_use: set[int] = set()


@contextlib.contextmanager
def plugged_card(request: pytest.FixtureRequest, card: dict[str, Any] | None) -> Iterator[PcscCard]:
    """Plug the card `card` describes (profile, timing) into a free vpcd reader."""
    daemon: PcscDaemon = request.getfixturevalue("pcscd")
    watch = ReaderWatch()
    slot = next((s for s in range(len(daemon.readers)) if s not in _readers_in_use), None)
    assert slot is not None, "every vpcd reader is in use: at most two PC/SC agents at once"
    _readers_in_use.add(slot)
    settings = card or {}
    timing = TimingModel.REALISTIC if settings.get("timing") == "realistic" else None
    sim = SimulatedCard.create(
        settings.get("profile", "legal-person-sm2"),
        knobs=CardKnobs(timing=timing) if timing is not None else None,
    )
    link = VpcdLink(sim, port=daemon.port(slot))
    link.start()
    reader = daemon.readers[slot]
    plugged = PcscCard(sim, link, reader, daemon.port(slot))
    try:
        watch.present(reader, timeout=10)
        yield plugged
    finally:
        plugged.link.stop()  # the test may have swapped in another card's link
        with contextlib.suppress(Exception, pytest.fail.Exception):
            watch.empty(reader)
        _readers_in_use.discard(slot)


INS_VERIFY, INS_PSO = 0x20, 0x2A


class CardHandle:
    """The card of a test agent, whichever backend it runs on: the software card
    in-process (simulated backend), behind vpcd + pcscd (`vpcd` set), or a softskf
    token (`skf` set). Mixed into the agent handles of the test tiers, which provide
    `runtime`, `vpcd`, `skf` and `apdus` (filled by `watch_card`).

    Tests observe the card through the backend-neutral methods below (PIN tries,
    verified, signatures made, PINs presented, anything reaching the card) and drive
    it with `pull_card` / `insert_card` / `slow_signatures` / `faulty_signatures`;
    `sim` is the software E-Port card itself, for the APDU backends only.
    """

    runtime: Any
    vpcd: PcscCard | None
    skf: SkfCard | None
    apdus: list[bytes]
    _healthy_process: Any = None  # faulty_signatures: the card's own process()

    @property
    def backend(self) -> SimulatedBackend:
        backend = self.runtime.backend
        assert isinstance(backend, SimulatedBackend)
        return backend

    @property
    def sim(self) -> SimulatedCard:
        """The software card, in-process or behind vpcd + pcscd (not on SKF)."""
        assert self.skf is None, "an SKF token has no APDU card: use the neutral methods"
        if self.vpcd is not None:
            return self.vpcd.card
        card = self.backend.card
        assert isinstance(card, SimulatedCard)
        return card

    @property
    def card_data(self) -> CardState:
        """What the card was issued with: certificates, card number, holder (the live
        PIN counter: `pin_tries_left()`)."""
        return self.skf.state if self.skf is not None else self.sim.state

    def watch_card(self) -> None:
        """Record every command APDU the software card processes (in `apdus`); an SKF
        token counts its calls itself, and a card a test plugged in itself is its own."""
        if self.skf is not None:
            return
        if self.vpcd is None and not isinstance(self.runtime.backend, SimulatedBackend):
            return
        sim = self.sim
        process = sim.process

        def recording(apdu: bytes) -> bytes:
            self.apdus.append(bytes(apdu))
            return process(apdu)

        sim.process = recording  # type: ignore[method-assign]

    # --- observations, on every backend ----------------------------------------------

    def pin_tries_left(self) -> int:
        if self.skf is not None:
            return self.skf.pin_tries_left()
        return self.sim.state.pin.tries_left

    def card_verified(self) -> bool:
        """The card's own verified state (not the agent's view of it)."""
        return self.skf.logged_in() if self.skf is not None else self.sim.verified

    def card_operations(self) -> int:
        """Everything that reached the card so far: APDUs, or SKF calls (not the
        device-event waits between jobs)."""
        return self.skf.card_operations() if self.skf is not None else len(self.apdus)

    def signatures_made(self) -> int:
        """Signature commands the card got: PSO, or SKF_ECCSignData / SKF_RSASignData."""
        if self.skf is not None:
            return self.skf.signatures_made()
        return sum(1 for a in self.apdus if a[1] == INS_PSO)

    def pins_presented(self) -> int:
        """PINs sent to the card: VERIFY with a PIN block (not a status query), or
        SKF_VerifyPIN."""
        if self.skf is not None:
            return self.skf.pins_presented()
        return sum(1 for a in self.apdus if a[1] == INS_VERIFY and a[2] == 0 and len(a) > 5)

    # --- driving the card --------------------------------------------------------------

    def slow_signatures(self, seconds: float) -> None:
        """Every signature takes `seconds` on the card (0: as fast as it can)."""
        if self.skf is not None:
            self.skf.slow_signatures(seconds)
        else:
            self.sim.knobs.timing = (
                TimingModel.flat(0.0, seconds) if seconds else (TimingModel.INSTANT)
            )

    def faulty_signatures(self, faulty: bool) -> None:
        """The card's signatures come back with one bit flipped (a faulty card)."""
        if self.skf is not None:
            self.skf.faulty_signatures(faulty)
            return
        sim = self.sim
        healthy = getattr(self, "_healthy_process", None)
        if not faulty:
            if healthy is not None:
                sim.process = healthy  # type: ignore[method-assign]
                self._healthy_process = None
            return
        if healthy is not None:
            return  # already faulty
        process = self._healthy_process = sim.process

        def faulty_process(apdu: bytes) -> bytes:
            response = process(apdu)
            if apdu[1] == INS_PSO and response[-2:] == b"\x90\x00" and len(response) > 2:
                response = bytes([response[0] ^ 0x01]) + response[1:]  # one flipped bit
            return response

        sim.process = faulty_process  # type: ignore[method-assign]

    def pull_card(self) -> None:
        """The visitor takes the card out (simulated reader, the vpcd link closes, or
        the token is unplugged)."""
        if self.skf is not None:
            self.skf.pull()
        elif self.vpcd is not None:
            self.vpcd.link.remove()
        else:
            self.backend.pull_card()

    def insert_card(self) -> None:
        if self.skf is not None:
            self.skf.insert()
        elif self.vpcd is not None:
            self.vpcd.link.insert()
        else:
            self.backend.insert_card()

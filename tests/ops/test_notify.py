"""sd_notify over a real NOTIFY_SOCKET: READY, STATUS, WATCHDOG pings, and the pings
stopping while a card call hangs (a blocking fake under the real CardOwner)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import AuditLog
from agent.backends import BackendEvent, BackendEventQueue
from agent.notify import SystemdNotifier, notify_address, watchdog_interval
from agent.owner import CardOwner, CardState, OwnerHealth
from agent.service import CardService
from tests.ops.conftest import AgentProcess, clean_env, write_config

READER = "Fake Reader 00"


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket (path or abstract)."""

    def __init__(self, address: str, bind_to: str | bytes) -> None:
        self.address = address  # the $NOTIFY_SOCKET value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.messages: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append((time.monotonic(), data))
        return data

    def collect(self, seconds: float) -> list[str]:
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None:
                out.append(message)
        return out

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message is not None and message.startswith(prefix):
                return message
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    name = f"card-agent-test-{secrets.token_hex(6)}"
    sock = NotifySocket("@" + name, b"\0" + name.encode())
    yield sock
    sock.close()


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = str(tmp_path / "notify")
    sock = NotifySocket(path, path)
    yield sock
    sock.close()


# --- environment parsing -------------------------------------------------------------------


def test_notify_address_and_watchdog_environment() -> None:
    assert notify_address("@sd") == b"\0sd"
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("relative/path") is None
    assert notify_address("") is None
    assert notify_address(None) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None


def test_without_notify_socket_everything_is_a_noop() -> None:
    notifier = SystemdNotifier(_FakeService(), stuck_limit_s=1, env={})

    async def main() -> bool:
        await notifier.start()
        ready = await notifier.ready()
        await notifier.stop()
        return ready

    assert not notifier.enabled
    assert asyncio.run(main()) is False


# --- a fake service ---------------------------------------------------------------------------


class _FakeService:
    """What the notifier reads of a CardService."""

    def __init__(self) -> None:
        self.card_state = CardState(reader_present=True, card_present=True, reader=READER)
        self.subscribers: list[Any] = []

    def health(self) -> OwnerHealth:
        return OwnerHealth(thread_alive=True, busy_for_s=None, last_loop_at=time.monotonic())

    def subscribe(self, callback: Any) -> None:
        self.subscribers.append(callback)

    def unsubscribe(self, callback: Any) -> None:
        self.subscribers.remove(callback)


def test_ready_status_pings_and_stopping_on_an_abstract_socket(
    abstract_socket: NotifySocket,
) -> None:
    env = {"NOTIFY_SOCKET": abstract_socket.address, "WATCHDOG_USEC": "100000"}
    owner = _FakeService()
    notifier = SystemdNotifier(owner, stuck_limit_s=5, describe=lambda: "serving x", env=env)
    assert notifier.watchdog_interval_s == pytest.approx(0.05)
    received: list[str] = []

    async def main() -> None:
        await notifier.start()
        assert await notifier.ready()
        await asyncio.sleep(0.3)
        owner.card_state = CardState(reader_present=True, card_present=False, reader=READER)
        for callback in owner.subscribers:
            callback(object())  # a card event: STATUS follows
        await asyncio.sleep(0.05)
        await notifier.stop()

    thread = threading.Thread(target=lambda: received.extend(abstract_socket.collect(1.0)))
    thread.start()
    asyncio.run(main())
    thread.join()
    ready = [m for m in received if m.startswith("READY=1")]
    assert ready == ["READY=1\nSTATUS=serving x; card present"]
    assert received.count("WATCHDOG=1") >= 4
    assert "STATUS=serving x; no card" in received
    assert received[-1] == "STOPPING=1\nSTATUS=stopping"
    assert notifier.pings == received.count("WATCHDOG=1")


# --- pings stop while a card call hangs -----------------------------------------------------


class _BlockingBackend:
    """A reader with a card whose driver call can be made to hang."""

    def __init__(self) -> None:
        self._events = BackendEventQueue(
            (
                BackendEvent("reader_added", READER),
                BackendEvent("card_inserted", READER, b"\x3b\x00"),
            )
        )

    def open_driver(self) -> Any:
        return object()

    def drop_driver(self) -> None:
        pass

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        return self._events.wait(timeout_s)

    def wake(self) -> None:
        self._events.wake()

    def close(self) -> None:
        self._events.close()


def test_pings_stop_while_the_card_thread_hangs_and_resume_after(
    path_socket: NotifySocket, tmp_path: Path
) -> None:
    release = threading.Event()
    env = {"NOTIFY_SOCKET": path_socket.address, "WATCHDOG_USEC": "100000"}  # ping / 50 ms
    timeline: dict[str, float] = {}

    async def main() -> None:
        owner = CardOwner(_BlockingBackend(), poll_interval_s=0.05)
        audit = AuditLog(tmp_path / "audit.log")
        service = CardService(
            owner, audit, pin_floor=1, session_ttl_s=60, session_idle_s=60, job_timeout_s=10
        )
        await service.start()
        notifier = SystemdNotifier(service, stuck_limit_s=0.3, env=env)
        await notifier.start()
        assert await notifier.ready()
        await asyncio.sleep(0.3)

        def hang(_driver: Any) -> str:
            release.wait(10)  # a card call stuck in the driver
            return "done"

        timeline["hang"] = time.monotonic()
        job = asyncio.create_task(service.run(hang, label="hanging_call"))
        await asyncio.sleep(1.1)  # 0.3 s to be "stuck", then 0.8 s without pings
        timeline["release"] = time.monotonic()
        release.set()
        assert await job == "done"
        await asyncio.sleep(0.3)
        await notifier.stop()
        await service.stop()
        audit.close()

    received: list[str] = []
    collector = threading.Thread(target=lambda: received.extend(path_socket.collect(2.4)))
    collector.start()
    try:
        asyncio.run(main())
    finally:
        release.set()
        collector.join()

    pings = [t for t, m in path_socket.messages if m == "WATCHDOG=1"]
    hang, released = timeline["hang"], timeline["release"]
    before = [t for t in pings if t < hang]
    # Stuck after 0.3 s; allow a ping already due then to land late on a loaded machine.
    silent = [t for t in pings if hang + 0.3 + 0.2 < t < released]
    after = [t for t in pings if t > released]
    assert len(before) >= 3, pings
    assert silent == [], "pings went on while the card call hung"
    assert len(after) >= 3, "pings did not resume after the call returned"
    stuck = [m for m in received if m.startswith("STATUS=stuck")]
    assert len(stuck) == 1
    assert stuck[0].startswith("STATUS=stuck: card call hanging_call running for 0.3")
    assert any(m.startswith("READY=1") for m in received)


# --- the real `card-agent serve` --------------------------------------------------------------


def test_serve_sends_ready_only_once_listening(tmp_path: Path, path_socket: NotifySocket) -> None:
    config = write_config(tmp_path)
    env = clean_env(NOTIFY_SOCKET=path_socket.address, WATCHDOG_USEC="400000")
    agent = AgentProcess(config, env=env).start(wait=False)
    try:
        ready = path_socket.wait_for("READY=1", timeout=15)
        # At READY=1 the API must already accept connections: no retry, no wait.
        with contextlib.closing(socket.create_connection(("127.0.0.1", agent.port), 0.5)):
            pass
        from agent.access.agent_api import AgentClient

        status = AgentClient("127.0.0.1", agent.port).probe(2.0)
        assert status is not None
        assert status["card_present"] is True
        assert ready == (f"READY=1\nSTATUS=serving http://127.0.0.1:{agent.port}; card present")
        pings = [m for m in path_socket.collect(0.7) if m == "WATCHDOG=1"]
        assert len(pings) >= 2
        # uvicorn shuts down cleanly, then re-raises SIGTERM: systemd counts an exit by
        # its stop signal as success.
        assert agent.stop() in (0, -signal.SIGTERM)
        assert path_socket.wait_for("STOPPING=1", timeout=2)
        assert "Application shutdown complete" in agent.output()
    finally:
        agent.stop()

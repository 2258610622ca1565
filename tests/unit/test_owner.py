"""CardOwner: one thread owns the reader; jobs, deadlines, driver lifecycle, events."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest

from agent.backends import BackendEvent, BackendEventQueue
from agent.owner import Busy, CardOwner, JobTimeout, OwnerEvent, OwnerStopped
from card.errors import CardMissing, CardRemoved, CardReset, WrongPinError, error_for_sw

T = TypeVar("T")
READER = "Fake Reader 00"
ATR = bytes.fromhex("3b8c8001")


class FakeDriver:
    """Just enough of a CardDriver: the tests' job functions do the rest."""

    def __init__(self, serial: int) -> None:
        self.serial = serial
        self.atr = ATR


class FakeBackend:
    def __init__(self) -> None:
        self.opened = 0
        self.dropped = 0
        self.closed = False
        self.open_error: Exception | None = None
        self.open_threads: set[int] = set()
        self.events = BackendEventQueue()

    def open_driver(self) -> Any:
        self.open_threads.add(threading.get_ident())
        if self.open_error is not None:
            raise self.open_error
        self.opened += 1
        return FakeDriver(self.opened)

    def drop_driver(self) -> None:
        self.dropped += 1

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        return self.events.wait(timeout_s)

    def wake(self) -> None:
        self.events.wake()

    def close(self) -> None:
        self.closed = True

    def push(self, *events: BackendEvent) -> None:
        self.events.push(*events)


def with_owner(
    body: Callable[[CardOwner, FakeBackend], Awaitable[T]], **kwargs: Any
) -> tuple[T, FakeBackend]:
    """Run `body` against a started owner on a fresh event loop; stop it afterwards."""
    backend = FakeBackend()

    async def main() -> T:
        owner = CardOwner(backend, **kwargs)
        await owner.start()
        try:
            return await body(owner, backend)
        finally:
            await owner.stop(join_timeout=2)
            assert not owner.health().thread_alive

    return asyncio.run(main()), backend


class Blocker:
    """A job function that blocks in the owner thread until released."""

    def __init__(self, result: object = "blocked") -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.result = result

    def __call__(self, driver: Any) -> object:
        self.started.set()
        self.release.wait(5)
        return self.result

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 2)


async def settle(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.005)


# --- threads and ordering ---------------------------------------------------------


def test_every_card_call_runs_on_the_single_owner_thread() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        loop_thread = threading.get_ident()
        idents = await asyncio.gather(
            *(owner.run(lambda d: threading.get_ident(), timeout=2, label="id") for _ in range(12))
        )
        assert set(idents) == {owner.thread_id}
        assert loop_thread not in idents
        assert backend.open_threads == {owner.thread_id}  # opening the card too

    with_owner(body)


def test_100_concurrent_jobs_complete_serialized_in_fifo_order() -> None:
    lock = threading.Lock()
    inside = 0
    max_inside = 0
    order: list[int] = []

    def job(i: int) -> Callable[[Any], int]:
        def fn(driver: Any) -> int:
            nonlocal inside, max_inside
            with lock:
                inside += 1
                max_inside = max(max_inside, inside)
            time.sleep(0.0005)
            order.append(i)
            with lock:
                inside -= 1
            return i

        return fn

    async def body(owner: CardOwner, backend: FakeBackend) -> list[int]:
        return await asyncio.gather(
            *(owner.run(job(i), timeout=10, label=f"job{i}") for i in range(100))
        )

    results, backend = with_owner(body, queue_size=100)
    assert results == list(range(100))
    assert order == list(range(100))
    assert max_inside == 1
    assert backend.opened == 1


# --- queue and deadlines --------------------------------------------------------------


def test_full_queue_raises_busy_at_once_with_retry_after() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        blocker = Blocker("first")
        first = asyncio.create_task(owner.run(blocker, timeout=5, label="block"))
        await blocker.wait_started()
        queued = [
            asyncio.create_task(owner.run(lambda d, i=i: i, timeout=5, label="q")) for i in (1, 2)
        ]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(Busy) as err:
            await owner.run(lambda d: 3, timeout=5, label="overflow")
        assert time.monotonic() - t0 < 0.05
        assert err.value.retry_after_s > 0
        blocker.release.set()
        assert await first == "first"
        assert [await t for t in queued] == [1, 2]
        assert await owner.run(lambda d: 4, timeout=5, label="after") == 4

    with_owner(body, queue_size=2)


def test_job_still_queued_at_its_deadline_never_runs() -> None:
    ran = threading.Event()

    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        blocker = Blocker()
        first = asyncio.create_task(owner.run(blocker, timeout=5, label="block"))
        await blocker.wait_started()
        t0 = time.monotonic()
        with pytest.raises(JobTimeout) as err:
            await owner.run(lambda d: ran.set(), timeout=0.2, label="late")
        assert 0.19 <= time.monotonic() - t0 < 0.35
        assert err.value.started is False
        blocker.release.set()
        await first
        await owner.run(lambda d: None, timeout=2, label="flush")

    with_owner(body)
    assert not ran.is_set()


def test_hung_job_times_out_at_deadline_and_health_shows_it() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        assert await owner.run(lambda d: d.serial, timeout=2, label="open") == 1
        blocker = Blocker()
        t0 = time.monotonic()
        with pytest.raises(JobTimeout) as err:
            await owner.run(blocker, timeout=0.3, label="hang")
        assert 0.29 <= time.monotonic() - t0 < 0.45
        assert err.value.started is True

        h1 = owner.health()
        assert h1.thread_alive
        assert h1.busy_for_s is not None
        assert h1.busy_for_s >= 0.25
        assert h1.job_label == "hang"
        await asyncio.sleep(0.1)
        h2 = owner.health()
        assert h2.busy_for_s is not None
        assert h2.busy_for_s >= h1.busy_for_s + 0.09
        assert h2.stuck(0.2)
        assert not h2.stuck(10)

        blocker.release.set()
        # The overrun made the card suspect: the next job runs on a re-opened driver.
        assert await owner.run(lambda d: d.serial, timeout=2, label="next") == 2
        h3 = owner.health()
        assert h3.busy_for_s is None
        assert not h3.stuck(10)

    with_owner(body)


def test_cancelled_caller_leaves_the_thread_working() -> None:
    ran = threading.Event()

    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        blocker = Blocker()
        running = asyncio.create_task(owner.run(blocker, timeout=5, label="block"))
        await blocker.wait_started()
        queued = asyncio.create_task(owner.run(lambda d: ran.set(), timeout=5, label="q"))
        await asyncio.sleep(0.01)
        running.cancel()
        queued.cancel()
        for task in (running, queued):
            with pytest.raises(asyncio.CancelledError):
                await task
        blocker.release.set()
        assert await owner.run(lambda d: "ok", timeout=2, label="after") == "ok"
        assert owner.health().thread_alive

    with_owner(body)
    assert not ran.is_set()


# --- errors and the driver lifecycle ----------------------------------------------


def test_job_errors_reach_the_caller_unchanged_and_keep_the_driver() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        wrong = error_for_sw(0x63C2)

        def fail(driver: Any) -> None:
            raise wrong

        with pytest.raises(WrongPinError) as err:
            await owner.run(fail, timeout=2, label="verify")
        assert err.value is wrong
        assert err.value.tries_left == 2
        assert await owner.run(lambda d: d.serial, timeout=2, label="again") == 1
        assert backend.dropped == 0

    with_owner(body)


def test_card_removed_drops_the_driver_and_the_next_job_reopens() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        assert await owner.run(lambda d: d.serial, timeout=2, label="open") == 1
        pulled = CardRemoved("pulled")

        def fail(driver: Any) -> None:
            raise pulled

        with pytest.raises(CardRemoved) as err:
            await owner.run(fail, timeout=2, label="sign")
        assert err.value is pulled
        assert backend.dropped == 1
        assert await owner.run(lambda d: d.serial, timeout=2, label="reopen") == 2

    with_owner(body)


def test_open_failure_reaches_the_caller_and_the_next_job_retries() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        backend.open_error = CardMissing("empty reader")
        with pytest.raises(CardMissing):
            await owner.run(lambda d: d.serial, timeout=2, label="info")
        backend.open_error = None
        assert await owner.run(lambda d: d.serial, timeout=2, label="info") == 1

    with_owner(body)


def test_card_reset_reopens_once_propagates_and_is_announced() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        events: list[OwnerEvent] = []
        owner.subscribe(events.append)
        await owner.run(lambda d: None, timeout=2, label="open")
        generation = owner.state.generation

        def fail(driver: Any) -> None:
            raise CardReset("reset by someone")

        with pytest.raises(CardReset):
            await owner.run(fail, timeout=2, label="sign")
        assert await owner.run(lambda d: d.serial, timeout=2, label="next") == 2
        assert backend.opened == 2  # exactly one automatic re-open
        assert owner.state.generation == generation + 1
        await settle(lambda: any(e.kind == "card_reset" for e in events))

    with_owner(body)


# --- events -----------------------------------------------------------------------


def test_events_reach_subscribers_on_the_loop_and_update_the_state() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        loop_thread = threading.get_ident()
        seen: list[tuple[OwnerEvent, int]] = []
        removed = asyncio.Event()

        def on_event(event: OwnerEvent) -> None:
            seen.append((event, threading.get_ident()))
            if event.kind == "card_removed":
                removed.set()

        owner.subscribe(on_event)
        backend.push(
            BackendEvent("reader_added", READER),
            BackendEvent("card_inserted", READER, ATR),
        )
        await settle(lambda: owner.state.card_present)
        assert owner.state.atr == ATR
        assert owner.state.reader == READER
        assert await owner.run(lambda d: d.serial, timeout=2, label="open") == 1

        backend.push(BackendEvent("card_removed", READER, ATR))
        await asyncio.wait_for(removed.wait(), 2)
        assert [e.kind for e, _ in seen] == ["reader_added", "card_inserted", "card_removed"]
        assert {tid for _, tid in seen} == {loop_thread}
        state = owner.state
        assert state.reader_present
        assert not state.card_present
        assert state.atr is None
        assert state.generation == 2 == seen[-1][0].generation
        assert backend.dropped == 1  # the removal dropped the driver

        owner.unsubscribe(on_event)
        backend.push(BackendEvent("card_inserted", READER, ATR))
        await settle(lambda: owner.state.card_present)
        await asyncio.sleep(0.02)
        assert len(seen) == 3
        assert await owner.run(lambda d: d.serial, timeout=2, label="reopen") == 2

    with_owner(body)


# --- stop ---------------------------------------------------------------------------


def test_stop_fails_pending_jobs_and_joins_the_thread() -> None:
    backend = FakeBackend()

    async def main() -> None:
        owner = CardOwner(backend)
        await owner.start()
        blocker = Blocker()
        running = asyncio.create_task(owner.run(blocker, timeout=5, label="block"))
        await blocker.wait_started()
        queued = asyncio.create_task(owner.run(lambda d: 1, timeout=5, label="q"))
        await asyncio.sleep(0.01)

        stopping = asyncio.create_task(owner.stop(join_timeout=2))
        for task in (running, queued):
            with pytest.raises(OwnerStopped):
                await asyncio.wait_for(task, 1)
        blocker.release.set()
        await stopping
        assert not owner.health().thread_alive
        assert backend.closed
        with pytest.raises(OwnerStopped):
            await owner.run(lambda d: 2, timeout=1, label="late")

    asyncio.run(main())


# --- the real simulated card ---------------------------------------------------------


def test_simulated_card_end_to_end_with_a_card_pull() -> None:
    card_os = pytest.importorskip("simulator.card_os")
    pytest.importorskip("simulator.inprocess")
    from agent.backends.simulated import SimulatedBackend

    backend = SimulatedBackend(card_os.SimulatedCard.create("legal-person-sm2"))

    async def main() -> None:
        owner = CardOwner(backend)
        await owner.start()
        try:
            kinds: list[str] = []
            owner.subscribe(lambda e: kinds.append(e.kind))
            info = await owner.run(lambda d: d.card_info(), timeout=5, label="info")
            assert info.masked_card_number.endswith(info.card_number[-4:])
            await settle(lambda: owner.state.card_present)
            assert owner.state.atr == backend.card.atr

            backend.pull_card()
            await settle(lambda: "card_removed" in kinds)
            with pytest.raises(CardMissing):
                await owner.run(lambda d: d.card_info(), timeout=5, label="info")

            backend.insert_card()
            await settle(lambda: owner.state.card_present)
            status = await owner.run(lambda d: d.pin_status(), timeout=5, label="pin")
            assert not status.verified
            assert not status.blocked
            assert kinds == ["reader_added", "card_inserted", "card_removed", "card_inserted"]
            assert owner.state.generation == 3
        finally:
            await owner.stop(join_timeout=2)

    asyncio.run(main())


# --- the PC/SC backend's plumbing (no pcscd: fake monitor and transport) -----------------


def test_pcsc_backend_filters_events_and_wakes_through_the_monitor() -> None:
    from agent.backends.pcsc import PcscBackend

    class FakeMonitor:
        def __init__(self) -> None:
            self.cancelled = 0
            self.cancel_threads: list[int] = []
            self.closed = False
            self.script = [
                [
                    SimpleNamespace(kind="reader_added", reader="ACME Reader 00", atr=None),
                    SimpleNamespace(kind="reader_added", reader="Virtual PCD 00 00", atr=None),
                    SimpleNamespace(kind="card_inserted", reader="Virtual PCD 00 00", atr=ATR),
                ]
            ]

        def poll(self, timeout_ms: int) -> list[Any]:
            return self.script.pop(0) if self.script else []

        def cancel(self) -> None:
            self.cancel_threads.append(threading.get_ident())
            self.cancelled += 1

        def close(self) -> None:
            self.closed = True

    class FakeTransport:
        closed = False

        def close(self) -> None:
            self.closed = True

    monitor = FakeMonitor()
    selectors: list[Any] = []
    transports: list[FakeTransport] = []

    def make_transport(selector: Any) -> Any:
        selectors.append(selector)
        transports.append(FakeTransport())
        return transports[-1]

    backend = PcscBackend(
        re.compile("virtual pcd", re.IGNORECASE),
        open_session=lambda t: FakeDriver(len(transports)),
        transport_factory=make_transport,
        monitor_factory=lambda: monitor,
    )
    backend.wake()  # before the monitor exists: the next poll returns at once
    assert backend.poll_events(5) == []
    assert backend.poll_events(0.01) == [
        BackendEvent("reader_added", "Virtual PCD 00 00"),
        BackendEvent("card_inserted", "Virtual PCD 00 00", ATR),
    ]
    backend.wake()
    # SCardCancel can block while pcscd does not answer: never on the waking thread.
    deadline = time.monotonic() + 5
    while monitor.cancelled < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert monitor.cancelled == 1
    assert monitor.cancel_threads[0] != threading.get_ident()

    backend.open_driver()
    assert selectors[0].search("Virtual PCD 00 00")
    backend.open_driver()  # re-open releases the previous transport
    assert transports[0].closed
    assert not transports[1].closed
    backend.close()
    assert transports[1].closed
    assert monitor.closed

"""CardMonitor and AsyncEventBridge through the real pcscd."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from card.monitor import AsyncEventBridge, CardEvent, CardMonitor

pytestmark = pytest.mark.pcsc


@pytest.fixture
def monitor(pcscd) -> Iterator[CardMonitor]:
    m = CardMonitor()
    yield m
    m.close()


def poll_until(
    monitor: CardMonitor, done: Callable[[list[CardEvent]], bool], timeout: float = 3.0
) -> tuple[list[CardEvent], float]:
    """Poll (blocking steps, no sleeps) until `done(all events so far)`; return the
    events and the seconds it took."""
    start = time.monotonic()
    seen: list[CardEvent] = []
    while not done(seen):
        remaining = start + timeout - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"expected events did not arrive in {timeout}s; got {seen}")
        seen.extend(monitor.poll(int(remaining * 1000) + 1))
    return seen, time.monotonic() - start


def drain(monitor: CardMonitor) -> list[CardEvent]:
    events = monitor.poll(0)
    while more := monitor.poll(0):
        events.extend(more)
    return events


def has(kind: str, reader: str) -> Callable[[list[CardEvent]], bool]:
    return lambda events: any(e.kind == kind and e.reader == reader for e in events)


def test_first_poll_reports_the_current_situation(pcscd, plug, make_card, monitor) -> None:
    card = make_card()
    plug(card, slot=1)
    events = monitor.poll(0)
    assert CardEvent("reader_added", pcscd.readers[0], None) in events
    assert CardEvent("reader_added", pcscd.readers[1], None) in events
    assert CardEvent("card_inserted", pcscd.readers[1], card.atr) in events
    assert not any(e.kind == "card_inserted" and e.reader == pcscd.readers[0] for e in events)
    assert monitor.available
    assert monitor.readers()[pcscd.readers[1]] == card.atr


def test_initial_events_can_be_suppressed(pcscd, plug, make_card) -> None:
    plug(make_card())
    m = CardMonitor(initial_events=False)
    try:
        assert m.poll(0) == []
        assert m.readers()[pcscd.readers[0]] is not None  # state is known all the same
    finally:
        m.close()


def test_insert_and_remove_seen_within_a_second(pcscd, plug, make_card, monitor) -> None:
    card = make_card()
    link = plug(card, inserted=False)
    drain(monitor)
    reader = pcscd.readers[0]

    link.insert()
    events, took = poll_until(monitor, has("card_inserted", reader))
    assert took < 1.0, f"insertion seen after {took:.2f}s"
    assert CardEvent("card_inserted", reader, card.atr) in events

    link.remove()
    events, took = poll_until(monitor, has("card_removed", reader))
    assert took < 1.0, f"removal seen after {took:.2f}s"
    assert CardEvent("card_removed", reader, card.atr) in events
    assert monitor.readers()[reader] is None


def test_quick_swap_between_polls_is_not_lost(pcscd, plug, make_card, monitor, watch) -> None:
    old, new = make_card(label=b"old"), make_card(label=b"new")
    reader = pcscd.readers[0]
    first = plug(old)
    drain(monitor)
    first.stop()
    watch.empty(reader)
    plug(new)  # waits until pcscd sees it; the monitor has not polled meanwhile
    events, _ = poll_until(monitor, has("card_inserted", reader))
    assert events[:2] == [
        CardEvent("card_removed", reader, old.atr),
        CardEvent("card_inserted", reader, new.atr),
    ]


def test_cancel_from_another_thread_ends_a_poll(pcscd, monitor) -> None:
    drain(monitor)
    timer = threading.Timer(0.2, monitor.cancel)
    start = time.monotonic()
    timer.start()
    try:
        assert monitor.poll(10_000) == []
    finally:
        timer.cancel()
    took = time.monotonic() - start
    assert 0.15 < took < 1.0, f"poll returned after {took:.2f}s"  # blocked, then cut short


def test_cancel_before_poll_is_not_lost(pcscd, monitor) -> None:
    drain(monitor)
    monitor.cancel()
    start = time.monotonic()
    assert monitor.poll(10_000) == []
    assert time.monotonic() - start < 0.5


def test_pcscd_going_away_and_coming_back(pcscd, plug, make_card, monitor) -> None:
    card = make_card()
    plug(card)
    drain(monitor)
    reader = pcscd.readers[0]

    killer = threading.Timer(0.2, pcscd.kill)  # dies while the poll is blocked in pcscd
    killer.start()
    try:
        events, took = poll_until(monitor, has("reader_removed", reader))
    finally:
        killer.join()
    assert took < 1.5, f"loss of pcscd noticed after {took:.2f}s"
    assert CardEvent("card_removed", reader, card.atr) in events
    assert not monitor.available
    assert monitor.readers() == {}
    assert monitor.poll(50) == []  # still down: a quiet wait, no exception

    pcscd.start()
    events, _ = poll_until(monitor, has("card_inserted", reader), timeout=5.0)
    assert CardEvent("reader_added", reader, None) in events
    assert monitor.available


def test_async_bridge_delivers_on_the_event_loop(pcscd, plug, make_card) -> None:
    card = make_card()
    link = plug(card, inserted=False)
    reader = pcscd.readers[0]

    async def scenario() -> tuple[CardEvent, set[int]]:
        loop_thread = threading.get_ident()
        sink_threads: set[int] = set()
        bridge = AsyncEventBridge(sink=lambda _e: sink_threads.add(threading.get_ident()))
        stop = threading.Event()
        ready = threading.Event()

        def owner() -> None:  # the card owner thread: all PC/SC calls happen here
            m = CardMonitor(initial_events=False)
            try:
                m.poll(0)
                ready.set()
                while not stop.is_set():
                    bridge.publish(m.poll(200))
            finally:
                m.close()

        thread = threading.Thread(target=owner, daemon=True)
        thread.start()
        try:
            assert await asyncio.to_thread(ready.wait, 5)
            link.insert()
            event = await asyncio.wait_for(bridge.get(), 3)
        finally:
            stop.set()
            await asyncio.to_thread(thread.join, 5)
        assert sink_threads == {loop_thread}
        return event, sink_threads

    event, _ = asyncio.run(scenario())
    assert event == CardEvent("card_inserted", reader, card.atr)

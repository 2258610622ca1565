"""SkfDeviceMonitor: insertions and removals through SKF_WaitForDevEvent (woken by
SKF_CancelWaitForDevEvent from the alarm thread) and, for a library without it, by
polling SKF_EnumDev; wake() from another thread; timeouts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from card.errors import CardError
from card.skf.events import SkfDeviceMonitor, SkfEvent
from card.skf.sar import SAR_FAIL, SAR_NOT_EVENTERR, SAR_NOTSUPPORTYETERR
from tests.skf.conftest import SoftSkf
from tests.skf.softskf.store import device_from_state

POLL_S = 0.05


@pytest.fixture(params=["wait", "poll"])
def monitored(request: pytest.FixtureRequest) -> Iterator[tuple[SoftSkf, SkfDeviceMonitor]]:
    """A monitor using SKF_WaitForDevEvent, or polling a library that lacks it."""
    env: SoftSkf = request.getfixturevalue(
        "softskf" if request.param == "wait" else "softskf_noevents"
    )
    env.load_card("legal-person-sm2")
    monitor = SkfDeviceMonitor(env.library, poll_interval_s=POLL_S)
    assert monitor.uses_wait is (request.param == "wait")
    try:
        yield env, monitor
    finally:
        monitor.close()


def _poll_until(monitor: SkfDeviceMonitor, count: int, limit_s: float = 5.0) -> list[SkfEvent]:
    events: list[SkfEvent] = []
    deadline = time.monotonic() + limit_s
    while len(events) < count and time.monotonic() < deadline:
        events += monitor.poll_events(0.2)
    return events


def test_first_poll_reports_what_is_present(
    monitored: tuple[SoftSkf, SkfDeviceMonitor],
) -> None:
    _, monitor = monitored
    assert monitor.poll_events(1.0) == [SkfEvent("card_inserted", "SoftSKF Token 0")]
    assert monitor.present == ["SoftSKF Token 0"]


def test_removal_and_insertion(monitored: tuple[SoftSkf, SkfDeviceMonitor]) -> None:
    env, monitor = monitored
    monitor.poll_events(0)
    env.control.pull()
    assert _poll_until(monitor, 1) == [SkfEvent("card_removed", "SoftSKF Token 0")]
    assert monitor.present == []
    env.control.insert()
    assert _poll_until(monitor, 1) == [SkfEvent("card_inserted", "SoftSKF Token 0")]
    assert monitor.present == ["SoftSKF Token 0"]


def test_a_quiet_poll_returns_after_its_timeout(
    monitored: tuple[SoftSkf, SkfDeviceMonitor],
) -> None:
    _, monitor = monitored
    monitor.poll_events(0)
    start = time.monotonic()
    assert monitor.poll_events(0.3) == []
    elapsed = time.monotonic() - start
    assert 0.25 <= elapsed < 1.5, elapsed


def test_wake_from_another_thread_ends_a_poll_early(
    monitored: tuple[SoftSkf, SkfDeviceMonitor],
) -> None:
    _, monitor = monitored
    monitor.poll_events(0)
    timer = threading.Timer(0.2, monitor.wake)
    timer.start()
    start = time.monotonic()
    assert monitor.poll_events(30.0) == []
    assert time.monotonic() - start < 3.0
    timer.join()
    # A wake between polls makes the next poll return at once.
    monitor.wake()
    start = time.monotonic()
    assert monitor.poll_events(30.0) == []
    assert time.monotonic() - start < 1.0


def test_two_devices_leave_and_come_back(softskf: SoftSkf) -> None:
    first = device_from_state(softskf.cards.get("legal-person-sm2"), device="Token A")
    second = device_from_state(softskf.cards.get("operator-sm2"), device="Token B")
    softskf.load(first, second)
    monitor = SkfDeviceMonitor(softskf.library)
    try:
        assert [e.device for e in monitor.poll_events(0)] == ["Token A", "Token B"]
        softskf.control.pull()
        removed = _poll_until(monitor, 2)
        assert sorted(e.device for e in removed) == ["Token A", "Token B"]
        assert {e.kind for e in removed} == {"card_removed"}
    finally:
        monitor.close()


def test_a_replug_between_two_looks_is_both_events(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    monitor = SkfDeviceMonitor(softskf.library)
    try:
        monitor.poll_events(0)
        softskf.control.replug()  # out and in again while nobody waited
        assert [e.kind for e in _poll_until(monitor, 2)] == ["card_removed", "card_inserted"]
    finally:
        monitor.close()


@pytest.mark.parametrize("latched", [False, True])
def test_timeouts_with_either_cancel_semantics(softskf: SoftSkf, latched: bool) -> None:
    softskf.load_card("operator-sm2")
    softskf.control.cancel_latch(latched)
    monitor = SkfDeviceMonitor(softskf.library, cancel_retry_s=0.02)
    try:
        monitor.poll_events(0)
        for _ in range(5):  # repeated cancels: an early return at worst, never a hang
            start = time.monotonic()
            assert monitor.poll_events(0.1) == []
            assert time.monotonic() - start < 2.0
        softskf.control.pull()
        assert _poll_until(monitor, 1) == [SkfEvent("card_removed", "SoftSKF Token 0")]
    finally:
        monitor.close()


@pytest.mark.parametrize("code", [SAR_NOT_EVENTERR, SAR_FAIL])
def test_a_cancelled_wait_reported_as_an_error_is_no_error(softskf: SoftSkf, code: int) -> None:
    softskf.load_card("operator-sm2")
    softskf.control.cancel_result(code)
    monitor = SkfDeviceMonitor(softskf.library)
    try:
        monitor.poll_events(0)
        assert monitor.poll_events(0.1) == []
        softskf.control.pull()
        assert _poll_until(monitor, 1) == [SkfEvent("card_removed", "SoftSKF Token 0")]
    finally:
        monitor.close()


def test_a_failing_wait_that_nobody_cancelled_raises(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    monitor = SkfDeviceMonitor(softskf.library)
    try:
        monitor.poll_events(0)
        softskf.control.fail("SKF_WaitForDevEvent", SAR_FAIL)
        with pytest.raises(CardError, match="SKF_WaitForDevEvent returned SAR_FAIL"):
            monitor.poll_events(5.0)
    finally:
        monitor.close()


def test_an_unsupported_wait_switches_to_polling(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    softskf.control.fail("SKF_WaitForDevEvent", SAR_NOTSUPPORTYETERR)
    monitor = SkfDeviceMonitor(softskf.library, poll_interval_s=POLL_S)
    try:
        monitor.poll_events(0)
        assert monitor.poll_events(0.1) == []
        assert not monitor.uses_wait
        softskf.control.pull()
        assert _poll_until(monitor, 1) == [SkfEvent("card_removed", "SoftSKF Token 0")]
    finally:
        monitor.close()


def test_waiting_requires_the_function(softskf_noevents: SoftSkf) -> None:
    with pytest.raises(ValueError, match="does not export SKF_WaitForDevEvent"):
        SkfDeviceMonitor(softskf_noevents.library, use_wait=True)


def test_close_ends_the_alarm_thread(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    monitor = SkfDeviceMonitor(softskf.library)
    monitor.poll_events(0)
    monitor.poll_events(0.05)
    alarms = [t for t in threading.enumerate() if t.name == "skf-event-alarm"]
    assert alarms
    monitor.close()
    for alarm in alarms:
        alarm.join(2)
        assert not alarm.is_alive()
    assert monitor.poll_events(1.0) == []  # closed: returns at once

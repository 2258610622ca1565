"""SKF device insertions and removals, shaped like an agent backend's event source.

`SkfDeviceMonitor.poll_events(timeout_s)` blocks up to `timeout_s` and returns what
changed; `wake()` (from any thread) ends it early; the first call reports the devices
present. Two ways to wait, chosen by what the library exports:

* SKF_WaitForDevEvent, which blocks until an event with no timeout of its own. The owner
  thread blocks in it; a small alarm thread calls SKF_CancelWaitForDevEvent when the
  poll's time is up or `wake()` was called, so `wake()` itself never calls into the
  library. Whether a cancel that arrives just *before* the wait starts is remembered is
  not specified (libraries differ), so the alarm repeats the cancel every
  `cancel_retry_s` until the wait has returned; a cancel remembered too many only makes
  a later poll return early, which the contract allows. A library that exports the
  function but answers SAR_NOTSUPPORTYETERR is switched to polling.
* otherwise polling SKF_EnumDev(bPresent=TRUE) every `poll_interval_s` and reporting
  the difference. A pull and re-insertion between two polls goes unseen here; the
  driver then fails with SAR_INVALIDHANDLEERR (a CardReset) and is reopened.

Besides `wake()` and the alarm's cancel, everything runs in the owner thread, like the
rest of the binding.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

from card.errors import CardError, SkfError
from card.skf import types as t
from card.skf.binding import SkfLibrary
from card.skf.sar import SAR_NOTSUPPORTYETERR

log = logging.getLogger(__name__)

EventKind = Literal["card_inserted", "card_removed"]

DEFAULT_POLL_INTERVAL_S = 0.5
DEFAULT_CANCEL_RETRY_S = 0.05
_ALARM_JOIN_S = 2.0


@dataclass(frozen=True)
class SkfEvent:
    """A device (an SKF token, or a card behind the library) came or went."""

    kind: EventKind
    device: str


class SkfDeviceMonitor:
    """Device events of one SKF library. Not thread-safe except `wake()`."""

    def __init__(
        self,
        library: SkfLibrary,
        *,
        use_wait: bool | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        cancel_retry_s: float = DEFAULT_CANCEL_RETRY_S,
    ) -> None:
        if use_wait and not library.has_dev_events:
            raise ValueError("the SKF library does not export SKF_WaitForDevEvent")
        self.library = library
        self.uses_wait = library.has_dev_events if use_wait is None else use_wait
        self.poll_interval_s = poll_interval_s
        self.cancel_retry_s = cancel_retry_s
        self._present: list[str] | None = None  # None until the first poll
        self._cond = threading.Condition()
        self._woken = False
        self._closed = False
        self._waiting = False  # the owner thread is inside SKF_WaitForDevEvent
        self._deadline = 0.0
        self._cancel_sent = False
        self._alarm: threading.Thread | None = None

    @property
    def present(self) -> list[str]:
        """Devices present as of the last poll."""
        return list(self._present or [])

    def poll_events(self, timeout_s: float) -> list[SkfEvent]:
        if self._present is None:
            self._present = self._enum()
            return [SkfEvent("card_inserted", name) for name in self._present]
        with self._cond:
            if self._closed:
                return []
            if self._woken:
                self._woken = False
                return []
        if self.uses_wait:
            return self._poll_wait(max(0.0, timeout_s))
        return self._poll_enum(max(0.0, timeout_s))

    def wake(self) -> None:
        """Thread-safe: make the current (or the next) poll return soon."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        alarm, self._alarm = self._alarm, None
        if alarm is not None:
            alarm.join(_ALARM_JOIN_S)

    # --- polling SKF_EnumDev --------------------------------------------------------------

    def _enum(self) -> list[str]:
        return [name.text for name in self.library.enum_dev(True)]

    def _diff(self, current: list[str]) -> list[SkfEvent]:
        before = self._present or []
        events = [SkfEvent("card_removed", n) for n in before if n not in current]
        events += [SkfEvent("card_inserted", n) for n in current if n not in before]
        self._present = current
        return events

    def _poll_enum(self, timeout_s: float) -> list[SkfEvent]:
        deadline = time.monotonic() + timeout_s
        while True:
            events = self._diff(self._enum())
            if events:
                return events
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            with self._cond:
                self._cond.wait_for(
                    lambda: self._woken or self._closed, min(self.poll_interval_s, remaining)
                )
                if self._woken or self._closed:
                    self._woken = False
                    return []

    # --- SKF_WaitForDevEvent ----------------------------------------------------------------

    def _poll_wait(self, timeout_s: float) -> list[SkfEvent]:
        self._start_alarm()
        with self._cond:
            self._waiting = True
            self._cancel_sent = False
            self._deadline = time.monotonic() + timeout_s
            self._cond.notify_all()
        try:
            event = self.library.wait_for_dev_event()
        except SkfError as exc:
            with self._cond:
                cancelled = self._cancel_sent
            if exc.sar == SAR_NOTSUPPORTYETERR:
                log.info("SKF_WaitForDevEvent is not supported; polling SKF_EnumDev instead")
                self.uses_wait = False
                return []
            if cancelled:
                return []  # how this library reports a cancelled wait
            raise
        finally:
            with self._cond:
                self._waiting = False
                self._woken = False
                self._cond.notify_all()
        name = event.device.text
        present = self._present if self._present is not None else []
        if event.event == t.DEV_EVENT_INSERTED:
            self._present = [*[n for n in present if n != name], name]
            return [SkfEvent("card_inserted", name)]
        if event.event == t.DEV_EVENT_REMOVED:
            self._present = [n for n in present if n != name]
            return [SkfEvent("card_removed", name)]
        return []  # cancelled (event 0) or an event code we do not know

    def _start_alarm(self) -> None:
        if self._alarm is None:
            self._alarm = threading.Thread(
                target=self._run_alarm, name="skf-event-alarm", daemon=True
            )
            self._alarm.start()

    def _run_alarm(self) -> None:
        while True:
            with self._cond:
                while not self._due():
                    if self._closed and not self._waiting:
                        return
                    timeout = self._deadline - time.monotonic() if self._waiting else None
                    self._cond.wait(timeout)
                self._cancel_sent = True
            try:
                self.library.cancel_wait_for_dev_event()
            except CardError as exc:
                log.debug("SKF_CancelWaitForDevEvent: %s", exc)
            with self._cond:
                # Until the wait has returned, cancel again now and then (a cancel that
                # arrived before the wait started may have been forgotten).
                self._cond.wait_for(lambda: not self._waiting, self.cancel_retry_s)

    def _due(self) -> bool:
        """Called with the lock held: should the current wait be cancelled now?"""
        if not self._waiting:
            return False
        return self._woken or self._closed or time.monotonic() >= self._deadline

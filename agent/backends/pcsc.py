"""A real reader through pcscd (`card.pcsc.PcscTransport` + `card.monitor.CardMonitor`)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.backends import BackendEvent, SessionFactory, eport_session
from card.errors import CardError, TransportError

if TYPE_CHECKING:
    from card.eport.driver import CardDriver
    from card.transport import Transport

log = logging.getLogger(__name__)


class PcscBackend:
    """A real reader through pcscd (`card.pcsc.PcscTransport` + `card.monitor.CardMonitor`).

    `reader`: a pattern the reader's name must contain (`CardConfig.reader_pattern()`),
    or None for the first reader holding a card (a kiosk has one). With a pattern,
    events for other readers are ignored.

    Waking: `wake()` only flags the request and returns; a waker thread of this backend
    makes the `CardMonitor.cancel()` call (SCardCancel; the monitor remembers a cancel
    that lands between polls). pcsc-lite's SCardCancel opens a new connection to pcscd
    and waits for its answer without a timeout, so a stopped pcscd holds the caller:
    that must never be the event loop. The monitor and the transport are created on
    the first call from the owner thread: pcsc-lite binds a context to its thread.
    """

    def __init__(
        self,
        reader: re.Pattern[str] | None = None,
        *,
        open_session: SessionFactory = eport_session,
        transport_factory: Callable[[re.Pattern[str] | None], Transport] | None = None,
        monitor_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.reader = reader
        self._open_session = open_session
        self._transport_factory = transport_factory or _pcsc_transport
        self._monitor_factory = monitor_factory or _pcsc_monitor
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._monitor: Any = None  # card.monitor.CardMonitor, created in the owner thread
        self._wake_pending = False
        self._closed = False
        self._cancel_requested = threading.Event()
        self._waker: threading.Thread | None = None

    def open_driver(self) -> CardDriver:
        self.drop_driver()
        transport = self._transport_factory(self.reader)
        try:
            driver = self._open_session(transport)
        except BaseException:
            _close_quietly(transport)
            raise
        self._transport = transport
        return driver

    def drop_driver(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            _close_quietly(transport)

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        with self._lock:
            if self._wake_pending or self._closed:
                self._wake_pending = False
                return []
            monitor = self._monitor
            if monitor is None:
                # pcsc-lite wants one context per thread: create it in the owner thread.
                monitor = self._monitor = self._monitor_factory()
        try:
            raw = monitor.poll(max(0, int(timeout_s * 1000)))
        except TransportError:
            # pcscd went away or restarted: the context is dead, make a new one next time.
            with self._lock:
                self._monitor = None
            _close_quietly(monitor)
            raise
        finally:
            with self._lock:
                self._wake_pending = False
        return [
            BackendEvent(ev.kind, ev.reader, ev.atr)
            for ev in raw
            if self.reader is None or self.reader.search(ev.reader)
        ]

    def wake(self) -> None:
        with self._lock:
            self._wake_pending = True
            if self._monitor is None or self._closed:
                return  # no poll to cut short: the flag covers the next one
            if self._waker is None:
                self._waker = threading.Thread(
                    target=self._waker_main, name="pcsc-waker", daemon=True
                )
                self._waker.start()
        self._cancel_requested.set()

    def _waker_main(self) -> None:
        # Wake-ups that arrive while a cancel is still stuck in pcscd collapse into one.
        while True:
            self._cancel_requested.wait()
            self._cancel_requested.clear()
            with self._lock:
                if self._closed:
                    return
                monitor = self._monitor
            if monitor is not None:
                try:
                    monitor.cancel()
                except Exception as exc:  # a dead context: the poll fails on its own
                    log.debug("SCardCancel failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            monitor, self._monitor = self._monitor, None
        self._cancel_requested.set()  # lets the waker thread see `_closed` and exit
        self.drop_driver()
        if monitor is not None:
            _close_quietly(monitor)


def _pcsc_transport(reader: re.Pattern[str] | None) -> Transport:
    from card.pcsc import PcscTransport

    return PcscTransport(reader)


def _pcsc_monitor() -> Any:
    from card.monitor import CardMonitor

    return CardMonitor()


def _close_quietly(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except CardError as exc:
        log.debug("ignoring error on close: %s", exc)

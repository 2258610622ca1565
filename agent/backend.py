"""Where the card owner thread gets its card from: the simulated card or PC/SC.

A `CardBackend` is used by exactly one thread (the agent's card owner thread), with one
exception: `wake()` may be called from any thread to end a blocking `poll_events` early.
Everything that touches a card or pcscd happens in the owner thread.

The PC/SC modules (and through them pyscard) are imported lazily, so the simulated
backend works on a machine without pyscard. The simulator is imported lazily too: the
agent depends on it only to build the simulated backend.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from card.errors import CardError, CardMissing, TransportError

if TYPE_CHECKING:
    from card.eport.driver import CardDriver
    from card.transport import Transport
    from simulator.virtual import VirtualCard

log = logging.getLogger(__name__)

EventKind = Literal["reader_added", "reader_removed", "card_inserted", "card_removed"]

SessionFactory = Callable[["Transport"], "CardDriver"]


@dataclass(frozen=True)
class BackendEvent:
    """A reader or card change seen by a backend (mirrors `card.monitor.CardEvent`,
    which we do not import here so that this module needs no pyscard)."""

    kind: EventKind
    reader: str
    atr: bytes | None = None


class BackendEventQueue:
    """Events waiting for the owner thread's next `poll_events`, with `CardBackend`'s
    wake-up contract: `push`, `wake` and `close` from any thread; `wait` (the owner
    thread) blocks up to a timeout until there is an event, a wake-up or the close."""

    def __init__(self, initial: tuple[BackendEvent, ...] = ()) -> None:
        self._cond = threading.Condition()
        self._events: deque[BackendEvent] = deque(initial)
        self._woken = False
        self._closed = False

    def push(self, *events: BackendEvent) -> None:
        with self._cond:
            self._events.extend(events)
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait(self, timeout_s: float) -> list[BackendEvent]:
        """What arrived (maybe nothing: woken, closed, or the timeout)."""
        with self._cond:
            self._cond.wait_for(
                lambda: bool(self._events) or self._woken or self._closed,
                timeout=max(0.0, timeout_s),
            )
            events = list(self._events)
            self._events.clear()
            self._woken = False
            return events


class CardBackend(Protocol):
    def open_driver(self) -> CardDriver:
        """Connect to the card and open a driver on it.

        Raises `card.errors` types (CardMissing, ReaderMissing, ServiceUnavailable,
        ReaderBusy, UnsupportedCard, ...) when it cannot. A previous driver, if any, is
        released first.
        """
        ...

    def drop_driver(self) -> None:
        """Forget the current driver and release what it held. Idempotent."""
        ...

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        """Block up to `timeout_s` for reader/card events; `wake()` ends it early (then
        possibly with an empty list). The first call reports the current state."""
        ...

    def wake(self) -> None:
        """Thread-safe: make the current (or the next) `poll_events` return soon."""
        ...

    def close(self) -> None:
        """Release everything. Called from the owner thread when it exits."""
        ...


def _eport_session(transport: Transport) -> CardDriver:
    from card.eport.session import EPortSession

    session = EPortSession.open(transport)
    # A card can come to us still verified: PC/SC connections leave the card's state as
    # the previous holder left it (LEAVE_CARD), and a restarted agent has no session
    # for it. Start every driver from "not verified" so no one signs on someone else's PIN.
    session.logout()
    return session


# --- simulated card --------------------------------------------------------------


class SimulatedBackend:
    """A software card in a software reader, in process.

    `pull_card()` / `insert_card()` simulate a card pull and re-insertion from any
    thread (tests, an admin or demo command): the transport starts failing with
    CardRemoved at once, and the owner thread sees card_removed / card_inserted.
    """

    def __init__(
        self,
        card: VirtualCard,
        *,
        reader_name: str = "Simulated E-Port Reader 00",
        open_session: SessionFactory = _eport_session,
    ) -> None:
        from simulator.inprocess import InProcessTransport

        self.card = card
        self.reader_name = reader_name
        self._open_session = open_session
        self._transport = InProcessTransport(card)
        self._lock = threading.Lock()  # card presence, and the transport with it
        self._present = True
        self._events = BackendEventQueue(
            (
                BackendEvent("reader_added", reader_name),
                BackendEvent("card_inserted", reader_name, card.atr),
            )
        )

    @property
    def card_present(self) -> bool:
        with self._lock:
            return self._present

    def open_driver(self) -> CardDriver:
        with self._lock:
            present = self._present
        if not present:
            raise CardMissing(f"no card in {self.reader_name}")
        # The transport lives as long as the backend; a pull/insert bumps its
        # generation, and a new session selects the application afresh.
        return self._open_session(self._transport)

    def drop_driver(self) -> None:
        pass  # the session holds nothing but the shared transport

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        return self._events.wait(timeout_s)

    def wake(self) -> None:
        self._events.wake()

    def pull_card(self) -> None:
        """Take the card out of the reader (no-op when it is already out)."""
        with self._lock:
            if not self._present:
                return
            self._present = False
            self._transport.remove()
            # Under the lock: a pull and an insert from two threads report in order.
            self._events.push(BackendEvent("card_removed", self.reader_name))

    def insert_card(self, card: VirtualCard | None = None) -> None:
        """Put the card back, or another card (no-op when a card is in)."""
        with self._lock:
            if self._present:
                return
            self._transport.insert(card)
            if card is not None:
                self.card = card
            self._present = True
            self._events.push(BackendEvent("card_inserted", self.reader_name, self.card.atr))

    def close(self) -> None:
        self._events.close()
        self._transport.close()


# --- PC/SC -----------------------------------------------------------------------


ReaderPattern = str | re.Pattern[str] | None


def reader_regex(pattern: ReaderPattern) -> re.Pattern[str] | None:
    """A plain string is a case-insensitive substring of the reader name."""
    if pattern is None or isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(re.escape(pattern), re.IGNORECASE)


class PcscBackend:
    """A real reader through pcscd (`card.pcsc.PcscTransport` + `card.monitor.CardMonitor`).

    `reader`: a case-insensitive substring of the reader name, a compiled regex, or
    None for the first reader holding a card (a kiosk has one). With a pattern, events
    for other readers are ignored.

    Waking: `wake()` only flags the request and returns; a waker thread of this backend
    makes the `CardMonitor.cancel()` call (SCardCancel; the monitor remembers a cancel
    that lands between polls). pcsc-lite's SCardCancel opens a new connection to pcscd
    and waits for its answer without a timeout, so a stopped pcscd holds the caller:
    that must never be the event loop. The monitor and the transport are created on
    the first call from the owner thread: pcsc-lite binds a context to its thread.
    """

    def __init__(
        self,
        reader: ReaderPattern = None,
        *,
        open_session: SessionFactory = _eport_session,
        transport_factory: Callable[[re.Pattern[str] | None], Transport] | None = None,
        monitor_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.reader = reader_regex(reader)
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

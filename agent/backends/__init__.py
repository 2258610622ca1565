"""Where the card owner thread gets its card from: one module per kind of reader
(`simulated`, `pcsc`, `skf`), behind the `CardBackend` protocol defined here.

A `CardBackend` is used by exactly one thread (the agent's card owner thread), with one
exception: `wake()` may be called from any thread to end a blocking `poll_events` early.
Everything that touches a card, pcscd or a vendor library happens in the owner thread.

Backends are imported by the runtime only for the configured kind, so the simulated
backend works on a machine without pyscard, and the agent depends on the simulator only
to build the simulated backend.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from card.eport.driver import CardDriver
    from card.identify import DriverInfo, IdentifyReport
    from card.transport import Transport

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

    def driver_info(self) -> DriverInfo:
        """Which driver the current one is and why it was chosen (the registry entry,
        the built-in fallback). Raises CardMissing when no driver is open."""
        ...

    def identify(self) -> IdentifyReport:
        """What the card in the reader is (card.identify), without changing it: called
        with no driver open (the owner releases it first). Raises CardMissing when
        there is no card."""
        ...


def eport_session(transport: Transport) -> CardDriver:
    from card.eport.session import EPortSession

    session = EPortSession.open(transport)
    # A card can come to us still verified: PC/SC connections leave the card's state as
    # the previous holder left it (LEAVE_CARD), and a restarted agent has no session
    # for it. Start every driver from "not verified" so no one signs on someone else's PIN.
    session.logout()
    return session

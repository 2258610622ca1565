"""A software card in a software reader, in the agent's process (demo and training
kiosks, tests)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from agent.backends import (
    BackendEvent,
    BackendEventQueue,
    SessionFactory,
    eport_session,
)
from card.errors import CardMissing
from card.identify import (
    DriverInfo,
    IdentifyReport,
    atr_report,
    registry_report,
    select_report,
)
from card.registry import Observation

if TYPE_CHECKING:
    from card.eport.driver import CardDriver
    from card.registry import Registry
    from simulator.virtual import VirtualCard

_DRIVER = DriverInfo("eport-apdu", "the built-in APDU profile (simulated backend)")


class SimulatedBackend:
    """A software card in a software reader, in process.

    `pull_card()` / `insert_card()` simulate a card pull and re-insertion from any
    thread (tests, an admin or demo command): the transport starts failing with
    CardRemoved at once, and the owner thread sees card_removed / card_inserted.

    The simulated card always gets the built-in APDU profile; `registry` is only
    consulted for `identify` (what a PC/SC kiosk would match this card with).
    """

    def __init__(
        self,
        card: VirtualCard,
        *,
        reader_name: str = "Simulated E-Port Reader 00",
        open_session: SessionFactory = eport_session,
        registry: Registry | None = None,
    ) -> None:
        from simulator.inprocess import InProcessTransport

        self.card = card
        self.reader_name = reader_name
        self.registry = registry
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

    def driver_info(self) -> DriverInfo:
        return _DRIVER

    def identify(self) -> IdentifyReport:
        with self._lock:
            present = self._present
        if not present:
            raise CardMissing(f"no card in {self.reader_name}")
        atr = self._transport.atr
        seen = Observation(atr=atr, reader=self.reader_name)
        return IdentifyReport(
            backend="simulated",
            reader=self.reader_name,
            atr=atr_report(atr),
            registry=registry_report(self.registry, seen) if self.registry else None,
            applications=select_report(self._transport),
            notes=("the simulated backend always uses the built-in APDU profile",),
        )

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

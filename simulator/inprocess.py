"""A `card.transport.Transport` straight to a software card, no PC/SC in between.

Behaves like a reader with the card inserted: constructing it powers the card,
`remove()` / `insert()` simulate a card pull (possibly inserting a different card),
`reset()` warm-resets it, and `generation` counts every event after which the host must
forget what it knew about the card (as the PC/SC transport does).
"""

from __future__ import annotations

import threading

from card.errors import CardRemoved, TransportClosed
from simulator.virtual import VirtualCard


class InProcessTransport:
    def __init__(self, card: VirtualCard) -> None:
        self._card = card
        self._generation = 0
        self._removed = False
        self._closed = False
        # remove()/insert() may come from a test thread while the owner thread transmits.
        self._lock = threading.Lock()
        card.power_on()

    @property
    def card(self) -> VirtualCard:
        return self._card

    @property
    def removed(self) -> bool:
        return self._removed

    @property
    def atr(self) -> bytes:
        with self._lock:
            self._check()
            return self._card.atr

    @property
    def generation(self) -> int:
        return self._generation

    def transmit(self, apdu: bytes) -> bytes:
        with self._lock:
            self._check()
            return self._card.process(bytes(apdu))

    def reset(self) -> None:
        with self._lock:
            self._check()
            self._card.reset()
            self._generation += 1

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._removed:
                self._card.power_off()  # like disconnecting with "unpower card"

    # --- simulated card movements ----------------------------------------------------

    def remove(self) -> None:
        """Pull the card: it loses power (and its security state); transmit raises
        CardRemoved until `insert()`."""
        with self._lock:
            if self._removed or self._closed:
                return
            self._removed = True
            self._card.power_off()

    def insert(self, card: VirtualCard | None = None) -> None:
        """Insert the card again (or another one): powered anew, new generation."""
        with self._lock:
            if self._closed:
                raise TransportClosed("transport closed")
            if card is not None:
                if not self._removed:
                    self._card.power_off()
                self._card = card
            elif not self._removed:
                return
            self._card.power_on()
            self._removed = False
            self._generation += 1

    def _check(self) -> None:
        if self._closed:
            raise TransportClosed("transport closed")
        if self._removed:
            raise CardRemoved("card removed from the simulated reader")

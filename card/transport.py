"""The link to a card: bytes in, bytes out.

A `Transport` knows nothing of APDU semantics (no 61xx handling, no chaining): it
moves one command APDU to the card and returns the raw response including SW1 SW2.
Implementations: `simulator.inprocess.InProcessTransport` (straight to the software
card) and `card.pcsc.PcscTransport` (pyscard -> pcscd -> reader).

Transports are not thread-safe: one thread owns a transport (see the agent's card
owner thread).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Transport(Protocol):
    @property
    def atr(self) -> bytes:
        """The card's answer-to-reset."""
        ...

    @property
    def generation(self) -> int:
        """Bumped every time the card was reset, re-inserted or reconnected.

        Anything cached about the card (selected application, verified PIN) is only
        valid for the generation it was obtained in.
        """
        ...

    def transmit(self, apdu: bytes) -> bytes:
        """Send one command APDU, return response data + SW1 SW2.

        Raises `card.errors.TransportError` subclasses on link failures.
        """
        ...

    def reset(self) -> None:
        """Warm-reset the card: its security state is cleared."""
        ...

    def close(self) -> None:
        """Release the card. Idempotent."""
        ...

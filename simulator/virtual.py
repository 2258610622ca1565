"""What a card looks like to whatever carries its APDUs (in-process or vpcd)."""

from __future__ import annotations

from typing import Protocol


class VirtualCard(Protocol):
    @property
    def atr(self) -> bytes: ...

    def power_on(self) -> None: ...

    def power_off(self) -> None:
        """Loses the security state (verified PIN, selected files)."""
        ...

    def reset(self) -> None:
        """Warm reset: loses the security state like power off + on."""
        ...

    def process(self, apdu: bytes) -> bytes:
        """Handle one command APDU; return response data + SW. Never raises for bad
        input: malformed commands get ISO error status words."""
        ...

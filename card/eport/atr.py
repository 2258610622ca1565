"""Known E-Port ATRs, as data.

The ATR alone never decides whether a card is supported (the application select
does); this table only lets reader selection prefer a reader holding a known card and
lets the self-test name what it sees. A new card type is a new row, not new code.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AtrPattern:
    atr: bytes
    mask: bytes
    description: str

    def matches(self, atr: bytes) -> bool:
        if len(atr) != len(self.atr):
            return False
        return all((a & m) == (p & m) for a, p, m in zip(atr, self.atr, self.mask, strict=True))


def _exact(hex_atr: str, description: str) -> AtrPattern:
    atr = bytes.fromhex(hex_atr)
    return AtrPattern(atr, b"\xff" * len(atr), description)


KNOWN_ATRS: tuple[AtrPattern, ...] = (
    # The software card (simulator), any serial suffix "EPORT-SIMnnn" and any TCK.
    AtrPattern(
        bytes.fromhex("3B8C800145504F52542D53494D00000000"),
        bytes.fromhex("FFFFFFFFFFFFFFFFFFFFFFFFFF00000000"),
        "card-agent simulated E-Port card",
    ),
)


def describe_atr(atr: bytes) -> str | None:
    for pattern in KNOWN_ATRS:
        if pattern.matches(atr):
            return pattern.description
    return None


def is_known_atr(atr: bytes) -> bool:
    return describe_atr(atr) is not None

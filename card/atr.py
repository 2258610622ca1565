"""Parsing an answer-to-reset (ISO/IEC 7816-3 clause 8): what a kiosk's reader reports.

`parse_atr` splits an ATR into TS, T0, the interface bytes TAi/TBi/TCi/TDi, the
historical bytes and TCK, lists the protocols offered and checks TCK. It is for naming
and matching cards (`card.registry`, support reports); whether a card is supported is
still decided by talking to it.

The bytes are taken as PC/SC reports them: a reader has already decoded an
inverse-convention card, so TS 3F only says which convention the card uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from card.errors import ProtocolError

MAX_ATR_LEN = 33  # TS + 32 characters (ISO 7816-3 8.2.1)
_CONVENTIONS: dict[int, Literal["direct", "inverse"]] = {0x3B: "direct", 0x3F: "inverse"}
_GLOBAL_T = 15  # "T=15" in TDi announces global interface bytes, not a protocol


class AtrError(ProtocolError):
    """Bytes that are not a well-formed ATR."""


@dataclass(frozen=True)
class InterfaceBytes:
    """TAi, TBi, TCi and TDi of one group (i counts from 1); None when absent."""

    index: int
    ta: int | None = None
    tb: int | None = None
    tc: int | None = None
    td: int | None = None

    @property
    def protocol(self) -> int | None:
        """The T that TDi indicates for the next group, if there is a TDi."""
        return None if self.td is None else self.td & 0x0F


@dataclass(frozen=True)
class Atr:
    raw: bytes
    convention: Literal["direct", "inverse"]
    t0: int
    interface: tuple[InterfaceBytes, ...]
    historical: bytes
    tck: int | None

    @property
    def protocols(self) -> tuple[int, ...]:
        """Protocols offered (T=0, T=1, ...), in the order the ATR names them. Without
        TD1 only T=0 is offered."""
        named: list[int] = []
        for group in self.interface:
            t = group.protocol
            if t is not None and t != _GLOBAL_T and t not in named:
                named.append(t)
        return tuple(named) if named else (0,)

    @property
    def tck_required(self) -> bool:
        """TCK must be present unless only T=0 is indicated."""
        return any(g.protocol not in (None, 0) for g in self.interface)

    @property
    def tck_valid(self) -> bool | None:
        """Whether T0..TCK XOR to zero; None when the ATR has no TCK."""
        if self.tck is None:
            return None
        check = 0
        for b in self.raw[1:]:
            check ^= b
        return check == 0

    def hex(self) -> str:
        return self.raw.hex(" ").upper()

    def describe(self) -> str:
        """One line for a support report."""
        protocols = ", ".join(f"T={t}" for t in self.protocols)
        tck = {None: "no TCK", True: "TCK ok", False: "TCK WRONG"}[self.tck_valid]
        shown = self.historical.decode("ascii", "replace") if self.historical else ""
        printable = "".join(c if c.isprintable() else "." for c in shown)
        return (
            f"{self.hex()}: {self.convention} convention, {protocols}, "
            f"{len(self.historical)} historical bytes {printable!r}, {tck}"
        )


def parse_atr(data: bytes) -> Atr:
    """Parse `data`; structural errors (truncation, a bad TS, bytes left over, a missing
    required TCK) raise AtrError. A TCK that does not check is reported, not raised:
    `tck_valid` is False."""
    data = bytes(data)
    if len(data) < 2:
        raise AtrError(f"an ATR has at least TS and T0, got {len(data)} bytes")
    if len(data) > MAX_ATR_LEN:
        raise AtrError(f"an ATR has at most {MAX_ATR_LEN} bytes, got {len(data)}")
    convention = _CONVENTIONS.get(data[0])
    if convention is None:
        raise AtrError(f"TS must be 3B (direct) or 3F (inverse), got {data[0]:02X}")
    t0 = data[1]
    presence, historical_count = t0 >> 4, t0 & 0x0F
    pos = 2
    groups: list[InterfaceBytes] = []
    index = 1
    while True:
        values: dict[str, int | None] = {}
        for bit, name in ((0x1, "ta"), (0x2, "tb"), (0x4, "tc"), (0x8, "td")):
            if presence & bit:
                if pos >= len(data):
                    raise AtrError(f"ATR ends before T{name[1].upper()}{index}")
                values[name] = data[pos]
                pos += 1
        group = InterfaceBytes(index, **values)
        groups.append(group)
        if group.td is None:
            break
        presence = group.td >> 4
        index += 1
    end = pos + historical_count
    if end > len(data):
        raise AtrError(
            f"T0 announces {historical_count} historical bytes, {len(data) - pos} are left"
        )
    historical = data[pos:end]
    atr_without_tck = Atr(data[:end], convention, t0, tuple(groups), historical, None)
    leftover = len(data) - end
    if atr_without_tck.tck_required and leftover == 0:
        raise AtrError("TCK is missing (required when a protocol other than T=0 is offered)")
    if leftover > 1:
        raise AtrError(f"{leftover} bytes after the historical bytes (at most TCK may follow)")
    # A TCK on a T=0-only ATR is not required but some cards send one: keep and check it.
    tck = data[end] if leftover else None
    return Atr(data, convention, t0, tuple(groups), historical, tck)

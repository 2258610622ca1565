"""ISO 7816-4 command and response APDUs: encoding and strict decoding.

Cases 1-4 in short and extended form. `Le` is kept as the number of bytes expected
(1..65536); the wire forms 00 (short, 256) and 0000 (extended, 65536) are handled
here and nowhere else. Decoding never raises anything but `ApduFormatError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from card.errors import ApduFormatError

SHORT_MAX_LC = 255
SHORT_MAX_LE = 256
EXTENDED_MAX_LC = 65535
EXTENDED_MAX_LE = 65536
CLA_CHAINING = 0x10

# ISO 7816-4 instructions whose command data is reference data (PINs, unblock codes):
# VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER (both parities), and DISABLE /
# ENABLE VERIFICATION REQUIREMENT (26 / 28), whose data field is verification data too.
SECRET_INS = frozenset({0x20, 0x21, 0x24, 0x25, 0x26, 0x28, 0x2C, 0x2D})


@dataclass(frozen=True, slots=True)
class CommandApdu:
    cla: int
    ins: int
    p1: int
    p2: int
    data: bytes = b""
    le: int | None = None  # expected response length; None = no Le field
    # The short/default encoding, computed once: the command is immutable.
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (
            0 <= self.cla <= 0xFF
            and 0 <= self.ins <= 0xFF
            and 0 <= self.p1 <= 0xFF
            and 0 <= self.p2 <= 0xFF
        ):
            for name in ("cla", "ins", "p1", "p2"):
                value = getattr(self, name)
                if not 0 <= value <= 0xFF:
                    raise ApduFormatError(f"{name.upper()} out of range: {value}")
        if len(self.data) > EXTENDED_MAX_LC:
            raise ApduFormatError(f"command data too long: {len(self.data)} bytes")
        if self.le is not None and not 1 <= self.le <= EXTENDED_MAX_LE:
            raise ApduFormatError(f"Le out of range: {self.le}")

    @property
    def needs_extended(self) -> bool:
        return len(self.data) > SHORT_MAX_LC or (self.le is not None and self.le > SHORT_MAX_LE)

    def encode(self, *, extended: bool | None = None) -> bytes:
        """Wire bytes. `extended=None` picks short unless the fields need extended."""
        if not extended and self._wire is not None:
            return self._wire
        wire = self._encode(extended)
        if not extended and not self.needs_extended:
            object.__setattr__(self, "_wire", wire)
        return wire

    def _encode(self, extended: bool | None) -> bytes:
        if extended is None:
            extended = self.needs_extended
        elif not extended and self.needs_extended:
            raise ApduFormatError("command does not fit the short encoding")
        header = bytes((self.cla, self.ins, self.p1, self.p2))
        data, le = self.data, self.le
        if not extended:
            body = bytes((len(data),)) + data if data else b""
            if le is not None:
                body += bytes((le & 0xFF,))  # 256 -> 00
            return header + body
        if not data and le is None:
            return header  # case 1 has no extended form
        body = b"\x00"
        if data:
            body += len(data).to_bytes(2, "big") + data
        if le is not None:
            body += (le & 0xFFFF).to_bytes(2, "big")  # 65536 -> 0000
        return header + body

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def decode(cls, raw: bytes) -> CommandApdu:
        """Strictly parse a command APDU (any case, short or extended)."""
        n = len(raw)
        if n < 4:
            raise ApduFormatError(f"command APDU too short: {n} bytes")
        cla, ins, p1, p2 = raw[0], raw[1], raw[2], raw[3]
        if n == 4:
            return cls(cla, ins, p1, p2)
        b4 = raw[4]
        if n == 5:
            return cls(cla, ins, p1, p2, b"", b4 or SHORT_MAX_LE)
        if b4 != 0:
            if n == 5 + b4:
                return cls(cla, ins, p1, p2, bytes(raw[5:]))
            if n == 6 + b4:
                return cls(cla, ins, p1, p2, bytes(raw[5:-1]), raw[-1] or SHORT_MAX_LE)
            raise ApduFormatError(f"Lc={b4} does not match a command of {n} bytes")
        # b4 == 0 and more bytes follow: extended length
        if n == 7:
            return cls(cla, ins, p1, p2, b"", int.from_bytes(raw[5:7], "big") or EXTENDED_MAX_LE)
        if n < 8:
            raise ApduFormatError(f"truncated extended-length command: {n} bytes")
        lc = int.from_bytes(raw[5:7], "big")
        if lc == 0:
            raise ApduFormatError("extended Lc of zero")
        if n == 7 + lc:
            return cls(cla, ins, p1, p2, bytes(raw[7:]))
        if n == 9 + lc:
            le = int.from_bytes(raw[-2:], "big") or EXTENDED_MAX_LE
            return cls(cla, ins, p1, p2, bytes(raw[7:-2]), le)
        raise ApduFormatError(f"extended Lc={lc} does not match a command of {n} bytes")

    def with_le(self, le: int | None) -> CommandApdu:
        return CommandApdu(self.cla, self.ins, self.p1, self.p2, self.data, le)

    def redacted(self) -> str:
        """Hex for logs, with the data of PIN commands masked."""
        head = f"{self.cla:02X}{self.ins:02X}{self.p1:02X}{self.p2:02X}"
        if self.data:
            shown = "**" * len(self.data) if self.ins in SECRET_INS else self.data.hex().upper()
            head += f" Lc={len(self.data)} {shown}"
        if self.le is not None:
            head += f" Le={self.le}"
        return head


class ResponseApdu(NamedTuple):
    """A response: data and SW. A NamedTuple rather than a frozen dataclass because one is
    built per APDU and tuple construction is the cheapest immutable object Python has
    (through pcscd, host CPU between APDUs costs throughput several times over)."""

    data: bytes
    sw: int

    @property
    def sw1(self) -> int:
        return self.sw >> 8

    @property
    def sw2(self) -> int:
        return self.sw & 0xFF

    @property
    def ok(self) -> bool:
        return self.sw == 0x9000

    def encode(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    def __bytes__(self) -> bytes:
        return self.encode()

    @classmethod
    def decode(cls, raw: bytes) -> ResponseApdu:
        if len(raw) < 2:
            raise ApduFormatError(f"response APDU too short: {len(raw)} bytes")
        return cls(bytes(raw[:-2]), (raw[-2] << 8) | raw[-1])

    def redacted(self) -> str:
        """Length and SW, and only the first bytes of data: responses can carry
        personal data (holder names), which has no place in a debug log."""
        if not self.data:
            return f"{self.sw:04X}"
        head = self.data[:8].hex().upper()
        more = "…" if len(self.data) > 8 else ""
        return f"[{len(self.data)}] {head}{more} {self.sw:04X}"

"""A small strict DER codec: enough to build and read X.509 certificates and SM2 signatures.

Strict because the bytes come from cards and certificates we did not make, and a
signature that round-trips through a lenient parser can be malleable: lengths must be
definite and minimal, tags single-byte, INTEGERs and OIDs minimally encoded, BOOLEANs
00/FF, BIT STRING padding bits zero. Every malformation raises `ProtocolError` (never
IndexError or UnicodeDecodeError). SET OF ordering is produced on encode but not
checked on decode.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import UTC, datetime

from card.errors import ProtocolError

BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OBJECT_IDENTIFIER = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
T61_STRING = 0x14
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
UNIVERSAL_STRING = 0x1C
BMP_STRING = 0x1E
SEQUENCE = 0x30
SET = 0x31

CONSTRUCTED = 0x20
CONTEXT = 0x80

_PRINTABLE = frozenset(string.ascii_letters + string.digits + " '()+,-./:=?")
_STRING_CODECS = {
    UTF8_STRING: "utf-8",
    PRINTABLE_STRING: "ascii",
    IA5_STRING: "ascii",
    T61_STRING: "latin-1",  # what real-world T61 content is in practice
    BMP_STRING: "utf-16-be",
    UNIVERSAL_STRING: "utf-32-be",
}
_MAX_LENGTH_OCTETS = 4  # 4 GiB is far beyond any certificate; longer is garbage


def context_tag(number: int, *, constructed: bool) -> int:
    """The identifier octet of `[number]` (context class)."""
    if not 0 <= number < 31:
        raise ValueError(f"context tag number {number} needs the high-tag form")
    return CONTEXT | (CONSTRUCTED if constructed else 0) | number


# --- encoding ----------------------------------------------------------------------


def tlv(tag: int, content: bytes) -> bytes:
    if not 0 <= tag <= 0xFF or tag & 0x1F == 0x1F:
        raise ValueError(f"unsupported tag {tag:#x}")
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    length = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def sequence(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    # X.690 11.6: DER orders SET OF components by their encodings.
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    magnitude_bits = value.bit_length() if value >= 0 else (~value).bit_length()
    return tlv(INTEGER, value.to_bytes(magnitude_bits // 8 + 1, "big", signed=True))


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def null() -> bytes:
    return tlv(NULL, b"")


def object_identifier(dotted: str) -> bytes:
    try:
        arcs = [int(part) for part in dotted.split(".")]
    except ValueError:
        raise ValueError(f"not a dotted OID: {dotted!r}") from None
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] >= 40) or min(arcs) < 0:
        raise ValueError(f"invalid OID {dotted!r}")
    out = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return tlv(OBJECT_IDENTIFIER, bytes(out))


def bit_string(data: bytes, unused_bits: int = 0) -> bytes:
    if not 0 <= unused_bits <= 7 or (unused_bits and not data):
        raise ValueError(f"invalid unused-bit count {unused_bits}")
    if unused_bits and data[-1] & ((1 << unused_bits) - 1):
        raise ValueError("DER requires the unused bits of a BIT STRING to be zero")
    return tlv(BIT_STRING, bytes((unused_bits,)) + data)


def octet_string(data: bytes) -> bytes:
    return tlv(OCTET_STRING, data)


def utf8_string(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def printable_string(text: str) -> bytes:
    if not set(text) <= _PRINTABLE:
        raise ValueError(f"{text!r} has characters PrintableString cannot carry")
    return tlv(PRINTABLE_STRING, text.encode("ascii"))


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("certificate times must be timezone-aware")
    # X.509 times have whole-second resolution; sub-second parts are dropped.
    return moment.astimezone(UTC).replace(microsecond=0)


def utc_time(moment: datetime) -> bytes:
    moment = _utc(moment)
    if not 1950 <= moment.year <= 2049:
        raise ValueError(f"UTCTime cannot express the year {moment.year}")
    return tlv(UTC_TIME, moment.strftime("%y%m%d%H%M%SZ").encode("ascii"))


def generalized_time(moment: datetime) -> bytes:
    moment = _utc(moment)
    return tlv(GENERALIZED_TIME, f"{moment.year:04d}{moment:%m%d%H%M%S}Z".encode("ascii"))


def x509_time(moment: datetime) -> bytes:
    """RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050."""
    return utc_time(moment) if _utc(moment).year < 2050 else generalized_time(moment)


def explicit(number: int, inner: bytes) -> bytes:
    return tlv(context_tag(number, constructed=True), inner)


def implicit(number: int, encoded: bytes) -> bytes:
    """Retag a complete encoding as `[number] IMPLICIT`, keeping its constructed bit."""
    element = decode(encoded)
    return tlv(context_tag(number, constructed=element.constructed), element.content)


# --- decoding ----------------------------------------------------------------------


@dataclass(frozen=True)
class Element:
    """One decoded TLV. `encoded` is the exact input bytes (for signatures over TBS)."""

    tag: int
    content: bytes
    encoded: bytes

    @property
    def constructed(self) -> bool:
        return bool(self.tag & CONSTRUCTED)

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise ProtocolError(f"{what}: expected tag {tag:#04x}, found {self.tag:#04x}")
        return self

    def children(self) -> list[Element]:
        if not self.constructed:
            raise ProtocolError(f"tag {self.tag:#04x} is primitive, it has no children")
        return decode_all(self.content)

    def integer(self) -> int:
        self.expect(INTEGER, "INTEGER")
        c = self.content
        if not c:
            raise ProtocolError("empty INTEGER")
        if len(c) > 1 and ((c[0] == 0 and c[1] < 0x80) or (c[0] == 0xFF and c[1] >= 0x80)):
            raise ProtocolError("INTEGER is not minimally encoded")
        return int.from_bytes(c, "big", signed=True)

    def boolean(self) -> bool:
        self.expect(BOOLEAN, "BOOLEAN")
        if self.content not in (b"\x00", b"\xff"):
            raise ProtocolError("BOOLEAN must be a single 00 or FF octet in DER")
        return self.content == b"\xff"

    def null(self) -> None:
        self.expect(NULL, "NULL")
        if self.content:
            raise ProtocolError("NULL with content")

    def oid(self) -> str:
        self.expect(OBJECT_IDENTIFIER, "OBJECT IDENTIFIER")
        c = self.content
        if not c or c[-1] & 0x80:
            raise ProtocolError("truncated OBJECT IDENTIFIER")
        arcs: list[int] = []
        value = 0
        start = True
        for octet in c:
            if start and octet == 0x80:
                raise ProtocolError("OBJECT IDENTIFIER arc is not minimally encoded")
            value = (value << 7) | (octet & 0x7F)
            start = not octet & 0x80
            if start:
                arcs.append(value)
                value = 0
        first = min(arcs[0] // 40, 2)
        return ".".join(str(a) for a in [first, arcs[0] - 40 * first, *arcs[1:]])

    def bit_string_with_unused(self) -> tuple[bytes, int]:
        self.expect(BIT_STRING, "BIT STRING")
        c = self.content
        if not c:
            raise ProtocolError("empty BIT STRING")
        unused, data = c[0], c[1:]
        if unused > 7 or (unused and not data):
            raise ProtocolError(f"BIT STRING with {unused} unused bits")
        if unused and data[-1] & ((1 << unused) - 1):
            raise ProtocolError("BIT STRING unused bits are not zero")
        return data, unused

    def bit_string(self) -> bytes:
        """The octets of a BIT STRING that must be whole bytes (keys, signatures)."""
        data, unused = self.bit_string_with_unused()
        if unused:
            raise ProtocolError("expected a whole-octet BIT STRING")
        return data

    def octet_string(self) -> bytes:
        return self.expect(OCTET_STRING, "OCTET STRING").content

    def string(self) -> str:
        """Any of the character string types certificates use in names."""
        codec = _STRING_CODECS.get(self.tag)
        if codec is None:
            raise ProtocolError(f"tag {self.tag:#04x} is not a character string type")
        try:
            text = self.content.decode(codec)
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"string tag {self.tag:#04x} has invalid {codec}") from exc
        if self.tag == PRINTABLE_STRING and not set(text) <= _PRINTABLE:
            raise ProtocolError("PrintableString with characters outside its set")
        return text

    def time(self) -> datetime:
        """UTCTime or GeneralizedTime in the DER form RFC 5280 requires, as aware UTC."""
        text = self.content.decode("ascii", errors="replace")
        if self.tag == UTC_TIME and len(text) == 13:
            year = int(text[:2]) if text[:2].isdigit() else -1
            text = ("19" if year >= 50 else "20") + text
        elif self.tag != GENERALIZED_TIME or len(text) != 15:
            raise ProtocolError(f"not a DER UTCTime/GeneralizedTime: tag {self.tag:#04x} {text!r}")
        if not (text[:14].isdigit() and text[:14].isascii() and text[14] == "Z"):
            raise ProtocolError(f"malformed time {text!r}")
        try:
            return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError as exc:
            raise ProtocolError(f"invalid date/time {text!r}") from exc


def read_element(data: bytes, offset: int = 0) -> tuple[Element, int]:
    """Decode the TLV at `offset`; return it and the offset just past it."""
    end = len(data)
    if offset + 2 > end:
        raise ProtocolError(f"truncated DER at offset {offset}")
    tag, first = data[offset], data[offset + 1]
    if tag & 0x1F == 0x1F:
        raise ProtocolError(f"high-tag-number form at offset {offset} is not supported")
    pos = offset + 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ProtocolError(f"indefinite length at offset {offset} is not DER")
    else:
        count = first & 0x7F
        if count > _MAX_LENGTH_OCTETS or pos + count > end:
            raise ProtocolError(f"bad length field at offset {offset}")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or data[pos] == 0:
            raise ProtocolError(f"length at offset {offset} is not minimally encoded")
        pos += count
    if pos + length > end:
        raise ProtocolError(
            f"DER element at offset {offset} claims {length} bytes, {end - pos} remain"
        )
    return Element(tag, bytes(data[pos : pos + length]), bytes(data[offset : pos + length])), (
        pos + length
    )


def decode_all(data: bytes) -> list[Element]:
    items: list[Element] = []
    offset = 0
    while offset < len(data):
        item, offset = read_element(data, offset)
        items.append(item)
    return items


def decode(data: bytes) -> Element:
    """Exactly one element, with nothing after it."""
    item, offset = read_element(data)
    if offset != len(data):
        raise ProtocolError(f"{len(data) - offset} trailing bytes after DER element")
    return item

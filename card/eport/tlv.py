"""Strict BER-TLV reading for the profile's FCI and EF.CARDINFO (ISO 7816-4 annex)."""

from __future__ import annotations

from card.errors import ProtocolError


def _read_tag(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise ProtocolError("TLV truncated in tag")
    tag = buf[pos]
    pos += 1
    if tag & 0x1F == 0x1F:  # multi-byte tag
        while True:
            if pos >= len(buf):
                raise ProtocolError("TLV truncated in multi-byte tag")
            b = buf[pos]
            tag = (tag << 8) | b
            pos += 1
            if not b & 0x80:
                break
            if tag > 0xFFFFFF:
                raise ProtocolError("TLV tag longer than 3 bytes")
    return tag, pos


def _read_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise ProtocolError("TLV truncated in length")
    first = buf[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 3:
        raise ProtocolError(f"unsupported TLV length form {first:02X}")
    if pos + count > len(buf):
        raise ProtocolError("TLV truncated in long length")
    return int.from_bytes(buf[pos : pos + count], "big"), pos + count


def parse_tlv(buf: bytes) -> list[tuple[int, bytes]]:
    """Parse a concatenation of TLVs (one level). Raises ProtocolError on any defect."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(buf):
        if buf[pos] in (0x00, 0xFF):  # padding allowed between objects
            pos += 1
            continue
        tag, pos = _read_tag(buf, pos)
        length, pos = _read_length(buf, pos)
        end = pos + length
        if end > len(buf):
            raise ProtocolError(f"TLV {tag:X} claims {length} bytes, {len(buf) - pos} left")
        items.append((tag, bytes(buf[pos:end])))
        pos = end
    return items


def tlv_dict(buf: bytes) -> dict[int, bytes]:
    """One level of TLVs as a dict; a duplicated tag is a protocol error."""
    out: dict[int, bytes] = {}
    for tag, value in parse_tlv(buf):
        if tag in out:
            raise ProtocolError(f"duplicate TLV tag {tag:X}")
        out[tag] = value
    return out


def unwrap(buf: bytes, tag: int) -> bytes:
    """The value of the single constructed object `tag` that makes up `buf`."""
    items = parse_tlv(buf)
    if len(items) != 1 or items[0][0] != tag:
        raise ProtocolError(f"expected one TLV object with tag {tag:X}")
    return items[0][1]


def encode_tlv(tag: int, value: bytes) -> bytes:
    """Encode one TLV (used by the simulator and by tests)."""
    tag_bytes = tag.to_bytes((tag.bit_length() + 7) // 8 or 1, "big")
    n = len(value)
    if n < 0x80:
        length = bytes((n,))
    elif n <= 0xFF:
        length = bytes((0x81, n))
    elif n <= 0xFFFF:
        length = b"\x82" + n.to_bytes(2, "big")
    else:
        length = b"\x83" + n.to_bytes(3, "big")
    return tag_bytes + length + value

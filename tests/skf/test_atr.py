"""card.atr: ISO 7816-3 ATR parsing — interface bytes, protocols, historical bytes, TCK."""

from __future__ import annotations

import pytest

from card.atr import AtrError, InterfaceBytes, parse_atr
from simulator.card_os import build_atr


def _with_tck(body_hex: str) -> bytes:
    """TS + body + the TCK that makes T0..TCK XOR to zero."""
    raw = bytes.fromhex(body_hex)
    tck = 0
    for b in raw[1:]:
        tck ^= b
    return raw + bytes((tck,))


def test_the_simulators_atr() -> None:
    atr = parse_atr(build_atr())
    assert atr.convention == "direct"
    assert atr.t0 == 0x8C
    assert atr.interface == (
        InterfaceBytes(1, td=0x80),
        InterfaceBytes(2, td=0x01),
        InterfaceBytes(3),
    )
    assert atr.protocols == (0, 1)
    assert atr.historical == b"EPORT-SIM001"
    assert atr.tck_required
    assert atr.tck == build_atr()[-1]
    assert atr.tck_valid is True
    assert atr.describe() == (
        "3B 8C 80 01 45 50 4F 52 54 2D 53 49 4D 30 30 31 1A: direct convention, T=0, T=1, "
        "12 historical bytes 'EPORT-SIM001', TCK ok"
    )


def test_t0_only_without_interface_bytes() -> None:
    atr = parse_atr(bytes.fromhex("3B 02 14 50"))
    assert atr.interface == (InterfaceBytes(1),)
    assert atr.protocols == (0,)
    assert atr.historical == b"\x14\x50"
    assert not atr.tck_required
    assert atr.tck is None
    assert atr.tck_valid is None
    assert "no TCK" in atr.describe()


def test_all_interface_bytes_in_three_groups() -> None:
    # TA1 TB1 TC1 TD1 (T=1, TA2 TD2 follow), TA2, TD2 (T=1, TA3 TB3 follow), TA3, TB3
    raw = _with_tck("3B F5 13 00 FF 91 81 31 FE 45" + b"JCOP1".hex())
    atr = parse_atr(raw)
    assert atr.interface == (
        InterfaceBytes(1, ta=0x13, tb=0x00, tc=0xFF, td=0x91),
        InterfaceBytes(2, ta=0x81, td=0x31),
        InterfaceBytes(3, ta=0xFE, tb=0x45),
    )
    assert atr.protocols == (1,)
    assert atr.historical == b"JCOP1"
    assert atr.tck_valid is True


def test_inverse_convention_and_global_bytes() -> None:
    # TD1: T=0; TD2: T=15 (global interface bytes, not a protocol) with TA3
    raw = _with_tck("3F 81 80 1F 03 AA")
    atr = parse_atr(raw)
    assert atr.convention == "inverse"
    assert atr.protocols == (0,)
    assert atr.interface[2] == InterfaceBytes(3, ta=0x03)
    assert atr.tck_required  # T=15 is indicated: not "only T=0"
    assert atr.tck_valid is True


def test_a_wrong_tck_is_reported_not_raised() -> None:
    raw = bytearray(build_atr())
    raw[-1] ^= 0x01
    atr = parse_atr(bytes(raw))
    assert atr.tck_valid is False
    assert "TCK WRONG" in atr.describe()


def test_an_unrequired_tck_on_a_t0_card_is_kept_and_checked() -> None:
    atr = parse_atr(_with_tck("3B 02 14 50"))
    assert not atr.tck_required
    assert atr.tck_valid is True


@pytest.mark.parametrize(
    ("hex_atr", "message"),
    [
        ("", "at least TS and T0"),
        ("3B", "at least TS and T0"),
        ("3A 00", "TS must be 3B"),
        ("3B 10", "ends before TA1"),
        ("3B 80", "ends before TD1"),
        ("3B 80 90", "ends before TA2"),
        ("3B 05 01 02", "announces 5 historical bytes, 2 are left"),
        ("3B 80 01", "TCK is missing"),
        ("3B 01 00 11 22", "2 bytes after the historical bytes"),
        ("3B 0F" + " 00" * 15 + " 00 00", "2 bytes after"),
        ("3B" + " 00" * 33, "at most 33 bytes"),
    ],
)
def test_malformed_atrs(hex_atr: str, message: str) -> None:
    with pytest.raises(AtrError, match=message):
        parse_atr(bytes.fromhex(hex_atr))

"""card.apdu: command/response APDU encoding, strict decoding and log redaction."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card.apdu import (
    EXTENDED_MAX_LC,
    EXTENDED_MAX_LE,
    SECRET_INS,
    SHORT_MAX_LC,
    SHORT_MAX_LE,
    CommandApdu,
    ResponseApdu,
)
from card.errors import ApduFormatError, CardError

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

byte = st.integers(0, 0xFF)


@st.composite
def payloads(draw: st.DrawFn, max_size: int = EXTENDED_MAX_LC) -> bytes:
    """Command data from empty to `max_size` bytes; big sizes built from a short random
    pattern so hypothesis stays fast while every length boundary is reachable."""
    size = draw(
        st.one_of(
            st.integers(0, 300),
            st.sampled_from([0, 1, 254, 255, 256, 257, 4096, 65534, 65535]),
            st.integers(0, max_size),
        ).filter(lambda n: n <= max_size)
    )
    pattern = draw(st.binary(min_size=1, max_size=16))
    return (pattern * (size // len(pattern) + 1))[:size]


les = st.one_of(
    st.none(),
    st.integers(1, EXTENDED_MAX_LE),
    st.sampled_from([1, 255, 256, 257, 65535, 65536]),
)


@st.composite
def commands(draw: st.DrawFn) -> CommandApdu:
    return CommandApdu(draw(byte), draw(byte), draw(byte), draw(byte), draw(payloads()), draw(les))


def is_extended_form(raw: bytes) -> bool:
    return len(raw) > 5 and raw[4] == 0


# --- round trips -------------------------------------------------------------------


@FAST
@given(commands())
def test_round_trip_default_encoding(apdu: CommandApdu) -> None:
    raw = apdu.encode()
    assert CommandApdu.decode(raw) == apdu
    assert bytes(apdu) == raw
    # The default picks short whenever the fields allow it.
    assert is_extended_form(raw) == apdu.needs_extended


@FAST
@given(commands())
def test_round_trip_extended_encoding(apdu: CommandApdu) -> None:
    raw = apdu.encode(extended=True)
    assert CommandApdu.decode(raw) == apdu
    if apdu.data or apdu.le is not None:
        assert is_extended_form(raw)
    else:
        assert raw == bytes((apdu.cla, apdu.ins, apdu.p1, apdu.p2))  # case 1 has one form


@FAST
@given(commands())
def test_encoded_length_matches_the_case(apdu: CommandApdu) -> None:
    n, has_le = len(apdu.data), apdu.le is not None
    if not apdu.needs_extended:
        short = apdu.encode(extended=False)
        assert len(short) == 4 + (1 + n if n else 0) + (1 if has_le else 0)
    if n or has_le:
        extended = apdu.encode(extended=True)
        assert len(extended) == 4 + 1 + (2 + n if n else 0) + (2 if has_le else 0)


@FAST
@given(commands())
def test_short_encoding_refused_when_fields_need_extended(apdu: CommandApdu) -> None:
    if apdu.needs_extended:
        with pytest.raises(ApduFormatError):
            apdu.encode(extended=False)
    else:
        assert apdu.encode(extended=False) == apdu.encode()


@st.composite
def apdu_like_bytes(draw: st.DrawFn) -> bytes:
    """Bytes near the shape of an APDU (so every decode branch is reached), or noise."""
    header = draw(st.binary(min_size=4, max_size=4))
    kind = draw(st.sampled_from(["noise", "short", "extended"]))
    if kind == "noise":
        return draw(st.binary(max_size=300))
    if kind == "short":
        lc = draw(byte)
        body = draw(st.binary(min_size=max(0, lc - 2), max_size=lc + 2))
        return header + bytes((lc,)) + body
    lc = draw(st.integers(0, 400))
    body = draw(st.binary(min_size=max(0, lc - 3), max_size=lc + 3))
    return header + b"\x00" + lc.to_bytes(2, "big") + body


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), apdu_like_bytes()))
def test_decode_arbitrary_bytes_only_raises_format_error(raw: bytes) -> None:
    try:
        apdu = CommandApdu.decode(raw)
    except ApduFormatError:
        return
    # Whatever decodes re-encodes to the same bytes in the same form.
    assert apdu.encode(extended=is_extended_form(raw)) == raw


# --- ISO 7816-4 vectors --------------------------------------------------------------


def test_case_1() -> None:
    apdu = CommandApdu.decode(bytes.fromhex("00A40400"))
    assert apdu == CommandApdu(0x00, 0xA4, 0x04, 0x00)
    assert apdu.data == b""
    assert apdu.le is None
    assert apdu.encode() == bytes.fromhex("00A40400")


def test_case_2s_le_00_means_256() -> None:
    apdu = CommandApdu.decode(bytes.fromhex("00B0000000"))
    assert apdu.le == SHORT_MAX_LE
    assert CommandApdu(0x00, 0xB0, 0, 0, b"", 256).encode() == bytes.fromhex("00B0000000")
    assert CommandApdu.decode(bytes.fromhex("00B0000010")).le == 16


def test_case_2e_0000_means_65536() -> None:
    apdu = CommandApdu.decode(bytes.fromhex("00B00000000000"))
    assert apdu.le == EXTENDED_MAX_LE
    assert apdu.data == b""
    assert apdu.encode() == bytes.fromhex("00B00000000000")


def test_case_2e_with_a_small_le_keeps_its_form_on_request() -> None:
    raw = bytes.fromhex("00B00000000100")
    apdu = CommandApdu.decode(raw)
    assert apdu.le == 256
    assert apdu.encode(extended=True) == raw
    assert apdu.encode() == bytes.fromhex("00B0000000")  # canonical: short


def test_case_3s_and_4s() -> None:
    case3 = CommandApdu.decode(bytes.fromhex("002000810431323334"))
    assert case3 == CommandApdu(0x00, 0x20, 0x00, 0x81, b"1234")
    case4 = CommandApdu.decode(bytes.fromhex("00A40400023F0000"))
    assert case4 == CommandApdu(0x00, 0xA4, 0x04, 0x00, b"\x3f\x00", 256)
    assert case4.encode() == bytes.fromhex("00A40400023F0000")


def test_case_3e_layout() -> None:
    data = bytes(range(256))
    raw = CommandApdu(0x00, 0xDA, 0x01, 0x02, data).encode()
    assert raw == bytes.fromhex("00DA0102 000100") + data
    assert CommandApdu.decode(raw).le is None


def test_case_4e_layout() -> None:
    data = bytes(range(256)) + b"\xaa\xbb"
    apdu = CommandApdu(0x00, 0x2A, 0x9E, 0x9A, data, EXTENDED_MAX_LE)
    raw = apdu.encode()
    assert raw[:4] == bytes.fromhex("002A9E9A")
    assert raw[4] == 0x00
    assert raw[5:7] == (258).to_bytes(2, "big")
    assert raw[7:-2] == data
    assert raw[-2:] == b"\x00\x00"
    assert CommandApdu.decode(raw) == apdu
    small_le = CommandApdu(0x00, 0x2A, 0x9E, 0x9A, data, 0x1234).encode()
    assert small_le[-2:] == b"\x12\x34"


def test_case_4e_when_only_le_needs_extended() -> None:
    apdu = CommandApdu(0x80, 0xCA, 0x00, 0x00, b"\x01", 257)
    assert apdu.needs_extended
    assert apdu.encode() == bytes.fromhex("80CA0000 000001 01 0101")


@pytest.mark.parametrize(
    ("hex_", "why"),
    [
        ("", "too short"),
        ("00", "too short"),
        ("00B000", "too short"),
        ("00B0000000 00", "truncated extended"),
        ("00DA0000 000000 01", "extended Lc zero"),
        ("00DA0000 000000 0000", "extended Lc zero"),
        ("00DA0000 05 0102", "short Lc larger than data"),
        ("00DA0000 02 01020304", "short Lc smaller than data + Le"),
        ("00DA0000 000005 010203", "extended Lc larger than data"),
        ("00DA0000 000002 0102 03", "extended Lc + 1 stray byte"),
        ("00DA0000 000002 0102 030405", "extended Lc + 3 stray bytes"),
    ],
)
def test_malformed_commands_rejected(hex_: str, why: str) -> None:
    with pytest.raises(ApduFormatError):
        CommandApdu.decode(bytes.fromhex(hex_))


def test_format_error_is_a_card_error_and_not_a_value_error() -> None:
    # The agent maps only its own errors to answers: a ValueError is a bug (500).
    with pytest.raises(CardError) as caught:
        CommandApdu.decode(b"\x00")
    assert not isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cla": 0x100},
        {"ins": -1},
        {"p1": 0x1FF},
        {"p2": 256},
        {"le": 0},
        {"le": EXTENDED_MAX_LE + 1},
        {"data": bytes(EXTENDED_MAX_LC + 1)},
    ],
)
def test_constructor_rejects_out_of_range_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"cla": 0, "ins": 0xB0, "p1": 0, "p2": 0, "data": b"", "le": None}
    fields.update(kwargs)
    with pytest.raises(ApduFormatError):
        CommandApdu(**fields)  # type: ignore[arg-type]


def test_needs_extended_boundaries() -> None:
    assert not CommandApdu(0, 0xDA, 0, 0, bytes(SHORT_MAX_LC), SHORT_MAX_LE).needs_extended
    assert CommandApdu(0, 0xDA, 0, 0, bytes(SHORT_MAX_LC + 1)).needs_extended
    assert CommandApdu(0, 0xB0, 0, 0, b"", SHORT_MAX_LE + 1).needs_extended


def test_with_le_keeps_everything_else() -> None:
    apdu = CommandApdu(0x84, 0x2A, 0x9E, 0x9A, b"\x01\x02", 10)
    assert apdu.with_le(None) == CommandApdu(0x84, 0x2A, 0x9E, 0x9A, b"\x01\x02")
    assert apdu.with_le(300) == CommandApdu(0x84, 0x2A, 0x9E, 0x9A, b"\x01\x02", 300)


# --- responses -----------------------------------------------------------------------


@FAST
@given(st.binary(max_size=600), st.integers(0, 0xFFFF))
def test_response_round_trip(data: bytes, sw: int) -> None:
    response = ResponseApdu(data, sw)
    raw = response.encode()
    assert raw == data + bytes((sw >> 8, sw & 0xFF))
    assert bytes(response) == raw
    assert ResponseApdu.decode(raw) == response
    assert (response.sw1, response.sw2) == (sw >> 8, sw & 0xFF)
    assert response.ok == (sw == 0x9000)


@pytest.mark.parametrize("raw", [b"", b"\x90"])
def test_response_too_short(raw: bytes) -> None:
    with pytest.raises(ApduFormatError):
        ResponseApdu.decode(raw)


def test_response_of_sw_only() -> None:
    response = ResponseApdu.decode(b"\x6a\x82")
    assert response == ResponseApdu(b"", 0x6A82)
    assert not response.ok


# --- redaction -----------------------------------------------------------------------

PIN = b"739146"
PIN_BLOCK = PIN + b"\xff" * 10


def assert_no_secret(text: str, secret: bytes) -> None:
    assert secret.decode("ascii") not in text
    assert secret.hex() not in text.lower()


@pytest.mark.parametrize(
    ("ins", "data"),
    [
        (0x20, PIN_BLOCK),  # VERIFY
        (0x21, b"\x81\x06" + PIN),  # VERIFY, odd INS (BER-TLV data)
        (0x24, PIN_BLOCK + b"582604" + b"\xff" * 10),  # CHANGE REFERENCE DATA
        (0x2C, b"12345678" + b"\xff" * 8 + PIN_BLOCK),  # RESET RETRY COUNTER
        (0x26, PIN_BLOCK),  # DISABLE VERIFICATION REQUIREMENT
        (0x28, PIN_BLOCK),  # ENABLE VERIFICATION REQUIREMENT
    ],
    ids=["verify", "verify-odd", "change", "reset-retry-counter", "disable-vr", "enable-vr"],
)
def test_redacted_masks_reference_data(ins: int, data: bytes) -> None:
    text = CommandApdu(0x00, ins, 0x00, 0x81, data).redacted()
    assert text == f"00{ins:02X}0081 Lc={len(data)} " + "**" * len(data)
    assert_no_secret(text, PIN)
    if ins == 0x24:
        assert_no_secret(text, b"582604")
    if ins == 0x2C:
        assert_no_secret(text, b"12345678")


@FAST
@given(st.sampled_from(sorted(SECRET_INS)), byte, st.binary(min_size=1, max_size=64), les)
def test_redacted_secret_data_is_only_stars(
    ins: int, cla: int, data: bytes, le: int | None
) -> None:
    text = CommandApdu(cla, ins, 0x00, 0x81, data, le).redacted()
    expected = f"{cla:02X}{ins:02X}0081 Lc={len(data)} " + "*" * (2 * len(data))
    if le is not None:
        expected += f" Le={le}"
    assert text == expected


def test_redacted_shows_other_command_data() -> None:
    apdu = CommandApdu(0x00, 0xA4, 0x04, 0x00, bytes.fromhex("D156000001"), 256)
    assert apdu.redacted() == "00A40400 Lc=5 D156000001 Le=256"
    assert CommandApdu(0x00, 0x20, 0x00, 0x81).redacted() == "00200081"


def test_response_redacted_truncates_data() -> None:
    data = bytes.fromhex("0102030405060708") + "张三 Holder".encode()
    text = ResponseApdu(data, 0x9000).redacted()
    assert text == f"[{len(data)}] 0102030405060708… 9000"
    assert data[8:].hex() not in text.lower()
    assert "Holder" not in text
    assert ResponseApdu(b"", 0x63C2).redacted() == "63C2"
    assert ResponseApdu(b"\xab" * 8, 0x9000).redacted() == "[8] ABABABABABABABAB 9000"

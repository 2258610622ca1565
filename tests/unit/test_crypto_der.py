from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from card.crypto import der
from card.errors import ProtocolError

# --- encoding: known answers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoding"),
    [
        (0, "020100"),
        (127, "02017f"),
        (128, "02020080"),
        (255, "020200ff"),
        (256, "02020100"),
        (-1, "0201ff"),
        (-128, "020180"),
        (-129, "0202ff7f"),
    ],
)
def test_integer_known_encodings(value: int, encoding: str) -> None:
    assert der.integer(value).hex() == encoding
    assert der.decode(bytes.fromhex(encoding)).integer() == value


@pytest.mark.parametrize(
    ("dotted", "encoding"),
    [
        ("1.2.840.113549.1.1.11", "06092a864886f70d01010b"),
        ("1.2.156.10197.1.501", "06082a811ccf55018375"),
        ("2.5.4.3", "0603550403"),
        ("2.999.3", "0603883703"),  # first subidentifier above 127 (X.690 8.19 example)
    ],
)
def test_oid_known_encodings(dotted: str, encoding: str) -> None:
    assert der.object_identifier(dotted).hex() == encoding
    assert der.decode(bytes.fromhex(encoding)).oid() == dotted


@pytest.mark.parametrize(
    ("size", "header"),
    [(0, "0400"), (127, "047f"), (128, "048180"), (255, "0481ff"), (256, "04820100")],
)
def test_length_forms_are_minimal(size: int, header: str) -> None:
    encoded = der.octet_string(b"x" * size)
    assert encoded[: len(header) // 2].hex() == header
    assert der.decode(encoded).octet_string() == b"x" * size


def test_name_encoding_matches_cryptography() -> None:
    # An independent encoder for SET/SEQUENCE/OID/strings.
    ours = der.sequence(
        der.set_of(der.sequence(der.object_identifier("2.5.4.6"), der.printable_string("CN"))),
        der.set_of(
            der.sequence(der.object_identifier("2.5.4.10"), der.utf8_string("中国电子口岸"))
        ),
        der.set_of(der.sequence(der.object_identifier("2.5.4.3"), der.utf8_string("张三"))),
    )
    theirs = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "中国电子口岸"),
            x509.NameAttribute(NameOID.COMMON_NAME, "张三"),
        ]
    ).public_bytes()
    assert ours == theirs


def test_set_of_sorts_by_encoding() -> None:
    assert der.set_of(der.integer(300), der.integer(1)) == bytes.fromhex("31070201010202012c")


def test_boolean_null_bit_string() -> None:
    assert der.boolean(True).hex() == "0101ff"
    assert der.boolean(False).hex() == "010100"
    assert der.decode(der.boolean(True)).boolean() is True
    assert der.null().hex() == "0500"
    der.decode(der.null()).null()
    assert der.bit_string(b"\xc0", 6).hex() == "030206c0"
    assert der.decode(der.bit_string(b"\xc0", 6)).bit_string_with_unused() == (b"\xc0", 6)
    assert der.decode(der.bit_string(b"\x04\x01")).bit_string() == b"\x04\x01"
    with pytest.raises(ValueError):
        der.bit_string(b"\xc1", 6)  # padding bits must be zero


def test_strings() -> None:
    assert der.decode(der.utf8_string("中国电子口岸")).string() == "中国电子口岸"
    assert der.decode(der.printable_string("CN")).string() == "CN"
    assert der.decode(der.tlv(der.BMP_STRING, "张三".encode("utf-16-be"))).string() == "张三"
    with pytest.raises(ValueError):
        der.printable_string("a@b")


def test_times_switch_to_generalized_in_2050() -> None:
    t2049 = datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC)
    t2050 = t2049 + timedelta(seconds=1)
    assert der.x509_time(t2049) == der.tlv(der.UTC_TIME, b"491231235959Z")
    assert der.x509_time(t2050) == der.tlv(der.GENERALIZED_TIME, b"20500101000000Z")
    assert der.decode(der.x509_time(t2049)).time() == t2049
    assert der.decode(der.x509_time(t2050)).time() == t2050
    assert der.decode(der.tlv(der.UTC_TIME, b"500101000000Z")).time().year == 1950


def test_times_convert_to_utc_and_need_a_zone() -> None:
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2026, 1, 1, 8, 0, 0, 123456, tzinfo=beijing)
    assert der.utc_time(moment) == der.tlv(der.UTC_TIME, b"260101000000Z")
    with pytest.raises(ValueError):
        der.utc_time(datetime(2026, 1, 1))  # naive
    with pytest.raises(ValueError):
        der.utc_time(datetime(2050, 1, 1, tzinfo=UTC))


def test_explicit_and_implicit_tags() -> None:
    assert der.explicit(0, der.integer(2)).hex() == "a003020102"
    assert der.implicit(0, der.octet_string(b"\x01\x02")).hex() == "80020102"
    assert der.implicit(1, der.sequence(der.null())).hex() == "a1020500"
    outer = der.decode(der.explicit(3, der.integer(5)))
    assert outer.tag == der.context_tag(3, constructed=True)
    assert outer.children()[0].integer() == 5


def test_encoded_keeps_exact_input_bytes() -> None:
    inner = der.sequence(der.integer(1), der.utf8_string("x"))
    outer = der.decode(der.sequence(der.integer(7), inner))
    assert outer.children()[1].encoded == inner


# --- encoding/decoding properties -----------------------------------------------------


@given(st.integers(min_value=-(2**600), max_value=2**600))
def test_integer_round_trip(value: int) -> None:
    encoded = der.integer(value)
    assert der.decode(encoded).integer() == value


@given(
    st.integers(min_value=0, max_value=2),
    st.integers(min_value=0, max_value=39),
    st.lists(st.integers(min_value=0, max_value=2**70), max_size=8),
)
def test_oid_round_trip(first: int, second: int, rest: list[int]) -> None:
    dotted = ".".join(str(a) for a in [first, second, *rest])
    assert der.decode(der.object_identifier(dotted)).oid() == dotted


@given(st.binary(max_size=70000))
@settings(max_examples=30)
def test_octet_string_round_trip(data: bytes) -> None:
    assert der.decode(der.octet_string(data)).octet_string() == data


@given(st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(9999, 12, 31)))
def test_time_round_trip(moment: datetime) -> None:
    aware = moment.replace(microsecond=0, tzinfo=UTC)
    assert der.decode(der.x509_time(aware)).time() == aware


def _exercise(element: der.Element, depth: int = 0) -> None:
    """Call every accessor; only ProtocolError may come out."""
    for accessor in (
        element.integer,
        element.boolean,
        element.null,
        element.oid,
        element.bit_string,
        element.octet_string,
        element.string,
        element.time,
    ):
        with contextlib.suppress(ProtocolError):
            accessor()
    if element.constructed and depth < 4:
        try:
            children = element.children()
        except ProtocolError:
            return
        for child in children:
            _exercise(child, depth + 1)


@given(st.binary(max_size=64))
@settings(max_examples=400)
def test_arbitrary_bytes_only_raise_protocol_error(data: bytes) -> None:
    try:
        element = der.decode(data)
    except ProtocolError:
        return
    _exercise(element)


# --- strict decoding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_input", "reason"),
    [
        ("", "truncated"),
        ("30", "truncated"),
        ("3004020101", "claims"),
        ("3080020101 0000", "indefinite"),
        ("048105" + "00" * 5, "minimally"),
        ("04820005" + "00" * 5, "minimally"),
        ("0485" + "00" * 5, "bad length"),
        ("1f0100", "high-tag"),
        ("020101 00", "trailing"),
    ],
)
def test_structural_rejections(hex_input: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        der.decode(bytes.fromhex(hex_input.replace(" ", "")))


@pytest.mark.parametrize(
    ("hex_input", "accessor", "reason"),
    [
        ("0200", "integer", "empty"),
        ("02020001", "integer", "minimally"),
        ("0202ff80", "integer", "minimally"),
        ("040100", "integer", "expected tag"),
        ("010101", "boolean", "00 or FF"),
        ("01020000", "boolean", "00 or FF"),
        ("050100", "null", "content"),
        ("0300", "bit_string", "empty"),
        ("030208ff", "bit_string", "unused bits"),
        ("030106", "bit_string", "unused bits"),
        ("030201ff", "bit_string", "not zero"),
        ("030201fe", "bit_string", "whole-octet"),
        ("0600", "oid", "truncated"),
        ("06022a86", "oid", "truncated"),
        ("06032a8001", "oid", "minimally"),
        ("0c02c328", "string", "utf-8"),
        ("130140", "string", "outside"),
        ("020101", "string", "not a character string"),
        ("020101", "children", "primitive"),
    ],
)
def test_value_rejections(hex_input: str, accessor: str, reason: str) -> None:
    element = der.decode(bytes.fromhex(hex_input))
    with pytest.raises(ProtocolError, match=reason):
        getattr(element, accessor)()


@pytest.mark.parametrize(
    ("tag", "text", "reason"),
    [
        (der.UTC_TIME, b"2601010000Z", "not a DER"),  # no seconds
        (der.UTC_TIME, b"20260101000000Z", "not a DER"),  # four-digit year
        (der.UTC_TIME, b"260101000000+", "malformed"),
        (der.UTC_TIME, b"2601010000-0Z", "malformed"),
        (der.UTC_TIME, b"261301000000Z", "invalid date"),
        (der.GENERALIZED_TIME, b"20260101000000.5Z", "not a DER"),  # fraction
        (der.GENERALIZED_TIME, b"20260230000000Z", "invalid date"),
        (der.GENERALIZED_TIME, "2026010100000\u0661Z".encode(), "not a DER"),
        (der.OCTET_STRING, b"260101000000Z", "not a DER"),
    ],
)
def test_time_rejections(tag: int, text: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        der.decode(der.tlv(tag, text)).time()


def test_encoder_argument_errors() -> None:
    for bad in ("1", "3.1", "1.40", "x.y", "1.2.-3"):
        with pytest.raises(ValueError):
            der.object_identifier(bad)
    with pytest.raises(ValueError):
        der.context_tag(31, constructed=False)
    with pytest.raises(ValueError):
        der.tlv(0x1F, b"")

"""The software card against docs/card-profile.md, at the raw APDU level."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card.apdu import CommandApdu
from card.crypto.certs import parse_certificate
from card.crypto.rsa import digest_info
from card.crypto.sm2 import sm2_e, sm2_verify_digest
from card.eport import profile as p
from card.eport.atr import is_known_atr
from card.eport.session import parse_card_info, parse_fci
from card.eport.tlv import tlv_dict, unwrap
from card.errors import ApduFormatError, CardRemoved, TransportClosed
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.knobs import CardKnobs, TimingModel
from simulator.pin import PinObject, make_pin_block, parse_pin_block
from simulator.profiles import PROFILES, is_valid_uscc
from simulator.state import CardFactory, CardState

PIN = "88888888"
UNBLOCK = "12345678"


# --- fixtures: keys are generated once per module (RSA key generation is slow) ---------


@pytest.fixture(scope="module")
def factory() -> CardFactory:
    return CardFactory()


@pytest.fixture(scope="module")
def sm2_state(factory: CardFactory) -> CardState:
    return factory.make_state("legal-person-sm2")


@pytest.fixture(scope="module")
def rsa2048_state(factory: CardFactory) -> CardState:
    return factory.make_state("rsa2048")


@pytest.fixture(scope="module")
def rsa1024_state(factory: CardFactory) -> CardState:
    return factory.make_state("legacy-rsa1024")


@pytest.fixture
def card(sm2_state: CardState) -> SimulatedCard:
    return SimulatedCard(sm2_state.copy())


@pytest.fixture
def rsa_card(rsa2048_state: CardState) -> SimulatedCard:
    return SimulatedCard(rsa2048_state.copy())


# --- helpers ------------------------------------------------------------------------


def tx(card: SimulatedCard, apdu: bytes | CommandApdu) -> tuple[bytes, int]:
    raw = apdu.encode() if isinstance(apdu, CommandApdu) else apdu
    out = card.process(raw)
    assert len(out) >= 2
    return out[:-2], int.from_bytes(out[-2:], "big")


def cmd(
    ins: int, p1: int = 0, p2: int = 0, data: bytes = b"", le: int | None = None, cla: int = 0
) -> CommandApdu:
    return CommandApdu(cla, ins, p1, p2, data, le)


SELECT_APP = cmd(p.INS_SELECT, 0x04, 0x00, p.EPORT_AID, 256)
SELECT_APP_NO_FCI = cmd(p.INS_SELECT, 0x04, 0x0C, p.EPORT_AID)
PIN_STATUS = cmd(p.INS_VERIFY, 0x00, p.PIN_REF)
LOGOUT = cmd(p.INS_VERIFY, 0xFF, p.PIN_REF)
MSE_SM2 = cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840101800101"))
MSE_RSA = cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840101800102"))


def select_ef(fid: int) -> CommandApdu:
    return cmd(p.INS_SELECT, 0x02, 0x0C, fid.to_bytes(2, "big"))


def read(offset: int, le: int) -> CommandApdu:
    return cmd(p.INS_READ_BINARY, offset >> 8, offset & 0xFF, le=le)


def verify(pin: str | bytes) -> CommandApdu:
    block = pin if isinstance(pin, bytes) else make_pin_block(pin)
    return cmd(p.INS_VERIFY, 0x00, p.PIN_REF, block)


def pso(data: bytes, le: int | None = 256) -> CommandApdu:
    return cmd(p.INS_PSO, 0x9E, 0x9A, data, le)


def get_response(le: int) -> CommandApdu:
    return cmd(p.INS_GET_RESPONSE, le=le)


def selected(card: SimulatedCard) -> SimulatedCard:
    assert tx(card, SELECT_APP_NO_FCI)[1] == 0x9000
    return card


def verified(card: SimulatedCard, pin: str = PIN) -> SimulatedCard:
    selected(card)
    assert tx(card, verify(pin))[1] == 0x9000
    return card


def read_all(card: SimulatedCard, fid: int, chunk: int = 256) -> bytes:
    assert tx(card, select_ef(fid))[1] == 0x9000
    out = b""
    while True:
        data, sw = tx(card, read(len(out), chunk))
        if sw == 0x6B00:
            return out
        assert sw in (0x9000, 0x6282)
        out += data
        if sw == 0x6282:
            return out


def join_61xx(card: SimulatedCard, first: tuple[bytes, int]) -> tuple[bytes, int]:
    data, sw = first
    rounds = 0
    while sw >> 8 == 0x61:
        rounds += 1
        assert rounds < 100
        more, sw = tx(card, get_response((sw & 0xFF) or 256))
        data += more
    return data, sw


def sm2_point(state: CardState) -> bytes:
    point = parse_certificate(state.sign_cert).sm2_point
    assert point is not None
    return point


def rsa_public(state: CardState) -> rsa.RSAPublicKey:
    key = parse_certificate(state.sign_cert).rsa_public_key
    assert key is not None
    return key


# --- ATR ----------------------------------------------------------------------------


def test_atr_is_the_documented_one(card: SimulatedCard) -> None:
    atr = card.atr
    assert atr[:4] == bytes.fromhex("3B8C8001")
    assert atr[4:-1] == b"EPORT-SIM001"
    tck = 0
    for b in atr[1:]:
        tck ^= b
    assert tck == 0
    assert is_known_atr(atr)


# --- SELECT ---------------------------------------------------------------------------


def test_select_application_returns_the_fci(card: SimulatedCard) -> None:
    fci, sw = tx(card, SELECT_APP)
    assert sw == 0x9000
    outer = tlv_dict(unwrap(fci, 0x6F))
    assert outer[0x84] == p.EPORT_AID
    prop = tlv_dict(outer[0xA5])
    assert prop == {
        0x80: b"\x01",
        0x81: b"\x01",
        0x82: (255).to_bytes(2, "big"),
        0x83: (256).to_bytes(2, "big"),
        0x84: bytes((p.FLAG_CHAINING,)),
    }
    caps = parse_fci(fci)
    assert caps.algorithm is p.AlgorithmRef.SM2_SM3
    assert not caps.extended_length
    assert caps.chaining


def test_select_by_the_documented_bytes(card: SimulatedCard) -> None:
    data, sw = tx(card, bytes.fromhex("00A404000AD15600000145504F525400"))
    assert sw == 0x9000
    assert data[0] == 0x6F


def test_rsa_card_announces_rsa(rsa_card: SimulatedCard) -> None:
    fci, _ = tx(rsa_card, SELECT_APP)
    assert parse_fci(fci).algorithm is p.AlgorithmRef.RSA_PKCS1


def test_select_without_fci(card: SimulatedCard) -> None:
    assert tx(card, SELECT_APP_NO_FCI) == (b"", 0x9000)


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        (cmd(p.INS_SELECT, 0x04, 0x00, bytes.fromhex("D156000001455050"), 256), 0x6A82),
        (cmd(p.INS_SELECT, 0x04, 0x00, p.EPORT_AID[:9], 256), 0x6A82),  # no partial match
        (cmd(p.INS_SELECT, 0x04, 0x00, p.EPORT_AID[:4], 256), 0x6700),
        (cmd(p.INS_SELECT, 0x04, 0x00, p.EPORT_AID + bytes(7), 256), 0x6700),
        (cmd(p.INS_SELECT, 0x04, 0x04, p.EPORT_AID, 256), 0x6A86),
        (cmd(p.INS_SELECT, 0x08, 0x00, p.EPORT_AID, 256), 0x6A86),
        (cmd(p.INS_SELECT, 0x00, 0x0C, b"\x3f\x00"), 0x6A86),
    ],
)
def test_select_application_errors(card: SimulatedCard, apdu: CommandApdu, sw: int) -> None:
    assert tx(card, apdu) == (b"", sw)


def test_file_select_before_the_application_is_not_found(card: SimulatedCard) -> None:
    assert tx(card, select_ef(p.FID_CARD_INFO))[1] == 0x6A82


def test_failed_select_keeps_the_selection(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, select_ef(p.FID_CARD_INFO))[1] == 0x9000
    assert tx(card, select_ef(0xC0FF))[1] == 0x6A82
    bad_aid = cmd(p.INS_SELECT, 0x04, 0x0C, bytes.fromhex("A000000003"))
    assert tx(card, bad_aid)[1] == 0x6A82
    assert tx(card, read(0, 1))[1] == 0x9000


@pytest.mark.parametrize("fid", [p.FID_CARD_INFO, p.FID_SIGN_CERT, p.FID_ENC_CERT])
def test_select_file_returns_the_fcp(card: SimulatedCard, fid: int) -> None:
    selected(card)
    fcp, sw = tx(card, cmd(p.INS_SELECT, 0x02, 0x00, fid.to_bytes(2, "big"), 256))
    assert sw == 0x9000
    fields = tlv_dict(unwrap(fcp, 0x62))
    size = int.from_bytes(fields[0x80], "big")
    assert fields[0x82] == b"\x01"
    assert fields[0x83] == fid.to_bytes(2, "big")
    assert size == len(read_all(card, fid))


def test_select_file_errors(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, select_ef(0x3F00))[1] == 0x6A82
    assert tx(card, cmd(p.INS_SELECT, 0x02, 0x0C, b"\xc0\x01\x00"))[1] == 0x6700
    assert tx(card, cmd(p.INS_SELECT, 0x02, 0x01, b"\xc0\x01"))[1] == 0x6A86


# --- READ BINARY ------------------------------------------------------------------------


def test_card_info_content(card: SimulatedCard) -> None:
    selected(card)
    info = parse_card_info(read_all(card, p.FID_CARD_INFO))
    prof = PROFILES["legal-person-sm2"]
    assert info.card_number == prof.card_number
    assert info.holder_name == "张伟"
    assert info.company_name == prof.company_name
    assert info.uscc == prof.uscc
    assert len(info.uscc) == 18
    assert info.card_type.value == "legal_person"
    assert info.enterprise_code == prof.enterprise_code


def test_read_certificates_by_offset(card: SimulatedCard, sm2_state: CardState) -> None:
    selected(card)
    assert read_all(card, p.FID_SIGN_CERT, chunk=100) == sm2_state.sign_cert
    assert read_all(card, p.FID_ENC_CERT, chunk=256) == sm2_state.enc_cert
    sign = parse_certificate(sm2_state.sign_cert)
    enc = parse_certificate(sm2_state.enc_cert)
    assert sign.subject_cn == "张伟"
    assert sign.subject_ou == "深圳市前海示例贸易有限公司"
    assert sign.der != enc.der
    assert sign.sm2_point != enc.sm2_point


def test_read_binary_offsets_and_end_of_file(card: SimulatedCard, sm2_state: CardState) -> None:
    cert = sm2_state.sign_cert
    size = len(cert)
    selected(card)
    assert tx(card, select_ef(p.FID_SIGN_CERT))[1] == 0x9000
    assert tx(card, read(10, 5)) == (cert[10:15], 0x9000)
    assert tx(card, read(size - 3, 3)) == (cert[-3:], 0x9000)
    assert tx(card, read(size - 3, 10)) == (cert[-3:], 0x6282)
    assert tx(card, read(size, 1)) == (b"", 0x6B00)
    assert tx(card, read(0x7FFF, 1)) == (b"", 0x6B00)


def test_read_binary_errors(card: SimulatedCard) -> None:
    assert tx(card, read(0, 16))[1] == 0x6986  # nothing selected at all
    selected(card)
    assert tx(card, read(0, 16))[1] == 0x6986  # application, but no EF
    assert tx(card, select_ef(p.FID_CARD_INFO))[1] == 0x9000
    assert tx(card, cmd(p.INS_READ_BINARY, 0x81, 0x00, le=16))[1] == 0x6A81  # SFI
    assert tx(card, cmd(p.INS_READ_BINARY, 0, 0))[1] == 0x6700  # no Le
    assert tx(card, cmd(p.INS_READ_BINARY, 0, 0, b"\x00", 16))[1] == 0x6700


def test_reselecting_the_application_forgets_the_ef(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, select_ef(p.FID_CARD_INFO))[1] == 0x9000
    selected(card)
    assert tx(card, read(0, 4))[1] == 0x6986


# --- PIN ------------------------------------------------------------------------------


def test_pin_status_spends_no_try(card: SimulatedCard) -> None:
    selected(card)
    for _ in range(3):
        assert tx(card, PIN_STATUS) == (b"", 0x63CA)


def test_wrong_pin_counts_down_then_blocks_without_comparing(card: SimulatedCard) -> None:
    selected(card)
    for left in range(9, -1, -1):
        assert tx(card, verify("11111111"))[1] == 0x63C0 | left
        assert tx(card, PIN_STATUS)[1] == (0x63C0 | left if left else 0x6983)
    assert card.state.pin.tries_left == 0
    # Blocked: even the right PIN is not compared, and nothing changes.
    assert tx(card, verify(PIN))[1] == 0x6983
    assert tx(card, verify("11111111"))[1] == 0x6983
    assert card.state.pin.tries_left == 0
    assert not card.verified


def test_right_pin_resets_the_counter(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, verify("11111111"))[1] == 0x63C9
    assert tx(card, verify("22222222"))[1] == 0x63C8
    assert tx(card, verify(PIN))[1] == 0x9000
    assert tx(card, PIN_STATUS)[1] == 0x9000  # verified
    assert tx(card, LOGOUT)[1] == 0x9000
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # counter back at the maximum


def test_wrong_pin_ends_the_verified_state(card: SimulatedCard) -> None:
    verified(card)
    assert tx(card, verify("11111111"))[1] == 0x63C9
    assert tx(card, PIN_STATUS)[1] == 0x63C9


def test_end_verified_state(card: SimulatedCard) -> None:
    verified(card)
    assert tx(card, LOGOUT) == (b"", 0x9000)
    assert not card.verified
    assert tx(card, LOGOUT)[1] == 0x9000  # idempotent
    assert tx(card, cmd(p.INS_VERIFY, 0xFF, p.PIN_REF, make_pin_block(PIN)))[1] == 0x6700


@pytest.mark.parametrize(
    "block",
    [
        b"12345" + b"\xff" * 11,  # 5 characters
        b"1234 678" + b"\xff" * 8,  # space is not allowed
        b"1234\x7f678" + b"\xff" * 8,  # DEL
        b"123456\xff8" + b"\xff" * 8,  # character after the padding
        b"\xff" * 16,  # empty
        b"12345678" + b"\x00" * 8,  # wrong padding
        "密码密码".encode() + b"\xff" * 4,  # not ASCII
    ],
)
def test_malformed_pin_block_spends_no_try(card: SimulatedCard, block: bytes) -> None:
    selected(card)
    assert len(block) == 16
    assert tx(card, verify(block))[1] == 0x6A80
    assert tx(card, PIN_STATUS)[1] == 0x63CA


def test_pin_block_of_wrong_length(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, verify(b"88888888" + b"\xff" * 7))[1] == 0x6700
    assert tx(card, verify(b"88888888" + b"\xff" * 9))[1] == 0x6700
    assert tx(card, PIN_STATUS)[1] == 0x63CA


def test_sixteen_character_pin_and_symbols(card: SimulatedCard) -> None:
    selected(card)
    new = "Ab!~0123456789zZ"
    change = make_pin_block(PIN) + make_pin_block(new)
    assert tx(card, cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, change))[1] == 0x9000
    assert tx(card, verify(new))[1] == 0x9000


def test_verify_wrong_parameters(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, cmd(p.INS_VERIFY, 0x00, 0x82))[1] == 0x6A86
    assert tx(card, cmd(p.INS_VERIFY, 0x01, p.PIN_REF))[1] == 0x6A86


def test_tries_above_fifteen_are_reported_as_fifteen(sm2_state: CardState) -> None:
    state = sm2_state.copy()
    state.pin = PinObject(PIN, max_tries=20)
    card = selected(SimulatedCard(state))
    assert tx(card, PIN_STATUS)[1] == 0x63CF
    for _ in range(6):
        tx(card, verify("11111111"))
    assert tx(card, PIN_STATUS)[1] == 0x63CE


def change(old: str, new: str) -> CommandApdu:
    return cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, make_pin_block(old) + make_pin_block(new))


def test_change_pin(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, change("11111111", "abcdef12"))[1] == 0x63C9
    assert tx(card, change(PIN, "abcdef12"))[1] == 0x9000
    assert not card.verified  # unchanged: it was not verified
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # counter reset
    assert tx(card, verify(PIN))[1] == 0x63C9
    assert tx(card, verify("abcdef12"))[1] == 0x9000


def test_change_pin_keeps_the_verified_state(card: SimulatedCard) -> None:
    verified(card)
    assert tx(card, change(PIN, "abcdef12"))[1] == 0x9000
    assert tx(card, PIN_STATUS)[1] == 0x9000


def test_change_pin_errors(card: SimulatedCard) -> None:
    selected(card)
    bad_new = make_pin_block(PIN) + b"123" + b"\xff" * 13
    assert tx(card, cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, bad_new))[1] == 0x6A80
    short = make_pin_block(PIN)
    assert tx(card, cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, short))[1] == 0x6700
    assert tx(card, cmd(p.INS_CHANGE_REFERENCE_DATA, 1, p.PIN_REF, short * 2))[1] == 0x6A86
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # none of that spent a try
    for _ in range(10):
        tx(card, change("11111111", "abcdef12"))
    assert tx(card, change(PIN, "abcdef12"))[1] == 0x6983


def unblock(code: str, new: str) -> CommandApdu:
    data = make_pin_block(code) + make_pin_block(new)
    return cmd(p.INS_RESET_RETRY_COUNTER, 0, p.PIN_REF, data)


def test_unblock(card: SimulatedCard) -> None:
    selected(card)
    for _ in range(10):
        tx(card, verify("11111111"))
    assert tx(card, PIN_STATUS)[1] == 0x6983
    assert tx(card, unblock("99999999", "24682468"))[1] == 0x63C9  # the unblock counter
    assert tx(card, PIN_STATUS)[1] == 0x6983
    assert tx(card, unblock(UNBLOCK, "24682468"))[1] == 0x9000
    assert card.state.unblock.tries_left == 10
    assert tx(card, PIN_STATUS)[1] == 0x63CA
    assert tx(card, verify(PIN))[1] == 0x63C9
    assert tx(card, verify("24682468"))[1] == 0x9000


def test_unblock_code_blocks(card: SimulatedCard) -> None:
    selected(card)
    for left in range(9, -1, -1):
        assert tx(card, unblock("99999999", "24682468"))[1] == 0x63C0 | left
    assert tx(card, unblock(UNBLOCK, "24682468"))[1] == 0x6983
    assert tx(card, verify(PIN))[1] == 0x9000  # the PIN itself is untouched


def test_unblock_errors(card: SimulatedCard) -> None:
    selected(card)
    bad = make_pin_block(UNBLOCK) + b"\xff" * 16
    assert tx(card, cmd(p.INS_RESET_RETRY_COUNTER, 0, p.PIN_REF, bad))[1] == 0x6A80
    assert tx(card, cmd(p.INS_RESET_RETRY_COUNTER, 0, p.PIN_REF, bad[:20]))[1] == 0x6700
    assert tx(card, cmd(p.INS_RESET_RETRY_COUNTER, 0, 0x82, bad))[1] == 0x6A86
    assert card.state.unblock.tries_left == 10


def test_blocked_pin_profile(factory: CardFactory) -> None:
    card = selected(SimulatedCard(factory.make_state("blocked-pin")))
    assert tx(card, PIN_STATUS)[1] == 0x6983
    assert tx(card, verify(PIN))[1] == 0x6983


# --- signature ----------------------------------------------------------------------


def test_signature_needs_the_pin(card: SimulatedCard) -> None:
    selected(card)
    assert tx(card, MSE_SM2)[1] == 0x9000
    assert tx(card, pso(bytes(32)))[1] == 0x6982


def test_signature_needs_mse(card: SimulatedCard) -> None:
    verified(card)
    assert tx(card, pso(bytes(32)))[1] == 0x6985


def test_sm2_signature(card: SimulatedCard, sm2_state: CardState) -> None:
    verified(card)
    point = sm2_point(sm2_state)
    e = sm2_e(point, "报关单".encode())
    assert tx(card, MSE_SM2)[1] == 0x9000
    sig, sw = tx(card, pso(e))
    assert sw == 0x9000
    assert len(sig) == 64
    assert sm2_verify_digest(point, e, sig)
    assert not sm2_verify_digest(point, bytes(32), sig)
    # The environment stays set: a second signature needs no new MSE.
    sig2, sw = tx(card, pso(e))
    assert sw == 0x9000
    assert sm2_verify_digest(point, e, sig2)


def test_security_environment_survives_select_but_not_reset(card: SimulatedCard) -> None:
    verified(card)
    assert tx(card, MSE_SM2)[1] == 0x9000
    selected(card)
    assert tx(card, pso(bytes(32)))[1] == 0x9000
    card.reset()
    verified(card)
    assert tx(card, pso(bytes(32)))[1] == 0x6985


@pytest.mark.parametrize(
    ("data", "sw"),
    [
        (bytes(31), 0x6A80),
        (bytes(33), 0x6A80),
        (digest_info("sha256", bytes(32)), 0x6A80),
    ],
)
def test_sm2_wrong_input(card: SimulatedCard, data: bytes, sw: int) -> None:
    verified(card)
    assert tx(card, MSE_SM2)[1] == 0x9000
    assert tx(card, pso(data))[1] == sw


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        (MSE_RSA, 0x6A80),  # does not match the SM2 key
        (cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840102800101")), 0x6A80),  # key ref
        (cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840101800103")), 0x6A80),  # unknown alg
        (cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840101")), 0x6A80),  # no algorithm
        (cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("8401018001")), 0x6A80),  # truncated TLV
        (cmd(p.INS_MSE, 0x41, 0xB6, bytes.fromhex("840101800101950180")), 0x6A80),  # extra
        (cmd(p.INS_MSE, 0x41, 0xB6), 0x6700),
        (cmd(p.INS_MSE, 0x81, 0xB6, bytes.fromhex("840101800101")), 0x6A86),
        (cmd(p.INS_MSE, 0x41, 0xB8, bytes.fromhex("840101800101")), 0x6A86),
    ],
)
def test_mse_errors_leave_no_environment(card: SimulatedCard, apdu: CommandApdu, sw: int) -> None:
    verified(card)
    assert tx(card, MSE_SM2)[1] == 0x9000
    assert tx(card, apdu)[1] == sw
    if sw != 0x6A86:
        assert tx(card, pso(bytes(32)))[1] == 0x6985


def test_pso_wrong_parameters(card: SimulatedCard) -> None:
    verified(card)
    tx(card, MSE_SM2)
    assert tx(card, cmd(p.INS_PSO, 0x80, 0x86, bytes(32), 256))[1] == 0x6A86


def test_rsa2048_signature(rsa_card: SimulatedCard, rsa2048_state: CardState) -> None:
    verified(rsa_card, "00000000")
    assert tx(rsa_card, MSE_SM2)[1] == 0x6A80  # does not match the RSA key
    assert tx(rsa_card, MSE_RSA)[1] == 0x9000
    digest = hashlib.sha256(b"message").digest()
    sig, sw = tx(rsa_card, pso(digest_info("sha256", digest)))
    assert sw == 0x9000
    assert len(sig) == 256
    rsa_public(rsa2048_state).verify(
        sig, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )
    # SHA-1 DigestInfo works on the same key (the card pads what it is given).
    digest1 = hashlib.sha1(b"message").digest()
    sig1, sw = tx(rsa_card, pso(digest_info("sha1", digest1)))
    assert sw == 0x9000
    rsa_public(rsa2048_state).verify(sig1, b"message", padding.PKCS1v15(), hashes.SHA1())


def test_legacy_rsa1024_signature(rsa1024_state: CardState) -> None:
    card = verified(SimulatedCard(rsa1024_state.copy()))
    assert tx(card, MSE_RSA)[1] == 0x9000
    sig, sw = tx(card, pso(digest_info("sha1", hashlib.sha1(b"<xml/>").digest())))
    assert sw == 0x9000
    assert len(sig) == 128
    rsa_public(rsa1024_state).verify(sig, b"<xml/>", padding.PKCS1v15(), hashes.SHA1())
    cert = parse_certificate(rsa1024_state.sign_cert)
    assert cert.key_bits == 1024
    assert cert.signature_algorithm_oid == "1.2.840.113549.1.1.5"  # sha1WithRSA


@pytest.mark.parametrize(
    "data",
    [
        bytes(32),  # a bare digest
        bytes(51),
        digest_info("sha256", bytes(32))[:-1],
        bytes.fromhex("3020300c06082a864886f70d020505000410") + bytes(16),  # MD5
        digest_info("sha1", bytes(20)) + b"\x00",
    ],
)
def test_rsa_unknown_digest_info(rsa_card: SimulatedCard, data: bytes) -> None:
    verified(rsa_card, "00000000")
    tx(rsa_card, MSE_RSA)
    assert tx(rsa_card, pso(data))[1] == 0x6A80


# --- GET CHALLENGE / GET RESPONSE -------------------------------------------------------


def test_get_challenge(card: SimulatedCard) -> None:
    a, sw = tx(card, cmd(p.INS_GET_CHALLENGE, le=8))
    assert sw == 0x9000
    assert len(a) == 8
    b, _ = tx(card, cmd(p.INS_GET_CHALLENGE, le=256))
    assert len(b) == 256
    assert tx(card, cmd(p.INS_GET_CHALLENGE, 1, 0, le=8))[1] == 0x6A86
    assert tx(card, cmd(p.INS_GET_CHALLENGE))[1] == 0x6700


def test_get_response_without_pending_data(card: SimulatedCard) -> None:
    assert tx(card, get_response(16)) == (b"", 0x6985)
    assert tx(card, cmd(p.INS_GET_RESPONSE, 1, 0, le=16))[1] == 0x6A86


def test_case4_without_le_offers_the_answer_through_get_response(card: SimulatedCard) -> None:
    data, sw = tx(card, cmd(p.INS_SELECT, 0x04, 0x00, p.EPORT_AID))
    assert data == b""
    assert sw >> 8 == 0x61
    fci, sw = tx(card, get_response(sw & 0xFF))
    assert sw == 0x9000
    assert parse_fci(fci).algorithm is p.AlgorithmRef.SM2_SM3


# --- knobs ---------------------------------------------------------------------------


def test_small_responses_are_split_with_61xx(sm2_state: CardState) -> None:
    card = SimulatedCard(sm2_state.copy(), knobs=CardKnobs(max_response_data=64))
    fci, _ = tx(card, SELECT_APP)
    assert parse_fci(fci).max_response_data == 64
    assert tx(card, select_ef(p.FID_SIGN_CERT))[1] == 0x9000
    first = tx(card, read(0, 200))
    assert first[0] == sm2_state.sign_cert[:64]
    assert first[1] == 0x6100 | (200 - 64)
    assert join_61xx(card, first) == (sm2_state.sign_cert[:200], 0x9000)
    # The final status (6282 here) arrives with the last piece.
    size = len(sm2_state.sign_cert)
    data, sw = join_61xx(card, tx(card, read(size - 100, 200)))
    assert (data, sw) == (sm2_state.sign_cert[-100:], 0x6282)


def test_get_response_pieces_and_interruption(sm2_state: CardState) -> None:
    card = verified(SimulatedCard(sm2_state.copy(), knobs=CardKnobs(max_response_data=16)))
    point = sm2_point(sm2_state)
    e = sm2_e(point, b"m")
    tx(card, MSE_SM2)
    data, sw = tx(card, pso(e))
    assert (len(data), sw) == (16, 0x6130)
    more, sw = tx(card, get_response(8))  # asking for less than offered is fine
    assert (len(more), sw) == (8, 0x6128)
    rest, sw = join_61xx(card, (data + more, sw))
    assert sw == 0x9000
    assert sm2_verify_digest(point, e, rest)
    # Another command drops whatever was pending.
    _, sw = tx(card, pso(e))
    assert sw == 0x6130
    assert tx(card, PIN_STATUS)[1] == 0x9000
    assert tx(card, get_response(0x30))[1] == 0x6985


def test_rsa_signature_split(rsa2048_state: CardState) -> None:
    card = SimulatedCard(rsa2048_state.copy(), knobs=CardKnobs(max_response_data=100))
    verified(card, "00000000")
    tx(card, MSE_RSA)
    digest = hashlib.sha256(b"x").digest()
    sig, sw = join_61xx(card, tx(card, pso(digest_info("sha256", digest))))
    assert (len(sig), sw) == (256, 0x9000)
    rsa_public(rsa2048_state).verify(
        sig, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )


def test_exact_le_answers_6cxx(sm2_state: CardState) -> None:
    card = SimulatedCard(sm2_state.copy(), knobs=CardKnobs(exact_le=True))
    _, sw = tx(card, SELECT_APP)
    assert sw >> 8 == 0x6C
    fci, sw = tx(card, SELECT_APP.with_le(sw & 0xFF))
    assert sw == 0x9000
    assert parse_fci(fci).algorithm is p.AlgorithmRef.SM2_SM3
    # READ BINARY: asking past the end -> 6Cxx with what is left; asking less is fine.
    size = len(sm2_state.sign_cert)
    tx(card, select_ef(p.FID_SIGN_CERT))
    assert tx(card, read(size - 10, 50)) == (b"", 0x6C0A)
    assert tx(card, read(size - 10, 10)) == (sm2_state.sign_cert[-10:], 0x9000)
    assert tx(card, read(0, 5)) == (sm2_state.sign_cert[:5], 0x9000)
    # PSO: the signature is 64 bytes; Le=256 is corrected.
    assert tx(card, verify(PIN))[1] == 0x9000
    tx(card, MSE_SM2)
    assert tx(card, pso(bytes(32), 256)) == (b"", 0x6C40)
    sig, sw = tx(card, pso(bytes(32), 0x40))
    assert (len(sig), sw) == (64, 0x9000)


def test_exact_le_off_returns_what_there_is(card: SimulatedCard) -> None:
    fci, sw = tx(card, SELECT_APP)  # Le 256, shorter FCI
    assert sw == 0x9000
    assert fci[0] == 0x6F


def test_chaining(rsa2048_state: CardState) -> None:
    card = verified(SimulatedCard(rsa2048_state.copy()), "00000000")
    tx(card, MSE_RSA)
    digest = hashlib.sha256(b"chained").digest()
    info = digest_info("sha256", digest)
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, info[:20], cla=0x10)) == (b"", 0x9000)
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, info[20:40], cla=0x10)) == (b"", 0x9000)
    sig, sw = tx(card, pso(info[40:]))
    assert sw == 0x9000
    rsa_public(rsa2048_state).verify(
        sig, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())
    )


def test_chained_pin_change(card: SimulatedCard) -> None:
    selected(card)
    data = make_pin_block(PIN) + make_pin_block("abcdefgh")
    apdu = cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, data[:10], cla=0x10)
    assert tx(card, apdu)[1] == 0x9000
    assert tx(card, cmd(p.INS_CHANGE_REFERENCE_DATA, 0, p.PIN_REF, data[10:]))[1] == 0x9000
    assert tx(card, verify("abcdefgh"))[1] == 0x9000


def test_interrupted_chain(card: SimulatedCard) -> None:
    verified(card)
    tx(card, MSE_SM2)
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, bytes(16), cla=0x10))[1] == 0x9000
    assert tx(card, PIN_STATUS)[1] == 0x6883  # a different command: refused
    # The chain is gone: the second half alone is a 16-byte input.
    assert tx(card, pso(bytes(16)))[1] == 0x6A80
    # Also refused: a chained chunk of another command.
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, bytes(16), cla=0x10))[1] == 0x9000
    assert tx(card, cmd(p.INS_VERIFY, 0, p.PIN_REF, bytes(8), cla=0x10))[1] == 0x6883
    assert tx(card, pso(bytes(32)))[1] == 0x9000


def test_chaining_disabled(sm2_state: CardState) -> None:
    card = SimulatedCard(sm2_state.copy(), knobs=CardKnobs(chaining=False))
    fci, _ = tx(card, SELECT_APP)
    assert not parse_fci(fci).chaining
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, bytes(16), cla=0x10))[1] == 0x6884


def test_max_command_data(rsa2048_state: CardState) -> None:
    card = SimulatedCard(rsa2048_state.copy(), knobs=CardKnobs(max_command_data=40))
    fci, _ = tx(card, SELECT_APP)
    assert parse_fci(fci).max_command_data == 40
    assert tx(card, verify("00000000"))[1] == 0x9000
    tx(card, MSE_RSA)
    info = digest_info("sha256", bytes(32))
    assert tx(card, pso(info))[1] == 0x6700
    assert tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, info[:40], cla=0x10))[1] == 0x9000
    assert tx(card, pso(info[40:]))[1] == 0x9000


def test_extended_length(sm2_state: CardState) -> None:
    knobs = CardKnobs(extended_length=True, max_response_data=4096, max_command_data=1024)
    card = SimulatedCard(sm2_state.copy(), knobs=knobs)
    fci, _ = tx(card, SELECT_APP)
    caps = parse_fci(fci)
    assert caps.extended_length
    assert (caps.max_command_data, caps.max_response_data) == (1024, 4096)
    tx(card, select_ef(p.FID_SIGN_CERT))
    size = len(sm2_state.sign_cert)
    raw = CommandApdu(0, p.INS_READ_BINARY, 0, 0, b"", 2048).encode()
    assert len(raw) == 7  # 00 B0 00 00 00 08 00
    assert tx(card, raw) == (sm2_state.sign_cert, 0x6282 if size < 2048 else 0x9000)
    # Extended Lc: a command with more than 255 bytes of data is accepted (and judged).
    big = CommandApdu(0, p.INS_PSO, 0x9E, 0x9A, bytes(300), 256).encode(extended=True)
    tx(card, verify(PIN))
    tx(card, MSE_SM2)
    assert tx(card, big)[1] == 0x6A80
    extended_pso = CommandApdu(0, p.INS_PSO, 0x9E, 0x9A, bytes(32), 256).encode(extended=True)
    sig, sw = tx(card, extended_pso)
    assert (len(sig), sw) == (64, 0x9000)


def test_extended_length_disabled(card: SimulatedCard) -> None:
    fci, _ = tx(card, SELECT_APP)
    assert not parse_fci(fci).extended_length
    tx(card, select_ef(p.FID_SIGN_CERT))
    assert tx(card, CommandApdu(0, p.INS_READ_BINARY, 0, 0, b"", 16).encode(extended=True)) == (
        b"",
        0x6700,
    )
    extended_select = CommandApdu(0, p.INS_SELECT, 4, 0x0C, p.EPORT_AID).encode(extended=True)
    assert tx(card, extended_select) == (b"", 0x6700)


def test_fail_next(card: SimulatedCard) -> None:
    selected(card)
    tx(card, select_ef(p.FID_CARD_INFO))
    card.knobs.fail_next(0x6581, ins=p.INS_READ_BINARY, count=2)
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # other INS: untouched
    assert tx(card, read(0, 4)) == (b"", 0x6581)
    assert tx(card, read(0, 4)) == (b"", 0x6581)
    assert tx(card, read(0, 4))[1] == 0x9000
    card.knobs.fail_next(0x6F00)
    assert card.knobs.pending_faults == 1
    assert tx(card, verify("11111111"))[1] == 0x6F00  # nothing executed:
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # no try spent
    assert card.knobs.pending_faults == 0
    card.knobs.fail_next(0x6A82, count=5)
    card.knobs.clear_faults()
    assert tx(card, PIN_STATUS)[1] == 0x63CA


def test_knob_validation() -> None:
    with pytest.raises(ValueError, match="max_command_data"):
        CardKnobs(max_command_data=0)
    with pytest.raises(ValueError, match="max_response_data"):
        CardKnobs(max_response_data=65537)
    with pytest.raises(ValueError, match="count"):
        CardKnobs().fail_next(0x6A82, count=0)
    with pytest.raises(ValueError, match="negative"):
        TimingModel(apdu_delay_s=-1)


def test_timing_model(sm2_state: CardState) -> None:
    delays: list[float] = []
    knobs = CardKnobs(timing=TimingModel.REALISTIC)
    card = SimulatedCard(sm2_state.copy(), knobs=knobs, sleep=delays.append)
    verified(card)
    tx(card, MSE_SM2)
    assert tx(card, pso(bytes(32)))[1] == 0x9000
    assert delays == [0.002] * 3 + [0.002, 0.150]
    assert TimingModel.REALISTIC.signature_delay_s(p.AlgorithmRef.RSA_PKCS1, 1024) == 0.080
    assert TimingModel.REALISTIC.signature_delay_s(p.AlgorithmRef.RSA_PKCS1, 2048) == 0.300
    assert TimingModel.flat(0.0, 0.5).signature_delay_s(p.AlgorithmRef.SM2_SM3, 256) == 0.5
    assert TimingModel.INSTANT.apdu_delay_s == 0.0


# --- power and reset -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "power_cycle"])
def test_reset_and_power_off_clear_the_session(card: SimulatedCard, how: str) -> None:
    verified(card)
    tx(card, select_ef(p.FID_CARD_INFO))
    tx(card, MSE_SM2)
    if how == "reset":
        card.reset()
    else:
        card.power_off()
        assert tx(card, PIN_STATUS)[1] == 0x6F00  # no power, no card
        card.power_on()
    assert not card.verified
    assert tx(card, read(0, 4))[1] == 0x6986
    selected(card)
    assert tx(card, PIN_STATUS)[1] == 0x63CA
    assert tx(card, verify(PIN))[1] == 0x9000
    assert tx(card, pso(bytes(32)))[1] == 0x6985


def test_reset_drops_chain_and_pending_data(sm2_state: CardState) -> None:
    card = SimulatedCard(sm2_state.copy(), knobs=CardKnobs(max_response_data=16))
    _, sw = tx(card, SELECT_APP)
    assert sw >> 8 == 0x61
    card.reset()
    assert tx(card, get_response(16))[1] == 0x6985
    tx(card, cmd(p.INS_PSO, 0x9E, 0x9A, bytes(16), cla=0x10))
    card.reset()
    assert tx(card, PIN_STATUS)[1] == 0x63CA  # no 6883: the chain is gone


# --- malformed APDUs and unsupported commands ----------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "00",
        "00A404",  # too short for a header
        "00A4040C05D1560000",  # Lc 5, 4 bytes of data
        "00A4040C02D1560000",  # Lc 2, 4 bytes (not Lc + Le either)
        "00B000000001",  # extended, truncated
        "00A4040C00000AD156",  # extended Lc 10, 2 bytes of data
        "00A4040C000000D156",  # extended Lc 0
    ],
)
def test_malformed_apdus_answer_6700(card: SimulatedCard, raw: str) -> None:
    data = bytes.fromhex(raw)
    with pytest.raises(ApduFormatError):
        CommandApdu.decode(data)
    assert tx(card, data) == (b"", 0x6700)


@pytest.mark.parametrize("raw", ["00B00000000000", "00B00000000100"])
def test_extended_case2_is_refused_when_extended_is_off(card: SimulatedCard, raw: str) -> None:
    selected(card)
    tx(card, select_ef(p.FID_CARD_INFO))
    assert tx(card, bytes.fromhex(raw)) == (b"", 0x6700)


def test_unknown_instruction(card: SimulatedCard) -> None:
    for ins in (0xCA, 0x88, 0x0E, 0xB2, 0x2B):
        assert tx(card, cmd(ins)) == (b"", 0x6D00)


@pytest.mark.parametrize("cla", [0x80, 0x84, 0x0C, 0x01, 0xFF, 0x90])
def test_bad_class(card: SimulatedCard, cla: int) -> None:
    assert tx(card, CommandApdu(cla, p.INS_SELECT, 4, 0, p.EPORT_AID, 256)) == (b"", 0x6E00)


def test_internal_error_is_6f00_and_logs_no_pin(
    card: SimulatedCard, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    selected(card)

    def boom(block: bytes) -> None:
        raise RuntimeError("simulated fault")

    monkeypatch.setattr(card.state.pin, "check", boom)
    with caplog.at_level(logging.DEBUG):
        assert tx(card, verify("87654321")) == (b"", 0x6F00)
    assert "internal error" in caplog.text
    assert "INS 20" in caplog.text
    assert "87654321" not in caplog.text
    assert make_pin_block("87654321").hex() not in caplog.text.lower()
    monkeypatch.undo()
    assert tx(card, verify(PIN))[1] == 0x9000  # the card lives on


def _all_knobs_on() -> CardKnobs:
    return CardKnobs(
        max_response_data=32,
        exact_le=True,
        chaining=True,
        extended_length=True,
        max_command_data=600,
    )


@pytest.fixture(scope="module")
def fuzz_cards(sm2_state: CardState) -> dict[bool, SimulatedCard]:
    """Two long-lived cards (plain, every knob on) that accumulate whatever state the
    random input drives them into."""
    return {
        False: SimulatedCard(sm2_state.copy()),
        True: SimulatedCard(sm2_state.copy(), knobs=_all_knobs_on()),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.binary(max_size=300), knobs_on=st.booleans(), prefix=st.sampled_from([b"", b"\x00"]))
def test_random_bytes_never_raise(
    fuzz_cards: dict[bool, SimulatedCard], raw: bytes, knobs_on: bool, prefix: bytes
) -> None:
    out = fuzz_cards[knobs_on].process(prefix + raw)
    assert isinstance(out, bytes)
    assert len(out) >= 2


@settings(max_examples=300, deadline=None)
@given(
    ins=st.sampled_from([0xA4, 0xB0, 0x20, 0x24, 0x2C, 0x22, 0x2A, 0x84, 0xC0, 0x10, 0xFF]),
    p1=st.integers(0, 255),
    p2=st.integers(0, 255),
    data=st.binary(max_size=40),
    le=st.one_of(st.none(), st.integers(1, 256)),
    cla=st.sampled_from([0x00, 0x10]),
    knobs_on=st.booleans(),
)
def test_well_formed_commands_never_fail_internally(
    fuzz_cards: dict[bool, SimulatedCard],
    ins: int,
    p1: int,
    p2: int,
    data: bytes,
    le: int | None,
    cla: int,
    knobs_on: bool,
) -> None:
    out = fuzz_cards[knobs_on].process(CommandApdu(cla, ins, p1, p2, data, le).encode())
    assert len(out) >= 2
    assert out[-2:] != b"\x6f\x00"


# --- PIN helpers ------------------------------------------------------------------


def test_pin_block_helpers() -> None:
    assert make_pin_block("88888888") == b"88888888" + b"\xff" * 8
    assert parse_pin_block(make_pin_block("x" * 16)) == b"x" * 16
    assert parse_pin_block(b"\xff" * 16) is None
    with pytest.raises(ValueError, match="6 to 16"):
        make_pin_block("12345")
    pin = PinObject(PIN, max_tries=3)
    assert "8888" not in repr(pin)
    with pytest.raises(ValueError, match="tries_left"):
        PinObject(PIN, max_tries=3, tries_left=4)


def test_pin_change_callback() -> None:
    calls: list[int] = []
    pin = PinObject(PIN, max_tries=3)
    pin.on_change = lambda: calls.append(pin.tries_left)
    pin.check(make_pin_block(PIN))  # already at max: no change, no save
    pin.check(make_pin_block("00000000"))
    pin.check(make_pin_block(PIN))
    assert calls == [2, 3]


# --- profiles --------------------------------------------------------------------


def test_profiles_are_valid_data() -> None:
    required = {
        "legal-person-sm2",
        "operator-sm2",
        "legacy-rsa1024",
        "rsa2048",
        "blocked-pin",
        "expired-cert",
        "expiring-soon",
    }
    assert required <= set(PROFILES)
    for prof in PROFILES.values():
        assert is_valid_uscc(prof.uscc)
        assert len(prof.enterprise_code) == 10
        assert prof.card_number.isdigit()
        assert 12 <= len(prof.card_number) <= 14
    assert PROFILES["operator-sm2"].card_type is p.CardType.OPERATOR
    assert {prof.pin for prof in PROFILES.values()} == {"88888888", "00000000"}
    assert not is_valid_uscc("91440300MA5FQ3K23Y")


@pytest.mark.parametrize(("name", "days"), [("expired-cert", -30), ("expiring-soon", 10)])
def test_certificate_validity_profiles(factory: CardFactory, name: str, days: int) -> None:
    state = factory.make_state(name)
    for der in (state.sign_cert, state.enc_cert):
        cert = parse_certificate(der)
        left = (cert.not_after - datetime.now(UTC)).total_seconds() / 86400
        assert abs(left - days) < 0.1
        assert cert.issuer_cn == "card-agent test CA (SM2)"


def test_one_ca_per_factory(factory: CardFactory, sm2_state: CardState) -> None:
    other = factory.make_state("operator-sm2")
    ca = factory.ca("SM2")
    assert (
        parse_certificate(other.sign_cert).issuer_cn
        == parse_certificate(sm2_state.sign_cert).issuer_cn
    )
    assert sm2_state.ca_states["SM2"]["certificate_pem"] == ca.certificate_pem
    assert CardFactory().ca("SM2").certificate_der != ca.certificate_der


# --- in-process transport ------------------------------------------------------------


@pytest.fixture
def transport(card: SimulatedCard) -> Iterator[InProcessTransport]:
    t = InProcessTransport(card)
    yield t
    t.close()


def test_transport_passes_apdus(transport: InProcessTransport, card: SimulatedCard) -> None:
    assert transport.atr == card.atr
    out = transport.transmit(SELECT_APP_NO_FCI.encode())
    assert out == b"\x90\x00"


def test_transport_reset_bumps_generation(
    transport: InProcessTransport, card: SimulatedCard
) -> None:
    verified(card)
    g = transport.generation
    transport.reset()
    assert transport.generation == g + 1
    assert not card.verified


def test_transport_remove_and_insert(transport: InProcessTransport, card: SimulatedCard) -> None:
    verified(card)
    g = transport.generation
    transport.remove()
    with pytest.raises(CardRemoved):
        transport.transmit(PIN_STATUS.encode())
    with pytest.raises(CardRemoved):
        transport.reset()
    with pytest.raises(CardRemoved):
        _ = transport.atr
    transport.insert()
    assert transport.generation == g + 1
    assert not card.verified
    assert transport.transmit(SELECT_APP_NO_FCI.encode()) == b"\x90\x00"
    assert transport.transmit(PIN_STATUS.encode()) == b"\x63\xca"


def test_transport_insert_another_card(
    transport: InProcessTransport, rsa2048_state: CardState
) -> None:
    other = SimulatedCard(rsa2048_state.copy())
    transport.remove()
    transport.insert(other)
    assert transport.card is other
    fci = transport.transmit(SELECT_APP.encode())
    assert parse_fci(fci[:-2]).algorithm is p.AlgorithmRef.RSA_PKCS1


def test_transport_close(transport: InProcessTransport, card: SimulatedCard) -> None:
    transport.close()
    transport.close()  # idempotent
    assert not card.powered
    with pytest.raises(TransportClosed):
        transport.transmit(PIN_STATUS.encode())
    with pytest.raises(TransportClosed):
        transport.reset()
    with pytest.raises(TransportClosed):
        transport.insert()


def test_session_over_the_transport(transport: InProcessTransport, sm2_state: CardState) -> None:
    """The host side (EPortSession) and the card agree on the profile."""
    from card.eport.session import EPortSession

    session = EPortSession.open(transport)
    assert session.card_info().holder_name == "张伟"
    assert session.certificate() == sm2_state.sign_cert
    session.verify_pin(PIN)
    signature = session.sign(b"hello")
    point = sm2_point(sm2_state)
    assert sm2_verify_digest(point, sm2_e(point, b"hello"), signature.value)

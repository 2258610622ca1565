"""EPortSession against the software card: every command, every profile, every knob.

The session is the host half of docs/card-profile.md, the simulator the card half; these
tests drive the first through the second over `InProcessTransport`, behind a `Wire`
that records every APDU so that a test can say what went on the wire (or that nothing
did). Signatures are checked independently of the project's own crypto: SM2 with
gmalg, RSA with pyca/cryptography.

Keys are made once per module (RSA key generation is slow); each test gets its own
copy of the card's memory, so PIN counters never leak from one test to the next.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import gmalg
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from card.apdu import CLA_CHAINING, CommandApdu
from card.crypto.certs import CertificateChainError, parse_certificate, verify_chain
from card.crypto.sm2 import SM2_DEFAULT_ID, der_to_raw, sm2_e, sm2_verify
from card.eport import profile as p
from card.eport.driver import CardType, CertSlot, PinStatus, SignAlgorithm
from card.eport.session import EPortSession
from card.errors import (
    ApduError,
    ApduFormatError,
    CardRemoved,
    InvalidPinFormat,
    InvalidRequest,
    PinBlockedError,
    SecurityStatusNotSatisfied,
    UnsupportedCard,
    WrongPinError,
)
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.knobs import CardKnobs, TimingModel
from simulator.profiles import PROFILES, CardProfile
from simulator.state import CardFactory, CardState

WRONG_PIN = "99999999"  # well-formed, and no profile's PIN
NEW_PIN = "Kiosk#2024"
MESSAGE = "出口信用保险保单 / export credit insurance policy".encode()
INS_GET_RESPONSE = 0xC0


# --- the wire -----------------------------------------------------------------------


class Wire:
    """A `Transport` in front of another that records every command and response."""

    def __init__(self, inner: InProcessTransport) -> None:
        self.inner = inner
        self.sent: list[bytes] = []
        self.received: list[bytes] = []

    @property
    def atr(self) -> bytes:
        return self.inner.atr

    @property
    def generation(self) -> int:
        return self.inner.generation

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        response = self.inner.transmit(apdu)
        self.received.append(response)
        return response

    def reset(self) -> None:
        self.inner.reset()

    def close(self) -> None:
        self.inner.close()

    def commands(self, start: int = 0) -> list[CommandApdu]:
        return [CommandApdu.decode(raw) for raw in self.sent[start:]]

    def sws(self, start: int = 0) -> list[int]:
        return [int.from_bytes(r[-2:], "big") for r in self.received[start:]]


def is_extended(raw: bytes) -> bool:
    return len(raw) > 5 and raw[4] == 0


# --- cards --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def factory() -> CardFactory:
    return CardFactory()


@pytest.fixture(scope="module")
def states(factory: CardFactory) -> dict[str, CardState]:
    """One card memory per profile, made once (RSA keys take a while)."""
    return {name: factory.make_state(name) for name in PROFILES}


def fresh(state: CardState) -> CardState:
    """An independent copy of a card's memory, sharing the already loaded signing key
    (loading an RSA-2048 PEM costs tens of milliseconds: too much for every test)."""
    copy = state.copy()
    copy._signing_key = state.signing_key()
    return copy


KNOB_SETS: dict[str, Callable[[], CardKnobs]] = {
    "friendly": CardKnobs,
    # every answer longer than 16 bytes comes in 61xx pieces
    "tiny-response": lambda: CardKnobs(max_response_data=16),
    # PIN change, SM2 e and RSA DigestInfo are chained
    "tiny-command": lambda: CardKnobs(max_command_data=16),
    # T=0 style 6Cxx corrections
    "exact-le": lambda: CardKnobs(exact_le=True),
    "extended": lambda: CardKnobs(
        extended_length=True, max_response_data=1024, max_command_data=1024
    ),
    "all-awkward": lambda: CardKnobs(max_response_data=16, max_command_data=16, exact_le=True),
}


@dataclass
class Rig:
    profile: CardProfile
    state: CardState
    card: SimulatedCard
    transport: InProcessTransport
    wire: Wire
    session: EPortSession
    ca_der: bytes

    @property
    def blocked(self) -> bool:
        return self.profile.pin_tries_left == 0

    def usable_pin(self) -> str:
        """The PIN, after the issuer unblocked it if the profile starts blocked."""
        if self.blocked:
            self.session.unblock_pin(self.profile.unblock_code, self.profile.pin)
        return self.profile.pin

    def login(self) -> None:
        self.session.verify_pin(self.usable_pin())


def make_rig(
    factory: CardFactory, states: dict[str, CardState], name: str, knobs: CardKnobs | None = None
) -> Rig:
    state = fresh(states[name])
    card = SimulatedCard(state, knobs=knobs)
    transport = InProcessTransport(card)
    wire = Wire(transport)
    return Rig(
        PROFILES[name],
        state,
        card,
        transport,
        wire,
        EPortSession(wire),
        factory.ca(state.algorithm).certificate_der,
    )


@pytest.fixture(params=list(PROFILES))
def profile_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(params=list(KNOB_SETS))
def knobs(request: pytest.FixtureRequest) -> CardKnobs:
    return KNOB_SETS[request.param]()


@pytest.fixture
def rig(
    factory: CardFactory, states: dict[str, CardState], profile_name: str, knobs: CardKnobs
) -> Iterator[Rig]:
    rig = make_rig(factory, states, profile_name, knobs)
    yield rig
    rig.transport.close()


def expected_algorithm(profile: CardProfile) -> SignAlgorithm:
    if profile.algorithm == "SM2":
        return SignAlgorithm.SM2_SM3
    return SignAlgorithm.RSA_SHA1 if profile.key_bits == 1024 else SignAlgorithm.RSA_SHA256


def check_signature(rig: Rig, message: bytes, value: bytes, *, independent: bool = True) -> None:
    """Verify with libraries that are not the project's crypto helpers: gmalg for SM2
    (pure Python, ~20 ms a verification: tests that sign only on the way to something
    else pass `independent=False` and use the project's verifier), cryptography for RSA."""
    info = parse_certificate(rig.state.sign_cert)
    if rig.profile.algorithm == "SM2":
        assert info.sm2_point is not None
        assert len(value) == 64
        if not independent:
            assert sm2_verify(info.sm2_point, message, value)
            return
        verifier = gmalg.SM2(pk=info.sm2_point, uid=SM2_DEFAULT_ID)
        assert verifier.verify(message, value[:32], value[32:])
        return
    key = info.rsa_public_key
    assert key is not None
    assert len(value) == rig.profile.key_bits // 8
    algorithm = hashes.SHA1() if rig.profile.rsa_hash == "sha1" else hashes.SHA256()
    key.verify(value, message, padding.PKCS1v15(), algorithm)  # raises if wrong


# --- the session suite: every profile x every knob set ------------------------------


def test_open_selects_and_adopts_the_fci(rig: Rig, knobs: CardKnobs) -> None:
    caps = rig.session.select()
    assert CommandApdu.decode(rig.wire.sent[0]).data == p.EPORT_AID
    assert caps.profile_version == p.PROFILE_VERSION
    assert caps.algorithm is (
        p.AlgorithmRef.SM2_SM3 if rig.profile.algorithm == "SM2" else p.AlgorithmRef.RSA_PKCS1
    )
    assert caps.max_command_data == knobs.effective_max_command_data
    assert caps.max_response_data == knobs.effective_max_response_data
    assert caps.extended_length is knobs.extended_length
    assert caps.chaining is knobs.chaining
    assert rig.session.capabilities is caps  # no second SELECT while nothing changed
    assert len(rig.wire.commands()) == len(rig.wire.sent)
    config = rig.session.exchange.config
    assert (config.max_command_data, config.extended_length, config.chaining) == (
        caps.max_command_data,
        caps.extended_length,
        caps.chaining,
    )
    assert rig.session.atr == rig.card.atr


def test_card_info(rig: Rig) -> None:
    info = rig.session.card_info()
    prof = rig.profile
    assert info.card_number == prof.card_number
    assert info.holder_name == prof.holder_name
    assert info.company_name == prof.company_name
    assert info.uscc == prof.uscc
    assert info.enterprise_code == prof.enterprise_code
    assert info.card_type is (
        CardType.LEGAL_PERSON if prof.card_type == p.CardType.LEGAL_PERSON else CardType.OPERATOR
    )
    assert info.masked_card_number.endswith(prof.card_number[-4:])
    sent = len(rig.wire.sent)
    assert rig.session.card_info() is info  # cached for this generation
    assert len(rig.wire.sent) == sent


def test_certificates_parse_and_chain_to_the_ca(rig: Rig) -> None:
    prof = rig.profile
    now = datetime.now(UTC)
    expired = prof.valid_until_days < 0
    for slot, stored in (
        (CertSlot.SIGN, rig.state.sign_cert),
        (CertSlot.ENCRYPT, rig.state.enc_cert),
    ):
        der = rig.session.certificate(slot)
        assert der == stored
        info = parse_certificate(der)
        assert info.key_algorithm == prof.algorithm
        assert info.key_bits == prof.key_bits
        assert info.subject_cn == prof.holder_name
        assert info.subject_ou == prof.company_name
        assert info.company_name == prof.company_name
        assert info.org_code == prof.uscc
        assert not info.is_ca
        verify_chain(der, [], [rig.ca_der])
        if expired:
            with pytest.raises(CertificateChainError):
                verify_chain(der, [], [rig.ca_der], at=now)
        else:
            verify_chain(der, [], [rig.ca_der], at=now)
    assert rig.session.certificate(CertSlot.SIGN) != rig.session.certificate(CertSlot.ENCRYPT)
    assert rig.session.signing_certificate().der == rig.state.sign_cert
    assert rig.session.algorithm is expected_algorithm(prof)


def test_pin_status_spends_no_try(rig: Rig) -> None:
    before = rig.state.pin.tries_left
    for _ in range(25):
        status = rig.session.pin_status()
    assert rig.state.pin.tries_left == before
    if rig.blocked:
        assert status == PinStatus(0, blocked=True, verified=False)
        assert rig.card.state.pin.blocked
    else:
        assert status == PinStatus(min(before, 15), blocked=False, verified=False)
    # nothing but SELECTs and VERIFY without data went to the card
    verifies = [c for c in rig.wire.commands() if c.ins == p.INS_VERIFY]
    assert len(verifies) == 25
    assert all(not c.data and c.p1 == 0 for c in verifies)


def test_verify(rig: Rig) -> None:
    if rig.blocked:
        with pytest.raises(PinBlockedError):
            rig.session.verify_pin(rig.profile.pin)
        assert rig.session.pin_status() == PinStatus(0, blocked=True, verified=False)
        return
    rig.session.verify_pin(rig.profile.pin)
    assert rig.session.pin_status() == PinStatus(None, blocked=False, verified=True)
    assert rig.card.verified


def test_wrong_pin_counts_down_then_blocks(rig: Rig) -> None:
    if rig.blocked:
        with pytest.raises(PinBlockedError) as blocked:
            rig.session.verify_pin(WRONG_PIN)
        assert blocked.value.sw == 0x6983
        return
    session, max_tries = rig.session, rig.profile.pin_max_tries
    session.verify_pin(rig.profile.pin)
    for expected in range(max_tries - 1, -1, -1):
        with pytest.raises(WrongPinError) as wrong:
            session.verify_pin(WRONG_PIN)
        # the try that uses the last one still says 63C0, not 6983
        assert wrong.value.tries_left == expected
        assert wrong.value.sw == 0x63C0 | expected
        assert session.pin_status() == PinStatus(expected, blocked=expected == 0, verified=False)
    for pin in (WRONG_PIN, rig.profile.pin):  # compared no more: the right PIN fails too
        with pytest.raises(PinBlockedError):
            session.verify_pin(pin)
    assert session.pin_status() == PinStatus(0, blocked=True, verified=False)
    assert rig.state.pin.tries_left == 0


def test_change_pin_then_verify_the_new_one(rig: Rig) -> None:
    session, old = rig.session, rig.profile.pin
    if rig.blocked:
        with pytest.raises(PinBlockedError):
            session.change_pin(old, NEW_PIN)
        old = rig.usable_pin()
    session.change_pin(old, NEW_PIN)
    assert not session.pin_status().verified  # CHANGE does not verify
    session.verify_pin(NEW_PIN)
    assert session.pin_status().verified
    with pytest.raises(WrongPinError) as wrong:
        session.verify_pin(old)
    assert wrong.value.tries_left == rig.profile.pin_max_tries - 1
    assert not session.pin_status().verified  # a failed VERIFY ends the verified state
    with pytest.raises(WrongPinError):
        session.change_pin(WRONG_PIN, old)
    session.verify_pin(NEW_PIN)  # the failed change changed nothing


def test_unblock_pin(rig: Rig) -> None:
    session, prof = rig.session, rig.profile
    if not rig.blocked:
        session.verify_pin(prof.pin)
        for _ in range(prof.pin_max_tries):
            with pytest.raises(WrongPinError):
                session.verify_pin(WRONG_PIN)
    assert session.pin_status().blocked
    with pytest.raises(WrongPinError) as wrong:
        session.unblock_pin(WRONG_PIN, NEW_PIN)
    assert wrong.value.tries_left == prof.unblock_max_tries - 1
    assert session.pin_status().blocked
    session.unblock_pin(prof.unblock_code, NEW_PIN)
    assert session.pin_status() == PinStatus(
        min(prof.pin_max_tries, 15), blocked=False, verified=False
    )
    assert rig.state.unblock.tries_left == prof.unblock_max_tries
    session.verify_pin(NEW_PIN)
    signature = session.sign(MESSAGE)
    check_signature(rig, MESSAGE, signature.value, independent=False)


def test_logout_ends_the_verified_state(rig: Rig) -> None:
    rig.login()
    rig.session.sign(MESSAGE)
    rig.session.logout()
    assert rig.session.pin_status() == PinStatus(
        min(rig.profile.pin_max_tries, 15), blocked=False, verified=False
    )
    with pytest.raises(SecurityStatusNotSatisfied) as refused:
        rig.session.sign(MESSAGE)
    assert refused.value.sw == 0x6982
    rig.session.logout()  # idempotent


def test_sign(rig: Rig, knobs: CardKnobs) -> None:
    rig.login()
    signature = rig.session.sign(MESSAGE)
    assert signature.algorithm is expected_algorithm(rig.profile)
    check_signature(rig, MESSAGE, signature.value)
    if knobs != CardKnobs():  # the rest does not depend on the transport
        return
    with pytest.raises((AssertionError, InvalidSignature)):
        check_signature(rig, MESSAGE + b"!", signature.value)  # the check can fail

    if rig.profile.algorithm == "SM2":
        point = parse_certificate(rig.state.sign_cert).sm2_point
        assert point is not None
        assert signature.digest == sm2_e(point, MESSAGE)
        assert der_to_raw(signature.der()) == signature.value
        assert signature.der()[0] == 0x30
    else:
        assert signature.digest == hashlib.new(rig.profile.rsa_hash, MESSAGE).digest()
        assert signature.der() == signature.value
    check_signature(rig, b"", rig.session.sign(b"").value)


def test_sign_digest(rig: Rig) -> None:
    rig.login()
    algorithm = rig.session.algorithm
    if algorithm is SignAlgorithm.SM2_SM3:
        point = parse_certificate(rig.state.sign_cert).sm2_point
        assert point is not None
        digest = sm2_e(point, MESSAGE)
    else:
        digest = hashlib.new(rig.profile.rsa_hash, MESSAGE).digest()
    signature = rig.session.sign_digest(digest)
    assert signature.digest == digest
    check_signature(rig, MESSAGE, signature.value)
    sent = len(rig.wire.sent)
    for wrong in (b"", digest[:-1], digest + b"\x00", bytes(64)):
        with pytest.raises(InvalidRequest, match="digest"):
            rig.session.sign_digest(wrong)
    assert len(rig.wire.sent) == sent  # refused before any APDU


BAD_PINS = [
    pytest.param("12345", id="too-short"),
    pytest.param("", id="empty"),
    pytest.param("1" * 17, id="too-long"),
    pytest.param("88888888é", id="non-ascii"),
    pytest.param("密码密码密码", id="cjk"),
    pytest.param("8888 8888", id="space"),
    pytest.param("8888\t8888", id="tab"),
    pytest.param("88888888\x7f", id="del"),
]


def test_invalid_pin_format_sends_nothing(rig: Rig) -> None:
    good, code = rig.profile.pin, rig.profile.unblock_code
    tries = rig.state.pin.tries_left, rig.state.unblock.tries_left
    session = EPortSession(rig.wire)  # not even opened: a refusal needs no SELECT
    for bad in [param.values[0] for param in BAD_PINS]:
        assert isinstance(bad, str)
        attempts: list[tuple[Callable[..., None], tuple[str, ...]]] = [
            (session.verify_pin, (bad,)),
            (session.change_pin, (bad, good)),
            (session.change_pin, (good, bad)),
            (session.unblock_pin, (bad, good)),
            (session.unblock_pin, (code, bad)),
        ]
        for method, args in attempts:
            with pytest.raises(InvalidPinFormat):
                method(*args)
    assert rig.wire.sent == []
    assert (rig.state.pin.tries_left, rig.state.unblock.tries_left) == tries


@pytest.mark.parametrize("bad", BAD_PINS)
def test_each_invalid_pin_is_refused_on_the_host(
    factory: CardFactory, states: dict[str, CardState], bad: str
) -> None:
    rig = make_rig(factory, states, "legal-person-sm2")
    rig.session.select()
    sent = len(rig.wire.sent)
    with pytest.raises(InvalidPinFormat):
        rig.session.verify_pin(bad)
    with pytest.raises(InvalidPinFormat):
        rig.session.verify_pin(bytes(bad, "utf-8"))  # type: ignore[arg-type]
    assert len(rig.wire.sent) == sent
    assert rig.state.pin.tries_left == rig.profile.pin_max_tries


def test_pins_at_the_limits_are_accepted(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    rig = make_rig(factory, states, "legal-person-sm2")
    previous = rig.profile.pin
    for new in ("!#$%&~", "A" * 16, "Zz9!~\"'`{}"):
        rig.session.change_pin(previous, new)
        rig.session.verify_pin(new)
        previous = new


# --- what the knobs put on the wire ---------------------------------------------------


def test_tiny_responses_come_through_get_response(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    rig = make_rig(factory, states, "rsa2048", CardKnobs(max_response_data=16))
    rig.login()
    rig.session.signing_certificate()  # read before, so that only signing is counted
    start = len(rig.wire.sent)
    signature = rig.session.sign(MESSAGE)
    check_signature(rig, MESSAGE, signature.value)
    commands = rig.wire.commands(start)
    assert [c.ins for c in commands[:2]] == [p.INS_MSE, p.INS_PSO]
    get_responses = [c for c in commands if c.ins == INS_GET_RESPONSE]
    assert len(get_responses) == 256 // 16 - 1
    assert all(sw >> 8 == 0x61 for sw in rig.wire.sws(start + 1)[:-1])
    # file reads ask for at most what the card announced, so they need no 61xx
    start = len(rig.wire.sent)
    rig.session.certificate(CertSlot.ENCRYPT)
    reads = [c for c in rig.wire.commands(start) if c.ins == p.INS_READ_BINARY]
    assert len(reads) == -(-len(rig.state.enc_cert) // 16)
    assert all(c.le is not None and c.le <= 16 for c in reads)


@pytest.mark.parametrize("name", ["legal-person-sm2", "legacy-rsa1024", "rsa2048"])
def test_tiny_commands_are_chained(
    factory: CardFactory, states: dict[str, CardState], name: str
) -> None:
    rig = make_rig(factory, states, name, CardKnobs(max_command_data=16))
    rig.session.select()
    start = len(rig.wire.sent)
    rig.session.change_pin(rig.profile.pin, NEW_PIN)
    change = rig.wire.commands(start)
    assert [(c.cla, len(c.data)) for c in change] == [(CLA_CHAINING, 16), (0x00, 16)]
    assert all(c.ins == p.INS_CHANGE_REFERENCE_DATA for c in change)
    rig.session.verify_pin(NEW_PIN)
    rig.session.signing_certificate()  # read before, so that only signing is counted
    start = len(rig.wire.sent)
    signature = rig.session.sign(MESSAGE)
    check_signature(rig, MESSAGE, signature.value)
    pso = [c for c in rig.wire.commands(start) if c.ins == p.INS_PSO]
    input_size = {"SM2": 32, "RSA": 35 if rig.profile.rsa_hash == "sha1" else 51}[
        rig.profile.algorithm
    ]
    sizes = [16] * ((input_size - 1) // 16) + [input_size - 16 * ((input_size - 1) // 16)]
    assert [len(c.data) for c in pso] == sizes
    assert [c.cla for c in pso] == [CLA_CHAINING] * (len(sizes) - 1) + [0x00]
    assert pso[-1].le == 256
    assert all(c.le is None for c in pso[:-1])


def test_exact_le_is_corrected_with_one_resend(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    rig = make_rig(factory, states, "legacy-rsa1024", CardKnobs(exact_le=True))
    rig.session.select()
    first = rig.wire.commands()
    assert [c.ins for c in first] == [p.INS_SELECT, p.INS_SELECT]
    assert rig.wire.sws()[0] >> 8 == 0x6C
    assert first[1].le == rig.wire.sws()[0] & 0xFF
    rig.login()
    rig.session.signing_certificate()
    start = len(rig.wire.sent)
    signature = rig.session.sign(MESSAGE)
    check_signature(rig, MESSAGE, signature.value)
    pso = [c for c in rig.wire.commands(start) if c.ins == p.INS_PSO]
    assert [c.le for c in pso] == [256, 128]
    assert rig.wire.sws(start)[1:] == [0x6C80, 0x9000]


def test_chaining_refused_with_small_commands(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    """A card that accepts neither chaining nor long commands: the host says so clearly
    and sends nothing (no half command, no try spent)."""
    for name in ("legal-person-sm2", "rsa2048"):
        for extended in (False, True):
            knobs = CardKnobs(max_command_data=16, chaining=False, extended_length=extended)
            rig = make_rig(factory, states, name, knobs)
            rig.session.select()
            rig.session.verify_pin(rig.profile.pin)  # a PIN block is exactly 16 bytes
            rig.session.signing_certificate()
            sent = len(rig.wire.sent)
            with pytest.raises(ApduFormatError, match="does not accept command chaining"):
                rig.session.change_pin(rig.profile.pin, NEW_PIN)
            with pytest.raises(ApduFormatError, match="exceed the card's limit of 16"):
                rig.session.sign(MESSAGE)  # SM2 e 32 bytes, DigestInfo 51
            # MSE (6 bytes) went out before the PSO was refused: nothing else did
            assert [c.ins for c in rig.wire.commands(sent)] == [p.INS_MSE]
            assert rig.state.pin.tries_left == rig.profile.pin_max_tries


def test_long_commands_use_extended_length_when_chaining_is_off(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    """More than 255 bytes of data with chaining off: extended length if the card
    announces it, else a clear ApduFormatError before anything is sent."""
    data = bytes(300)
    mse = CommandApdu(0x00, p.INS_MSE, p.MSE_SET_DST_P1, p.MSE_SET_DST_P2, data)
    rig = make_rig(
        factory,
        states,
        "legal-person-sm2",
        CardKnobs(chaining=False, extended_length=True, max_command_data=1024),
    )
    rig.session.select()
    start = len(rig.wire.sent)
    response = rig.session.exchange.transmit(mse)
    assert len(rig.wire.sent) == start + 1
    assert is_extended(rig.wire.sent[start])
    assert response.sw == 0x6A80  # the card read the whole command and refused its content
    rig = make_rig(factory, states, "legal-person-sm2", CardKnobs(chaining=False))
    rig.session.select()
    start = len(rig.wire.sent)
    with pytest.raises(ApduFormatError, match="chaining"):
        rig.session.exchange.transmit(mse)
    assert len(rig.wire.sent) == start


def test_extended_length_reads_a_certificate_in_one_apdu(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    knobs = CardKnobs(extended_length=True, max_response_data=4096, max_command_data=4096)
    rig = make_rig(factory, states, "rsa2048", knobs)
    assert rig.session.capabilities.max_response_data == 4096
    start = len(rig.wire.sent)
    cert = rig.session.certificate(CertSlot.SIGN)
    assert cert == rig.state.sign_cert
    assert len(cert) > 256
    reads = [raw for raw in rig.wire.sent[start:] if raw[1] == p.INS_READ_BINARY]
    assert len(reads) == 1
    assert is_extended(reads[0])
    assert len(reads[0]) == 7  # case 2 extended: header, 00, Le (2 bytes)
    assert int.from_bytes(reads[0][5:7], "big") == len(cert)
    assert INS_GET_RESPONSE not in [raw[1] for raw in rig.wire.sent]


def test_realistic_timing_is_modelled_not_slept(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    """The card's `sleep` hook records the delays the timing model asks for."""
    model = TimingModel.REALISTIC
    for name, signature_s in (
        ("legal-person-sm2", model.sm2_signature_s),
        ("legacy-rsa1024", model.rsa1024_signature_s),
        ("rsa2048", model.rsa2048_signature_s),
    ):
        delays: list[float] = []
        card = SimulatedCard(
            fresh(states[name]), knobs=CardKnobs(timing=model), sleep=delays.append
        )
        wire = Wire(InProcessTransport(card))
        session = EPortSession.open(wire)
        session.verify_pin(PROFILES[name].pin)
        session.sign(MESSAGE)
        assert delays.count(model.apdu_delay_s) == len(wire.sent)
        assert [d for d in delays if d != model.apdu_delay_s] == [signature_s]
        assert sum(delays) == pytest.approx(len(wire.sent) * model.apdu_delay_s + signature_s)


# --- generations: reset, removal, another card ----------------------------------------


def test_reset_reselects_and_forgets_the_pin(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    rig = make_rig(factory, states, "legal-person-sm2")
    rig.session.card_info()
    rig.login()
    assert rig.session.pin_status().verified
    rig.card.knobs.max_response_data = 32  # the card will announce something new
    rig.transport.reset()
    start = len(rig.wire.sent)
    assert rig.session.pin_status() == PinStatus(10, blocked=False, verified=False)
    first = rig.wire.commands(start)[0]
    assert (first.ins, first.p1, first.data) == (p.INS_SELECT, p.SELECT_BY_AID, p.EPORT_AID)
    assert rig.session.capabilities.max_response_data == 32  # not the stale 256
    with pytest.raises(SecurityStatusNotSatisfied):
        rig.session.sign(MESSAGE)
    start = len(rig.wire.sent)
    assert rig.session.card_info().holder_name == rig.profile.holder_name
    assert p.INS_READ_BINARY in [c.ins for c in rig.wire.commands(start)]  # read anew


def test_another_card_inserted(factory: CardFactory, states: dict[str, CardState]) -> None:
    rig = make_rig(factory, states, "legal-person-sm2")
    assert rig.session.card_info().card_number == PROFILES["legal-person-sm2"].card_number
    before = rig.session.algorithm
    assert before is SignAlgorithm.SM2_SM3
    rig.login()
    rig.transport.remove()
    with pytest.raises(CardRemoved):
        rig.session.pin_status()
    other = SimulatedCard(fresh(states["legacy-rsa1024"]))
    rig.transport.insert(other)
    info = rig.session.card_info()
    assert info.card_number == PROFILES["legacy-rsa1024"].card_number
    assert info.holder_name == PROFILES["legacy-rsa1024"].holder_name
    assert rig.session.certificate() == other.state.sign_cert
    assert rig.session.algorithm is SignAlgorithm.RSA_SHA1
    assert not rig.session.pin_status().verified
    with pytest.raises(SecurityStatusNotSatisfied):
        rig.session.sign(MESSAGE)


def test_same_card_reinserted_is_read_again(
    factory: CardFactory, states: dict[str, CardState]
) -> None:
    rig = make_rig(factory, states, "operator-sm2")
    rig.session.card_info()
    rig.login()
    rig.transport.remove()
    rig.transport.insert()
    start = len(rig.wire.sent)
    assert rig.session.card_info().holder_name == rig.profile.holder_name
    assert rig.wire.commands(start)[0].data == p.EPORT_AID
    assert not rig.session.pin_status().verified


# --- cards that are not E-Port cards, and injected faults -----------------------------


class NoApplication:
    """A real simulated card whose SELECT of the E-Port AID answers `sw`."""

    def __init__(self, card: SimulatedCard, sw: int) -> None:
        self._card = card
        self._sw = sw

    @property
    def atr(self) -> bytes:
        return self._card.atr

    def power_on(self) -> None:
        self._card.power_on()

    def power_off(self) -> None:
        self._card.power_off()

    def reset(self) -> None:
        self._card.reset()

    def process(self, apdu: bytes) -> bytes:
        if apdu[1:3] == bytes((p.INS_SELECT, p.SELECT_BY_AID)):
            return self._sw.to_bytes(2, "big")
        return self._card.process(apdu)


class Mute:
    """A tiny card that knows no instruction at all."""

    atr = bytes.fromhex("3B00")

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def process(self, apdu: bytes) -> bytes:
        return bytes.fromhex("6D00")


@pytest.mark.parametrize("sw", [0x6A82, 0x6D00, 0x6E00, 0x6A86])
def test_card_without_the_application_is_unsupported(states: dict[str, CardState], sw: int) -> None:
    card = NoApplication(SimulatedCard(fresh(states["legal-person-sm2"])), sw)
    with pytest.raises(UnsupportedCard, match=f"{sw:04X}"):
        EPortSession.open(InProcessTransport(card))
    session = EPortSession(InProcessTransport(card))
    with pytest.raises(UnsupportedCard):
        session.card_info()  # every command selects first


def test_mute_card_is_unsupported() -> None:
    with pytest.raises(UnsupportedCard, match="6D00"):
        EPortSession.open(InProcessTransport(Mute()))


def test_fci_of_another_profile_version_is_unsupported(states: dict[str, CardState]) -> None:
    card = SimulatedCard(fresh(states["legal-person-sm2"]))
    fci = card._fci()
    assert fci.count(bytes((p.TAG_PROFILE_VERSION, 1, p.PROFILE_VERSION))) == 1
    odd = fci.replace(bytes((p.TAG_PROFILE_VERSION, 1, 1)), bytes((p.TAG_PROFILE_VERSION, 1, 2)))
    card._fci = lambda: odd  # type: ignore[method-assign]
    with pytest.raises(UnsupportedCard, match="version 2"):
        EPortSession.open(InProcessTransport(card))


def test_injected_pso_fault(factory: CardFactory, states: dict[str, CardState]) -> None:
    rig = make_rig(factory, states, "legal-person-sm2")
    rig.login()
    rig.card.knobs.fail_next(0x6581, ins=p.INS_PSO)
    with pytest.raises(ApduError) as failed:
        rig.session.sign(MESSAGE)
    assert failed.value.sw == 0x6581
    assert type(failed.value) is ApduError
    assert rig.card.knobs.pending_faults == 0
    check_signature(rig, MESSAGE, rig.session.sign(MESSAGE).value)  # nothing was broken


def test_injected_read_binary_fault(factory: CardFactory, states: dict[str, CardState]) -> None:
    rig = make_rig(factory, states, "rsa2048")
    rig.card.knobs.fail_next(0x6982, ins=p.INS_READ_BINARY)
    with pytest.raises(SecurityStatusNotSatisfied) as failed:
        rig.session.certificate()
    assert failed.value.sw == 0x6982
    assert rig.session.certificate() == rig.state.sign_cert  # the failure was not cached
    rig.card.knobs.fail_next(0x6A82, ins=p.INS_SELECT)
    rig.transport.reset()
    with pytest.raises(UnsupportedCard):
        rig.session.pin_status()
    assert rig.session.pin_status().tries_left == 10  # the next attempt selects again


def test_tries_above_fifteen_saturate(factory: CardFactory) -> None:
    prof = dataclasses.replace(PROFILES["legal-person-sm2"], name="many-tries", pin_max_tries=20)
    session = EPortSession.open(InProcessTransport(SimulatedCard(factory.make_state(prof))))
    assert session.pin_status() == PinStatus(15, blocked=False, verified=False)
    for _ in range(5):
        with pytest.raises(WrongPinError) as wrong:
            session.verify_pin(WRONG_PIN)
        assert wrong.value.tries_left == 15  # 19..15 left, 63CF each time
    with pytest.raises(WrongPinError) as wrong:
        session.verify_pin(WRONG_PIN)
    assert wrong.value.tries_left == 14

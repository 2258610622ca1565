"""The whole E-Port session through the stack a kiosk uses:
EPortSession -> ApduExchange -> PcscTransport (pyscard) -> pcscd -> vpcd -> SimulatedCard.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from card.crypto.certs import parse_certificate, verify_chain
from card.crypto.sm2 import sm2_verify
from card.eport.driver import CertSlot, SignAlgorithm
from card.eport.session import EPortSession
from card.errors import CardRemoved, PinBlockedError, UnsupportedCard, WrongPinError
from card.pcsc import PcscTransport
from simulator.card_os import SimulatedCard
from simulator.knobs import CardKnobs
from simulator.profiles import PROFILES, get_profile
from simulator.state import CardFactory
from tests.pcscd_support import PcscDaemon, Plug, ReaderWatch

pytestmark = pytest.mark.pcsc

MESSAGE = "单一窗口 小微政策保单 授权网上协议".encode()


@pytest.fixture(scope="module")
def factory() -> CardFactory:
    return CardFactory()


@dataclass
class Opened:
    card: SimulatedCard
    transport: PcscTransport
    session: EPortSession


@pytest.fixture
def open_card(pcscd: PcscDaemon, plug: Plug, factory: CardFactory) -> Iterator[object]:
    transports: list[PcscTransport] = []

    def _open(profile: str, knobs: CardKnobs | None = None) -> Opened:
        card = SimulatedCard(factory.make_state(profile), knobs=knobs)
        plug(card)  # type: ignore[arg-type]
        transport = PcscTransport(pcscd.readers[0])
        transports.append(transport)
        return Opened(card, transport, EPortSession.open(transport))

    yield _open
    for transport in transports:
        transport.close()


def _verify(session: EPortSession, message: bytes, value: bytes, algorithm: SignAlgorithm) -> bool:
    cert = session.signing_certificate()
    if algorithm is SignAlgorithm.SM2_SM3:
        assert cert.sm2_point is not None
        return sm2_verify(cert.sm2_point, message, value)
    assert cert.rsa_public_key is not None
    digest = hashes.SHA1() if algorithm is SignAlgorithm.RSA_SHA1 else hashes.SHA256()
    try:
        cert.rsa_public_key.verify(value, message, padding.PKCS1v15(), digest)
    except Exception:
        return False
    return True


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_full_session_for_every_profile(open_card, factory: CardFactory, profile: str) -> None:  # type: ignore[no-untyped-def]
    opened: Opened = open_card(profile)
    session = opened.session
    prof = get_profile(profile)

    info = session.card_info()
    assert info.card_number == prof.card_number
    assert info.holder_name == prof.holder_name
    assert info.company_name == prof.company_name
    assert info.uscc == prof.uscc

    sign_cert = session.certificate(CertSlot.SIGN)
    enc_cert = session.certificate(CertSlot.ENCRYPT)
    assert sign_cert != enc_cert
    ca = factory.ca(prof.algorithm)
    verify_chain(sign_cert, [], [ca.certificate_der])
    verify_chain(enc_cert, [], [ca.certificate_der])
    assert parse_certificate(sign_cert).subject_cn == prof.holder_name

    status = session.pin_status()
    if prof.pin_tries_left == 0:
        assert status.blocked
        with pytest.raises(PinBlockedError):
            session.verify_pin(prof.pin)
        return
    assert status.tries_left == prof.pin_max_tries
    assert session.pin_status().tries_left == prof.pin_max_tries  # status spends no try

    with pytest.raises(WrongPinError) as wrong:
        session.verify_pin("00000001" if prof.pin != "00000001" else "00000002")
    assert wrong.value.tries_left == prof.pin_max_tries - 1

    session.verify_pin(prof.pin)
    assert session.pin_status().verified

    signature = session.sign(MESSAGE)
    expected = SignAlgorithm.SM2_SM3 if prof.algorithm == "SM2" else None
    if expected is not None:
        assert signature.algorithm is expected
        assert len(signature.value) == 64
    assert _verify(session, MESSAGE, signature.value, signature.algorithm)

    session.change_pin(prof.pin, "Kiosk2026")
    session.logout()
    assert not session.pin_status().verified
    session.verify_pin("Kiosk2026")
    assert session.pin_status().tries_left is None  # verified: the card reports 9000


def test_large_reads_and_chained_writes_through_pcscd(open_card) -> None:  # type: ignore[no-untyped-def]
    # Tiny card buffers force 61xx GET RESPONSE rounds and command chaining on the wire.
    opened: Opened = open_card("rsa2048", CardKnobs(max_response_data=32, max_command_data=16))
    session = opened.session
    assert len(session.certificate(CertSlot.SIGN)) > 500
    session.verify_pin(get_profile("rsa2048").pin)
    signature = session.sign(MESSAGE)  # DigestInfo (51 bytes) is chained in 16-byte chunks
    assert len(signature.value) == 256
    assert _verify(session, MESSAGE, signature.value, signature.algorithm)


def test_card_removed_mid_signature_then_next_card_works(
    pcscd: PcscDaemon, plug: Plug, factory: CardFactory
) -> None:
    card = SimulatedCard(factory.make_state("legal-person-sm2"))
    link = plug(card)  # type: ignore[arg-type]
    transport = PcscTransport(pcscd.readers[0])
    try:
        session = EPortSession.open(transport)
        session.verify_pin("88888888")
        link.remove_when(lambda apdu: len(apdu) > 1 and apdu[1] == 0x2A)  # during PSO
        started = time.monotonic()
        with pytest.raises(CardRemoved):
            session.sign(MESSAGE)
        assert time.monotonic() - started < 5.0  # a typed error, no hang

        link.insert()
        deadline = time.monotonic() + 10
        while True:
            try:
                again = EPortSession.open(transport)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        # The card was powered off: the PIN must be verified again.
        assert not again.pin_status().verified
        again.verify_pin("88888888")
        assert _verify(again, MESSAGE, again.sign(MESSAGE).value, SignAlgorithm.SM2_SM3)
    finally:
        transport.close()


class NotAnEPortCard:
    """A well-behaved ISO card without the E-Port application."""

    atr = bytes.fromhex("3B8880014A434F5033315632")  # a generic T=1 ATR

    def power_on(self) -> None: ...

    def power_off(self) -> None: ...

    def reset(self) -> None: ...

    def process(self, apdu: bytes) -> bytes:
        if apdu[1:2] == b"\xa4":
            return b"\x6a\x82"
        return b"\x6d\x00"


def test_unknown_card_is_a_clear_unsupported_card_error(pcscd: PcscDaemon, plug: Plug) -> None:
    plug(NotAnEPortCard())  # type: ignore[arg-type]
    transport = PcscTransport(pcscd.readers[0])
    try:
        with pytest.raises(UnsupportedCard, match="no E-Port application"):
            EPortSession.open(transport)
    finally:
        transport.close()


def test_two_readers_two_cards(pcscd: PcscDaemon, plug: Plug, factory: CardFactory) -> None:
    cards = [SimulatedCard(factory.make_state(p)) for p in ("legal-person-sm2", "operator-sm2")]
    for slot, card in enumerate(cards):
        plug(card, slot)  # type: ignore[arg-type]
    results: dict[int, str] = {}

    def worker(slot: int) -> None:
        transport = PcscTransport(pcscd.readers[slot])
        try:
            results[slot] = EPortSession.open(transport).card_info().card_number
        finally:
            transport.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {
        0: get_profile("legal-person-sm2").card_number,
        1: get_profile("operator-sm2").card_number,
    }


def test_card_sim_vpcd_cli_inserts_and_removes_on_command(
    pcscd: PcscDaemon, watch: ReaderWatch
) -> None:
    reader = pcscd.readers[1]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulator.cli",
            "vpcd",
            "operator-sm2",
            "--port",
            str(pcscd.port(1)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    try:
        watch.present(reader, timeout=10)
        transport = PcscTransport(reader)
        try:
            info = EPortSession.open(transport).card_info()
            assert info.card_number == get_profile("operator-sm2").card_number
        finally:
            transport.close()
        proc.stdin.write("remove\n")
        proc.stdin.flush()
        watch.empty(reader)
        proc.stdin.write("insert\n")
        proc.stdin.flush()
        watch.present(reader)
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
        watch.empty(reader)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

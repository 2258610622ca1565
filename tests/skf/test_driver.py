"""SkfDriver over softskf with simulated E-Port cards: discovery, certificates, card
info, PIN, signatures (verified, also by the openssl CLI), removal, hangs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from card import errors as ce
from card.crypto.certs import certificate_to_pem, parse_certificate
from card.crypto.rsa import rsa_verify_digest, rsa_verify_pkcs1
from card.crypto.sm2 import raw_to_der, sm2_e, sm2_verify, sm2_verify_digest
from card.eport.driver import CardType, CertSlot, SignAlgorithm
from card.skf.binding import SkfLibrary
from card.skf.driver import SkfDriver, SkfOptions
from card.skf.sar import SkfDeviceRemoved, SkfHandleInvalid
from tests.skf.conftest import SoftSkf
from tests.skf.softskf.store import (
    StoreApplication,
    StoreContainer,
    StoreDevice,
    StorePin,
    device_from_state,
    user_pin_counter,
)

PIN = "88888888"
MESSAGE = "报关单 2024-001 签名".encode()


# --- discovery ----------------------------------------------------------------------------


def test_opens_the_only_key_and_starts_logged_out(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    assert driver.device_name.text == "SoftSKF Token 0"
    assert (driver.discovery.application, driver.discovery.container) == ("EPORT", "SignKey")
    assert driver.atr == b""
    assert driver.algorithm is SignAlgorithm.SM2_SM3
    assert driver.pin_status().verified is False
    with pytest.raises(ce.SecurityStatusNotSatisfied):
        driver.sign(MESSAGE)


def test_discovery_passes_over_empty_and_certificate_less_containers(softskf: SoftSkf) -> None:
    card = device_from_state(softskf.cards.get("operator-sm2"), application="EPORT")
    no_cert = StoreContainer("KeyOnly", 2, sign_key=card.applications[0].containers[0].sign_key)
    card.applications.insert(
        0,
        StoreApplication("OTHER", StorePin(PIN), containers=[StoreContainer("Empty", 0), no_cert]),
    )
    card.applications[1].containers.insert(0, StoreContainer("Unused", 0))
    softskf.load(card)
    driver = softskf.open()
    assert (driver.discovery.application, driver.discovery.container) == ("EPORT", "SignKey")
    notes = " | ".join(driver.discovery.notes)
    assert "'OTHER'/'Empty': no key" in notes
    assert "'OTHER'/'KeyOnly': ECC key without a signing certificate" in notes
    assert "'EPORT'/'Unused'" in notes
    assert softskf.open_handles() == 3  # device, application, container: the rest closed


def test_configured_names_are_required(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open(SkfOptions(application="EPORT", container="SignKey"))
    assert driver.discovery.container == "SignKey"
    driver.close()
    with pytest.raises(ce.UnsupportedCard, match=r"application 'NOPE'.*it has: 'EPORT'"):
        softskf.open(SkfOptions(application="NOPE"))
    with pytest.raises(ce.UnsupportedCard, match=r"no container 'Nope'.*'SignKey'"):
        softskf.open(SkfOptions(container="Nope"))
    assert softskf.open_handles() == 0  # failed opens leak nothing


def test_device_selection(softskf: SoftSkf) -> None:
    first = device_from_state(softskf.cards.get("legal-person-sm2"), device="Token A")
    second = device_from_state(softskf.cards.get("operator-sm2"), device="Token B")
    softskf.load(first, second)
    assert softskf.open().card_info().holder_name == "张伟"  # the first present
    assert softskf.open(SkfOptions(device="Token B")).card_info().holder_name == "李娜"
    with pytest.raises(ce.CardMissing, match=r"'Token C' is not present.*'Token A', 'Token B'"):
        softskf.open(SkfOptions(device="Token C"))


def test_no_device_and_no_key(softskf: SoftSkf) -> None:
    with pytest.raises(ce.CardMissing, match="no SKF device"):
        softskf.open()
    softskf.load(StoreDevice("Blank", applications=[StoreApplication("APP", StorePin(PIN))]))
    with pytest.raises(ce.UnsupportedCard, match="application 'APP' has no container"):
        softskf.open()
    softskf.load(StoreDevice("Blank"))
    with pytest.raises(ce.UnsupportedCard, match="no application"):
        softskf.open()


def test_a_certificate_that_is_not_the_containers_key_is_refused(softskf: SoftSkf) -> None:
    card = device_from_state(softskf.cards.get("legal-person-sm2"))
    card.applications[0].containers[0].sign_cert = softskf.cards.get("operator-sm2").sign_cert
    softskf.load(card)
    with pytest.raises(ce.UnsupportedCard, match="not the key of its signing certificate"):
        softskf.open()
    card.applications[0].containers[0].sign_cert = softskf.cards.get("legacy-rsa1024").sign_cert
    softskf.load(card)
    with pytest.raises(ce.UnsupportedCard, match=r"holds a SM2 key but .* RSA key"):
        softskf.open()
    assert softskf.open_handles() == 0


# --- certificates and card info -----------------------------------------------------------


@pytest.mark.parametrize("profile", ["legal-person-sm2", "operator-sm2", "legacy-rsa1024"])
def test_certificates_and_card_info_are_the_profiles(softskf: SoftSkf, profile: str) -> None:
    state = softskf.load_card(profile)
    driver = softskf.open(SkfOptions(card_type=CardType.LEGAL_PERSON))
    assert driver.certificate() == state.sign_cert
    assert driver.certificate(CertSlot.SIGN) == state.sign_cert
    assert driver.certificate(CertSlot.ENCRYPT) == state.enc_cert
    info = driver.card_info()
    assert info.card_number == state.card_number  # the device serial
    assert info.holder_name == state.holder_name
    assert info.company_name == state.company_name
    assert info.uscc == state.uscc
    assert info.card_type is CardType.LEGAL_PERSON
    assert info.enterprise_code is None  # not in the certificate, not in SKF


def test_card_number_falls_back_to_the_certificate_serial(softskf: SoftSkf) -> None:
    state = softskf.cards.get("operator-sm2")
    card = device_from_state(state)
    card.serial = ""
    softskf.load(card)
    info = softskf.open().card_info()
    assert info.card_number == parse_certificate(state.sign_cert).serial_hex
    assert info.card_type is CardType.OPERATOR  # the default


def test_a_missing_encryption_certificate(softskf: SoftSkf) -> None:
    card = device_from_state(softskf.cards.get("operator-sm2"))
    card.applications[0].containers[0].enc_cert = b""
    softskf.load(card)
    with pytest.raises(ce.FileNotFound):
        softskf.open().certificate(CertSlot.ENCRYPT)


# --- PIN ----------------------------------------------------------------------------------


def test_pin_status_spends_no_try_and_verify_resets_the_counter(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    for _ in range(3):
        status = driver.pin_status()
        assert (status.tries_left, status.blocked, status.verified) == (10, False, False)
    with pytest.raises(ce.WrongPinError) as wrong:
        driver.verify_pin("11111111")
    assert wrong.value.tries_left == 9
    assert driver.pin_status().tries_left == 9
    assert user_pin_counter(softskf.store, "EPORT") == (10, 9)  # persisted
    driver.verify_pin(PIN)
    status = driver.pin_status()
    assert (status.tries_left, status.verified) == (None, True)  # as an APDU card: no count
    driver.logout()
    assert driver.pin_status().verified is False
    with pytest.raises(ce.SecurityStatusNotSatisfied):
        driver.sign(MESSAGE)


def test_the_retry_counter_survives_a_new_library_instance(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    driver = softskf.open()
    for left in (9, 8):
        with pytest.raises(ce.WrongPinError) as wrong:
            driver.verify_pin("00000000")
        assert wrong.value.tries_left == left
    driver.close()
    fresh = SkfDriver.open(SkfLibrary(softskf.library_path))
    try:
        assert fresh.pin_status().tries_left == 8
    finally:
        fresh.close()


def test_the_last_try_then_blocked(softskf: SoftSkf) -> None:
    card = device_from_state(softskf.cards.get("legal-person-sm2"))
    card.applications[0].user_pin.tries_left = 1
    softskf.load(card)
    driver = softskf.open()
    assert driver.pin_status().tries_left == 1
    with pytest.raises(ce.WrongPinError) as wrong:
        driver.verify_pin("11111111")
    assert wrong.value.tries_left == 0
    status = driver.pin_status()
    assert (status.tries_left, status.blocked, status.verified) == (0, True, False)
    with pytest.raises(ce.PinBlockedError):
        driver.verify_pin(PIN)  # even the right PIN


def test_blocked_pin_card(softskf: SoftSkf) -> None:
    softskf.load_card("blocked-pin")
    driver = softskf.open()
    status = driver.pin_status()
    assert (status.tries_left, status.blocked) == (0, True)
    with pytest.raises(ce.PinBlockedError) as blocked:
        driver.verify_pin(PIN)
    assert blocked.value.sw == 0x6983
    with pytest.raises(ce.PinBlockedError):
        driver.change_pin(PIN, "12345678")


@pytest.mark.parametrize("bad", ["12345", "x" * 17, "1234 678", "密码密码密码", ""])
def test_a_malformed_pin_never_reaches_the_library(softskf: SoftSkf, bad: str) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    softskf.control.fail("SKF_VerifyPIN", 0x0A000001)  # would show if it were called
    softskf.control.fail("SKF_ChangePIN", 0x0A000001)
    with pytest.raises(ce.InvalidPinFormat):
        driver.verify_pin(bad)
    with pytest.raises(ce.InvalidPinFormat):
        driver.change_pin(PIN, bad)
    with pytest.raises(ce.InvalidPinFormat):
        driver.change_pin(bad, PIN)
    assert user_pin_counter(softskf.store, "EPORT") == (10, 10)


def test_the_librarys_own_pin_length_check_is_a_format_error(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    with pytest.raises(ce.InvalidPinFormat) as caught:
        driver.library.verify_pin(driver._application(), b"123")
    assert isinstance(caught.value, ce.SkfError)
    assert caught.value.sar == 0x0A000027  # SAR_PIN_LEN_RANGE
    assert driver.pin_status().tries_left == 10


def test_change_pin(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    driver = softskf.open()
    with pytest.raises(ce.WrongPinError) as wrong:
        driver.change_pin("99999999", "12345678")
    assert wrong.value.tries_left == 9
    driver.change_pin(PIN, "12345678")
    assert driver.pin_status().tries_left == 10
    with pytest.raises(ce.WrongPinError):
        driver.verify_pin(PIN)
    driver.verify_pin("12345678")
    driver.sign(MESSAGE)


# --- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["legal-person-sm2", "operator-sm2"])
def test_sm2_signature_verifies(softskf: SoftSkf, profile: str) -> None:
    softskf.load_card(profile)
    driver = softskf.open()
    driver.verify_pin(PIN)
    point = driver.signing_certificate().sm2_point
    assert point is not None
    signature = driver.sign(MESSAGE)
    assert signature.algorithm is SignAlgorithm.SM2_SM3
    assert signature.digest == sm2_e(point, MESSAGE)  # e computed as EPortSession does
    assert len(signature.value) == 64
    assert sm2_verify(point, MESSAGE, signature.value)
    assert not sm2_verify(point, MESSAGE + b".", signature.value)
    e = hashlib.sha256(b"anything").digest()  # any 32 bytes stand for e
    assert sm2_verify_digest(point, e, driver.sign_digest(e).value)


def test_sm2_signature_verifies_with_the_openssl_cli(softskf: SoftSkf, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary")
    state = softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    (tmp_path / "cert.pem").write_text(certificate_to_pem(state.sign_cert))
    pub = subprocess.run(
        [openssl, "x509", "-in", str(tmp_path / "cert.pem"), "-pubkey", "-noout"],
        capture_output=True,
        check=True,
        timeout=30,
    )
    (tmp_path / "pub.pem").write_bytes(pub.stdout)
    (tmp_path / "sig.der").write_bytes(driver.sign(MESSAGE).der())

    def verify(message: bytes) -> subprocess.CompletedProcess[bytes]:
        (tmp_path / "msg").write_bytes(message)
        return subprocess.run(
            [
                *(openssl, "pkeyutl", "-verify", "-rawin", "-digest", "sm3"),
                *("-pkeyopt", "distid:1234567812345678", "-pubin"),
                *("-inkey", str(tmp_path / "pub.pem"), "-in", str(tmp_path / "msg")),
                *("-sigfile", str(tmp_path / "sig.der")),
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )

    ok = verify(MESSAGE)
    assert ok.returncode == 0, ok.stderr
    assert b"Verified Successfully" in ok.stdout
    assert verify(MESSAGE + b"!").returncode != 0


def test_rsa1024_signs_sha1_and_sha256(softskf: SoftSkf) -> None:
    softskf.load_card("legacy-rsa1024")
    driver = softskf.open()
    driver.verify_pin(PIN)
    assert driver.algorithm is SignAlgorithm.RSA_SHA1
    key = driver.signing_certificate().rsa_public_key
    assert key is not None
    sha1 = driver.sign(MESSAGE)
    assert sha1.algorithm is SignAlgorithm.RSA_SHA1
    assert len(sha1.value) == 128
    assert rsa_verify_pkcs1(key, sha1.value, MESSAGE, "sha1")
    assert not rsa_verify_pkcs1(key, sha1.value, MESSAGE + b".", "sha1")
    sha256 = driver.sign(MESSAGE, algorithm=SignAlgorithm.RSA_SHA256)
    assert rsa_verify_pkcs1(key, sha256.value, MESSAGE, "sha256")
    digest = hashlib.sha1(b"x", usedforsecurity=False).digest()
    assert rsa_verify_digest(key, driver.sign_digest(digest).value, digest, "sha1")


def test_algorithm_requests_that_cannot_be_served(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    with pytest.raises(ce.InvalidRequest, match="cannot sign RSA-SHA256"):
        driver.sign(MESSAGE, algorithm=SignAlgorithm.RSA_SHA256)
    with pytest.raises(ce.InvalidRequest, match="32-byte digest"):
        driver.sign_digest(b"\0" * 20)


def test_a_left_aligned_signature_blob_is_refused(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    softskf.control.signature_alignment("left")  # r and s in the first 32 bytes
    with pytest.raises(ce.ProtocolError, match="right-aligned"):
        driver.sign(MESSAGE)


def test_library_e_agrees_with_the_host(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    driver = softskf.open()
    point = driver.signing_certificate().sm2_point
    assert point is not None
    assert driver.library_sm2_e(MESSAGE) == sm2_e(point, MESSAGE)
    assert driver.library_sm2_e(b"") == sm2_e(point, b"")
    assert driver.library_sm2_e(MESSAGE, b"another id") == sm2_e(point, MESSAGE, b"another id")
    softskf.control.digest_supported(False)  # SKF_DigestInit answers SAR_NOTSUPPORTYETERR
    assert driver.library_sm2_e(MESSAGE) is None


# --- removal, re-insertion, hangs ---------------------------------------------------------


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def test_pulled_device(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    softskf.control.pull()
    with pytest.raises(ce.CardRemoved) as removed:
        driver.sign(MESSAGE)
    assert isinstance(removed.value, SkfDeviceRemoved)
    with pytest.raises(ce.CardRemoved):
        driver.pin_status()
    driver.close()
    with pytest.raises(ce.CardMissing):
        softskf.open()
    assert softskf.open_handles() == 0


def test_removal_in_the_middle_of_a_signature(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    softskf.control.hang("SKF_ECCSignData")
    thread, box = _in_thread(lambda: driver.sign(MESSAGE))
    softskf.control.wait_until_hanging("SKF_ECCSignData")
    softskf.control.pull()
    softskf.control.hang(None)
    thread.join(10)
    assert not thread.is_alive()
    assert isinstance(box.get("error"), ce.CardRemoved), box


def test_reinserted_device_needs_a_new_driver_and_a_new_pin(softskf: SoftSkf) -> None:
    softskf.load_card("operator-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    softskf.control.pull()
    softskf.control.insert()
    with pytest.raises(ce.CardReset) as stale:
        driver.sign(MESSAGE)
    assert isinstance(stale.value, SkfHandleInvalid)
    driver.close()
    fresh = softskf.open()
    with pytest.raises(ce.SecurityStatusNotSatisfied):  # the login went with the device
        fresh.sign(MESSAGE)
    fresh.verify_pin(PIN)
    assert sm2_verify_digest(
        fresh.signing_certificate().sm2_point or b"", (sig := fresh.sign(MESSAGE)).digest, sig.value
    )


def test_a_hanging_call_can_be_abandoned(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    softskf.control.hang("SKF_ECCSignData")
    thread, box = _in_thread(lambda: driver.sign(MESSAGE))
    thread.join(0.5)  # the caller's timeout
    assert thread.is_alive()
    assert not box
    # The owner reopens: a new driver works while the abandoned call still hangs.
    fresh = softskf.open()
    fresh.verify_pin(PIN)
    assert fresh.pin_status().verified
    softskf.control.hang(None)
    thread.join(10)
    assert not thread.is_alive()
    assert "result" in box  # the abandoned call finished; its result is discarded


def test_close_is_idempotent_and_releases_everything(softskf: SoftSkf) -> None:
    softskf.load_card("legacy-rsa1024")
    with softskf.open() as driver:
        assert softskf.open_handles() == 3
    assert softskf.open_handles() == 0
    driver.close()
    with pytest.raises(ce.CardError, match="closed"):
        driver.pin_status()


def test_signature_der_form(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    driver.verify_pin(PIN)
    signature = driver.sign(MESSAGE)
    assert signature.der() == raw_to_der(signature.value)

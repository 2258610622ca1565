from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import gmalg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card.crypto import der, oids
from card.crypto.certs import (
    CertificateChainError,
    CertificateInfo,
    certificate_from_pem,
    certificate_to_pem,
    days_left,
    parse_certificate,
    verify_chain,
    verify_issued_by,
)
from card.crypto.sm2 import SM2_DEFAULT_ID, Sm2PrivateKey
from card.errors import ProtocolError
from simulator.ca import TestCA

NOW = datetime(2026, 6, 1, 8, 0, 0, tzinfo=UTC)
COMPANY = "上海某某国际贸易有限公司"
ORG_CODE = "91310000MA1K4XXXXX"
EPORT_EXTENSIONS = {oids.EPORT_COMPANY_NAME: COMPANY, oids.EPORT_ORG_CODE: ORG_CODE}


def _ca(algorithm: Literal["SM2", "RSA"], name: str | None = None, **kwargs: Any) -> TestCA:
    return TestCA.create(algorithm, name, not_before=NOW - timedelta(days=365), **kwargs)


@pytest.fixture(scope="module")
def sm2_root() -> TestCA:
    return _ca("SM2")


@pytest.fixture(scope="module")
def rsa_root() -> TestCA:
    return _ca("RSA")


@pytest.fixture(scope="module")
def card_key() -> Sm2PrivateKey:
    return Sm2PrivateKey.generate()


@pytest.fixture(scope="module")
def rsa_card_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


IssueFn = Callable[..., bytes]


def _issue(
    ca: TestCA,
    public_key: bytes | rsa.RSAPublicKey,
    *,
    serial: int = 0x1234,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=335),
    key_usage: str = "sign",
    **kwargs: object,
) -> bytes:
    return ca.issue(
        public_key,
        common_name="张三",
        org_unit=COMPANY,
        serial=serial,
        not_before=not_before,
        not_after=not_after,
        key_usage=key_usage,  # type: ignore[arg-type]
        extensions=EPORT_EXTENSIONS,
        **kwargs,  # type: ignore[arg-type]
    )


def _both_parsers(cert_der: bytes) -> CertificateInfo:
    via_cryptography = parse_certificate(cert_der)
    via_reader = parse_certificate(cert_der, use_cryptography=False)
    assert via_cryptography == via_reader
    return via_cryptography


# --- issue + parse ---------------------------------------------------------------------


def test_sm2_card_certificate_round_trip(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    cert = _issue(sm2_root, card_key.public_point, serial=0x80)
    info = _both_parsers(cert)
    assert info.der == cert
    assert info.serial_hex == "80"  # no DER sign octet
    assert (info.subject_cn, info.subject_ou, info.subject_o) == ("张三", COMPANY, "中国电子口岸")
    assert info.issuer_cn == "card-agent test CA (SM2)"
    assert info.not_before == NOW - timedelta(days=30)
    assert info.not_after == NOW + timedelta(days=335)
    assert info.not_after.tzinfo is not None
    assert (info.key_algorithm, info.key_bits) == ("SM2", 256)
    assert info.sm2_point == card_key.public_point
    assert info.rsa_public_key is None
    assert info.signature_algorithm_oid == oids.SM2_WITH_SM3
    assert dict(info.extensions) == EPORT_EXTENSIONS
    assert (info.company_name, info.org_code) == (COMPANY, ORG_CODE)
    assert info.is_ca is False


@pytest.mark.parametrize(
    ("signature_hash", "oid"),
    [("sha256", "1.2.840.113549.1.1.11"), ("sha1", "1.2.840.113549.1.1.5")],
)
def test_rsa_card_certificate_round_trip(
    rsa_root: TestCA, rsa_card_key: rsa.RSAPrivateKey, signature_hash: str, oid: str
) -> None:
    cert = _issue(rsa_root, rsa_card_key.public_key(), serial=0x0102, signature_hash=signature_hash)
    info = _both_parsers(cert)
    assert info.serial_hex == "0102"
    assert (info.key_algorithm, info.key_bits) == ("RSA", 1024)
    assert info.sm2_point is None
    assert info.rsa_public_key is not None
    assert info.rsa_public_key.public_numbers() == rsa_card_key.public_key().public_numbers()
    assert info.signature_algorithm_oid == oid
    assert info.issuer_cn == "card-agent test CA (RSA)"
    assert verify_issued_by(cert, rsa_root.certificate_der)


def test_root_certificates(sm2_root: TestCA, rsa_root: TestCA) -> None:
    for root, bits in ((sm2_root, 256), (rsa_root, 2048)):
        info = _both_parsers(root.certificate_der)
        assert info.is_ca
        assert info.key_bits == bits
        assert info.subject_cn == info.issuer_cn == f"card-agent test CA ({root.algorithm})"
        assert "电子业务证书管理中心" not in (info.issuer_cn or "")
        assert verify_issued_by(root.certificate_der, root.certificate_der)
        verify_chain(root.certificate_der, [], [root.certificate_der], at=NOW)


def test_cryptography_reads_our_extensions(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    cert = x509.load_der_x509_certificate(_issue(sm2_root, card_key.public_point))
    root = x509.load_der_x509_certificate(sm2_root.certificate_der)
    assert cert.version is x509.Version.v3
    assert cert.subject.rfc4514_string() == f"CN=张三,OU={COMPANY},O=中国电子口岸,C=CN"
    assert der.utf8_string("张三") in cert.tbs_certificate_bytes  # CN as UTF8String
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.content_commitment
    assert not usage.key_encipherment
    assert not usage.data_encipherment
    assert not usage.key_cert_sign
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    company = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oids.EPORT_COMPANY_NAME))
    assert company.value.value == der.utf8_string(COMPANY)  # type: ignore[attr-defined]
    root_usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert root_usage.key_cert_sign
    assert root_usage.crl_sign


def test_encipherment_key_usage(rsa_root: TestCA, rsa_card_key: rsa.RSAPrivateKey) -> None:
    cert = x509.load_der_x509_certificate(
        _issue(rsa_root, rsa_card_key.public_key(), key_usage="encipher")
    )
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_encipherment
    assert usage.data_encipherment
    assert not usage.digital_signature
    assert not usage.content_commitment
    ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(rsa_card_key.public_key())


def test_rsa_signatures_verify_with_cryptography(
    rsa_root: TestCA, rsa_card_key: rsa.RSAPrivateKey
) -> None:
    root = x509.load_der_x509_certificate(rsa_root.certificate_der)
    root_key = root.public_key()
    assert isinstance(root_key, rsa.RSAPublicKey)
    modern = x509.load_der_x509_certificate(_issue(rsa_root, rsa_card_key.public_key()))
    modern.verify_directly_issued_by(root)  # raises if not
    legacy = x509.load_der_x509_certificate(
        _issue(rsa_root, rsa_card_key.public_key(), signature_hash="sha1")
    )
    # verify_directly_issued_by refuses SHA-1, so check the signature by hand
    assert isinstance(legacy.signature_hash_algorithm, hashes.SHA1)
    root_key.verify(
        legacy.signature, legacy.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1()
    )


def test_sm2_signature_verifies_with_gmalg(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    # Independent of our verifier: cryptography extracts the TBS, gmalg checks SM2/SM3
    # with Z of the issuer's key and the default ID (GM/T 0015).
    cert = x509.load_der_x509_certificate(_issue(sm2_root, card_key.public_point))
    root_point = parse_certificate(sm2_root.certificate_der).sm2_point
    assert root_point is not None
    r, s = decode_dss_signature(cert.signature)
    verifier = gmalg.SM2(pk=root_point, uid=SM2_DEFAULT_ID)
    assert verifier.verify(cert.tbs_certificate_bytes, r.to_bytes(32, "big"), s.to_bytes(32, "big"))
    assert not verifier.verify(
        cert.tbs_certificate_bytes + b"\x00", r.to_bytes(32, "big"), s.to_bytes(32, "big")
    )


def test_generalized_time_after_2049(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    late = datetime(2051, 3, 4, 5, 6, 7, tzinfo=UTC)
    info = _both_parsers(_issue(sm2_root, card_key.public_point, not_after=late))
    assert info.not_after == late


def test_expired_certificate_parses(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    cert = _issue(
        sm2_root,
        card_key.public_point,
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2022, 1, 1, tzinfo=UTC),
    )
    info = _both_parsers(cert)
    assert info.not_after == datetime(2022, 1, 1, tzinfo=UTC)
    assert days_left(info, NOW) < -800
    verify_chain(cert, [], [sm2_root.certificate_der])  # no time given: signatures only
    with pytest.raises(CertificateChainError, match="not valid at"):
        verify_chain(cert, [], [sm2_root.certificate_der], at=NOW)


def test_days_left(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    info = parse_certificate(
        _issue(sm2_root, card_key.public_point, not_after=NOW + timedelta(days=10, hours=12))
    )
    assert days_left(info, NOW) == pytest.approx(10.5)
    with pytest.raises(ValueError, match="timezone"):
        days_left(info, NOW.replace(tzinfo=None))


# --- chains -------------------------------------------------------------------------------


def test_chains_verify(
    sm2_root: TestCA, rsa_root: TestCA, card_key: Sm2PrivateKey, rsa_card_key: rsa.RSAPrivateKey
) -> None:
    sm2_cert = _issue(sm2_root, card_key.public_point)
    rsa_cert = _issue(rsa_root, rsa_card_key.public_key(), signature_hash="sha1")
    assert verify_issued_by(sm2_cert, sm2_root.certificate_der)
    verify_chain(sm2_cert, [], [sm2_root.certificate_der], at=NOW)
    verify_chain(rsa_cert, [], [rsa_root.certificate_der], at=NOW)
    verify_chain(rsa_cert, [], [sm2_root.certificate_der, rsa_root.certificate_der], at=NOW)


def test_three_level_chain(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    intermediate = _ca("SM2", "card-agent test sub CA", issuer=sm2_root)
    cert = _issue(intermediate, card_key.public_point)
    info = parse_certificate(intermediate.certificate_der)
    assert info.is_ca
    assert info.issuer_cn == "card-agent test CA (SM2)"
    verify_chain(cert, [intermediate.certificate_der], [sm2_root.certificate_der], at=NOW)
    with pytest.raises(CertificateChainError, match="no trusted issuer"):
        verify_chain(cert, [], [sm2_root.certificate_der])


def test_certificate_from_another_ca_is_rejected(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    impostor = _ca("SM2")  # same name as sm2_root, different key
    assert impostor.certificate_der != sm2_root.certificate_der
    cert = _issue(impostor, card_key.public_point)
    assert parse_certificate(cert).issuer_cn == "card-agent test CA (SM2)"
    assert not verify_issued_by(cert, sm2_root.certificate_der)
    with pytest.raises(CertificateChainError, match="no trusted issuer for '张三'"):
        verify_chain(cert, [], [sm2_root.certificate_der])


def test_rsa_certificate_is_not_issued_by_sm2_root(
    sm2_root: TestCA, rsa_root: TestCA, rsa_card_key: rsa.RSAPrivateKey
) -> None:
    cert = _issue(rsa_root, rsa_card_key.public_key())
    assert not verify_issued_by(cert, sm2_root.certificate_der)


def test_end_entity_cannot_act_as_intermediate(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    # A leaf certificate whose key signs another certificate is no CA.
    rogue = TestCA(
        "SM2",
        card_key,
        _issue(sm2_root, card_key.public_point),
    )
    victim = _issue(rogue, Sm2PrivateKey.generate().public_point)
    assert verify_issued_by(victim, rogue.certificate_der)
    with pytest.raises(CertificateChainError):
        verify_chain(victim, [rogue.certificate_der], [sm2_root.certificate_der])


def test_tampered_certificate_fails(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    cert = bytearray(_issue(sm2_root, card_key.public_point))
    where = bytes(cert).find("张三".encode())
    cert[where : where + 6] = "李四".encode()
    info = parse_certificate(bytes(cert))
    assert info.subject_cn == "李四"
    assert not verify_issued_by(bytes(cert), sm2_root.certificate_der)


def test_unsupported_signature_algorithm_is_an_error(sm2_root: TestCA) -> None:
    cert = bytearray(sm2_root.certificate_der)
    old = der.object_identifier(oids.SM2_WITH_SM3)
    new = der.object_identifier("1.2.156.10197.1.502")  # same length, other algorithm
    assert len(old) == len(new)
    patched = bytes(cert).replace(old, new)
    with pytest.raises(ProtocolError, match="unsupported certificate signature algorithm"):
        verify_issued_by(patched, patched)


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda c: c[:-1], "claims"),
        (lambda c: c + b"\x00", "trailing"),
        (lambda c: b"\x31" + c[1:], "Certificate"),
        (lambda c: b"", "truncated"),
        (lambda c: der.sequence(der.integer(1)), "3"),
    ],
)
def test_malformed_certificates_raise_protocol_error(
    sm2_root: TestCA, mutate: Callable[[bytes], bytes], reason: str
) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_certificate(mutate(sm2_root.certificate_der))


@given(data=st.data())
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_corrupted_certificates_raise_only_protocol_error(
    data: st.DataObject, sm2_root: TestCA, rsa_root: TestCA
) -> None:
    original = data.draw(st.sampled_from([sm2_root.certificate_der, rsa_root.certificate_der]))
    index = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
    value = data.draw(st.integers(min_value=0, max_value=255))
    corrupted = original[:index] + bytes([value]) + original[index + 1 :]
    cut = data.draw(st.integers(min_value=0, max_value=len(original)))
    for candidate in (corrupted, original[:cut]):
        try:
            parse_certificate(candidate)
            verify_issued_by(candidate, original)
        except ProtocolError:
            pass


# --- PEM and CA state --------------------------------------------------------------------


def test_pem_round_trip(sm2_root: TestCA) -> None:
    pem = certificate_to_pem(sm2_root.certificate_der)
    assert pem == sm2_root.certificate_pem
    lines = pem.splitlines()
    assert lines[0] == "-----BEGIN CERTIFICATE-----"
    assert lines[-1] == "-----END CERTIFICATE-----"
    assert all(len(line) <= 64 for line in lines[1:-1])
    assert certificate_from_pem(pem) == sm2_root.certificate_der
    loaded = x509.load_pem_x509_certificate(pem.encode())
    assert loaded.public_bytes(serialization.Encoding.DER) == sm2_root.certificate_der
    with pytest.raises(ProtocolError, match="no PEM"):
        certificate_from_pem("garbage")
    with pytest.raises(ProtocolError, match="base64"):
        certificate_from_pem("-----BEGIN CERTIFICATE-----\n@@@\n-----END CERTIFICATE-----")


@pytest.mark.parametrize("algorithm", ["SM2", "RSA"])
def test_ca_state_round_trip(
    algorithm: str,
    sm2_root: TestCA,
    rsa_root: TestCA,
    card_key: Sm2PrivateKey,
) -> None:
    ca = sm2_root if algorithm == "SM2" else rsa_root
    state = ca.to_state()
    assert set(state) == {"algorithm", "key_pem", "certificate_pem"}
    assert all(isinstance(v, str) for v in state.values())
    restored = TestCA.from_state(state)
    assert restored.certificate_der == ca.certificate_der
    cert = _issue(restored, card_key.public_point)
    verify_chain(cert, [], [ca.certificate_der], at=NOW)


def test_ca_state_with_mismatched_key_is_refused(sm2_root: TestCA) -> None:
    other = _ca("SM2").to_state()
    state = {**sm2_root.to_state(), "key_pem": other["key_pem"]}
    with pytest.raises(ValueError, match="do not match"):
        TestCA.from_state(state)
    with pytest.raises(ValueError, match="unknown algorithm"):
        TestCA.from_state({**state, "algorithm": "DSA"})


def test_issue_argument_checks(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    with pytest.raises(ValueError, match="positive"):
        _issue(sm2_root, card_key.public_point, serial=0)
    with pytest.raises(ValueError, match="only an RSA CA"):
        _issue(sm2_root, card_key.public_point, signature_hash="sha1")
    with pytest.raises(ValueError, match="key_usage"):
        _issue(sm2_root, card_key.public_point, key_usage="both")
    with pytest.raises(ValueError, match="not under"):
        sm2_root.issue(
            card_key.public_point,
            common_name="x",
            org_unit="y",
            serial=1,
            not_before=NOW,
            not_after=NOW,
            key_usage="sign",
            extensions={"2.5.29.17": "x"},
        )
    with pytest.raises(ProtocolError, match="65 bytes"):
        _issue(sm2_root, card_key.public_point[:-1])


# --- OpenSSL CLI -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openssl() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("no openssl binary on PATH")
    probe = subprocess.run(
        [exe, "genpkey", "-algorithm", "SM2"], capture_output=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip("this openssl binary has no SM2")
    return exe


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=30)


def _write(path: Path, cert_der: bytes) -> str:
    path.write_text(certificate_to_pem(cert_der))
    return str(path)


DISTID = ["-vfyopt", "distid:1234567812345678"]


def test_openssl_verifies_sm2_chain_link_by_link(
    openssl: str, sm2_root: TestCA, card_key: Sm2PrivateKey, tmp_path: Path
) -> None:
    # OpenSSL 3.0 computes Z with an empty ID for certificate signatures unless told
    # otherwise, and `-vfyopt distid:` applies to the target certificate only. So a
    # two-level chain verifies in one call; a longer one only link by link.
    intermediate = _ca("SM2", "card-agent test sub CA", issuer=sm2_root)
    root = _write(tmp_path / "root.pem", sm2_root.certificate_der)
    sub = _write(tmp_path / "sub.pem", intermediate.certificate_der)
    leaf = _write(tmp_path / "leaf.pem", _issue(intermediate, card_key.public_point))
    direct = _write(tmp_path / "direct.pem", _issue(sm2_root, card_key.public_point))

    result = _run(openssl, "verify", *DISTID, "-CAfile", root, direct)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(": OK")
    result = _run(openssl, "verify", *DISTID, "-CAfile", root, sub)
    assert result.returncode == 0, result.stderr
    result = _run(openssl, "verify", *DISTID, "-partial_chain", "-CAfile", sub, leaf)
    assert result.returncode == 0, result.stderr

    foreign = _write(tmp_path / "other.pem", _ca("SM2").certificate_der)
    assert _run(openssl, "verify", *DISTID, "-CAfile", foreign, direct).returncode != 0


def test_openssl_verifies_rsa_chain(
    openssl: str, rsa_root: TestCA, rsa_card_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    intermediate = _ca("RSA", "card-agent test sub CA (RSA)", issuer=rsa_root)
    root = _write(tmp_path / "root.pem", rsa_root.certificate_der)
    sub = _write(tmp_path / "sub.pem", intermediate.certificate_der)
    leaf = _write(tmp_path / "leaf.pem", _issue(intermediate, rsa_card_key.public_key()))
    result = _run(openssl, "verify", "-check_ss_sig", "-CAfile", root, "-untrusted", sub, leaf)
    assert result.returncode == 0, result.stderr


def test_we_verify_an_openssl_made_sm2_certificate(openssl: str, tmp_path: Path) -> None:
    # An independent encoder and signer: OpenSSL's own self-signed SM2 certificate.
    key = tmp_path / "key.pem"
    cert = tmp_path / "cert.der"
    assert _run(openssl, "genpkey", "-algorithm", "SM2", "-out", str(key)).returncode == 0
    made = _run(
        openssl, "req", "-new", "-x509", "-key", str(key), "-sm3",
        "-sigopt", "distid:1234567812345678", "-subj", "/C=CN/O=中国电子口岸/CN=openssl",
        "-days", "30", "-outform", "DER", "-out", str(cert), "-utf8",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    cert_der = cert.read_bytes()
    info = _both_parsers(cert_der)
    assert (info.subject_cn, info.subject_o, info.key_algorithm) == (
        "openssl",
        "中国电子口岸",
        "SM2",
    )
    assert info.signature_algorithm_oid == oids.SM2_WITH_SM3
    assert verify_issued_by(cert_der, cert_der)


@pytest.mark.filterwarnings("error")
def test_negative_serial_parses_without_warning(sm2_root: TestCA, card_key: Sm2PrivateKey) -> None:
    cert = _issue(sm2_root, card_key.public_point, serial=0x1234)
    patched = cert.replace(bytes.fromhex("02021234"), bytes.fromhex("0202f234"), 1)
    assert patched != cert
    info = parse_certificate(patched)
    assert info.serial_hex == "f234"
    assert info == parse_certificate(patched, use_cryptography=False)

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import gmalg
import pytest
from cryptography.hazmat.primitives import serialization as c_serialization
from cryptography.hazmat.primitives.asymmetric import ec as c_ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given
from hypothesis import strategies as st
from tongsuopy.crypto import hashes as t_hashes
from tongsuopy.crypto import serialization as t_serialization
from tongsuopy.crypto.asymciphers import ec

from card.crypto import sm2
from card.crypto.sm2 import (
    SM2_DEFAULT_ID,
    Sm2PrivateKey,
    der_to_raw,
    raw_to_der,
    sm2_e,
    sm2_verify,
    sm2_verify_digest,
    sm2_z,
    validate_public_point,
)
from card.crypto.sm3 import sm3
from card.errors import ProtocolError

# GM/T 0003.5-2012 Annex A (= GB/T 32918.5-2017), signature example on sm2p256v1.
VECTOR_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
VECTOR_POINT = bytes.fromhex(
    "04"
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
VECTOR_Z = "B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3"
VECTOR_E = "F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640"
VECTOR_SIG = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
MESSAGE = "报关单 0001 签名".encode()


@pytest.fixture(scope="module")
def key() -> Sm2PrivateKey:
    return Sm2PrivateKey.generate()


def _gmalg(point: bytes, uid: bytes = SM2_DEFAULT_ID) -> gmalg.SM2:
    return gmalg.SM2(pk=point, uid=uid)


def _gmalg_verify(point: bytes, message: bytes, raw: bytes, uid: bytes = SM2_DEFAULT_ID) -> bool:
    return bool(_gmalg(point, uid).verify(message, raw[:32], raw[32:]))


# --- known answers -------------------------------------------------------------------


def test_sm3_known_answer() -> None:
    # GM/T 0004 example 1
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_standard_vector_z_e_and_signature() -> None:
    assert sm2_z(VECTOR_POINT).hex().upper() == VECTOR_Z
    assert sm2_e(VECTOR_POINT, b"message digest").hex().upper() == VECTOR_E
    assert sm2_verify(VECTOR_POINT, b"message digest", VECTOR_SIG)
    assert sm2_verify_digest(VECTOR_POINT, bytes.fromhex(VECTOR_E), VECTOR_SIG)
    assert not sm2_verify(VECTOR_POINT, b"message digesT", VECTOR_SIG)


def test_standard_vector_private_key_gives_its_public_point() -> None:
    key = Sm2PrivateKey(ec.derive_private_key(VECTOR_D, ec.SM2()))
    assert key.public_point == VECTOR_POINT
    assert sm2_verify(VECTOR_POINT, b"message digest", key.sign(b"message digest"))


def test_generator_is_on_the_curve() -> None:
    g = b"\x04" + sm2.GX.to_bytes(32, "big") + sm2.GY.to_bytes(32, "big")
    assert validate_public_point(g) == (sm2.GX, sm2.GY)


@pytest.mark.parametrize("uid", [SM2_DEFAULT_ID, b"", b"ALICE123@YAHOO.COM", b"\x00" * 300])
def test_z_matches_gmalg(key: Sm2PrivateKey, uid: bytes) -> None:
    g = _gmalg(key.public_point, uid)
    assert sm2_z(key.public_point, uid) == g._core.entity_info(uid, g._pk)


# --- cross-implementation signatures ---------------------------------------------------


def test_our_signature_verifies_with_gmalg(key: Sm2PrivateKey) -> None:
    e = sm2_e(key.public_point, MESSAGE)
    raw = key.sign_digest(e)
    assert len(raw) == 64
    assert _gmalg_verify(key.public_point, MESSAGE, raw)
    assert not _gmalg_verify(key.public_point, MESSAGE + b"!", raw)


def test_our_signature_with_custom_uid_verifies_with_gmalg(key: Sm2PrivateKey) -> None:
    raw = key.sign(MESSAGE, uid=b"card-agent")
    assert _gmalg_verify(key.public_point, MESSAGE, raw, uid=b"card-agent")
    assert not _gmalg_verify(key.public_point, MESSAGE, raw)
    assert sm2_verify(key.public_point, MESSAGE, raw, uid=b"card-agent")
    assert not sm2_verify(key.public_point, MESSAGE, raw)


def test_our_signature_verifies_with_tongsuopy_message_api(key: Sm2PrivateKey) -> None:
    raw = key.sign(MESSAGE)
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), key.public_point)
    public.verify(raw_to_der(raw), MESSAGE, ec.ECDSA(t_hashes.SM3()))  # raises if invalid


def test_tongsuopy_message_signature_verifies_with_ours() -> None:
    private = ec.generate_private_key(ec.SM2())
    point = private.public_key().public_bytes(
        t_serialization.Encoding.X962, t_serialization.PublicFormat.UncompressedPoint
    )
    signature = private.sign(MESSAGE, ec.ECDSA(t_hashes.SM3()))
    assert sm2_verify(point, MESSAGE, der_to_raw(signature))


@pytest.mark.parametrize("uid", [SM2_DEFAULT_ID, b"someone@example.cn"])
def test_gmalg_signature_verifies_with_ours(uid: bytes) -> None:
    sk, point = gmalg.SM2().generate_keypair()
    r, s = gmalg.SM2(sk=sk, pk=point, uid=uid).sign(MESSAGE)
    raw = r.rjust(32, b"\x00") + s.rjust(32, b"\x00")
    assert sm2_verify(point, MESSAGE, raw, uid=uid)
    assert not sm2_verify(point, MESSAGE, raw, uid=uid + b"x")


def test_signatures_are_randomised_and_all_verify(key: Sm2PrivateKey) -> None:
    e = sm2_e(key.public_point, MESSAGE)
    signatures = {key.sign_digest(e) for _ in range(5)}
    assert len(signatures) == 5
    assert all(sm2_verify_digest(key.public_point, e, s) for s in signatures)


# --- rejection -------------------------------------------------------------------------


def test_tampering_is_rejected(key: Sm2PrivateKey) -> None:
    raw = key.sign(MESSAGE)
    assert sm2_verify(key.public_point, MESSAGE, raw)
    assert not sm2_verify(key.public_point, MESSAGE[:-1], raw)
    for index in (0, 31, 32, 63):
        bad = bytearray(raw)
        bad[index] ^= 0x01
        assert not sm2_verify(key.public_point, MESSAGE, bytes(bad))
    other = Sm2PrivateKey.generate()
    assert not sm2_verify(other.public_point, MESSAGE, raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01" * 63,
        b"\x01" * 65,
        b"\x00" * 64,
        b"\x00" * 32 + b"\x01" * 32,
        sm2.N.to_bytes(32, "big") + b"\x01" * 32,
        b"\x01" * 32 + b"\xff" * 32,
    ],
)
def test_malformed_raw_signatures_do_not_verify(key: Sm2PrivateKey, raw: bytes) -> None:
    e = sm2_e(key.public_point, MESSAGE)
    assert sm2_verify_digest(key.public_point, e, raw) is False


def test_digest_must_be_32_bytes(key: Sm2PrivateKey) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        key.sign_digest(b"\x00" * 31)
    with pytest.raises(ValueError, match="32-byte"):
        sm2_verify_digest(key.public_point, b"\x00" * 33, b"\x01" * 64)


@pytest.mark.parametrize(
    ("point", "reason"),
    [
        (b"", "65 bytes"),
        (b"\x04" + b"\x01" * 63, "65 bytes"),
        (b"\x02" + b"\x01" * 64, "starting 02"),
        (b"\x04" + sm2.GX.to_bytes(32, "big") + (sm2.GY ^ 1).to_bytes(32, "big"), "not a point"),
        (b"\x04" + sm2.P.to_bytes(32, "big") + b"\x00" * 32, "not a point"),
        (b"\x04" + b"\x00" * 64, "not a point"),
    ],
)
def test_invalid_public_points_raise(point: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        validate_public_point(point)
    with pytest.raises(ProtocolError, match=reason):
        sm2_verify(point, MESSAGE, b"\x01" * 64)
    with pytest.raises(ProtocolError, match=reason):
        sm2_z(point)


# --- raw <-> DER -----------------------------------------------------------------------

scalars = st.integers(min_value=1, max_value=sm2.N - 1)


@given(scalars, scalars)
def test_raw_der_round_trip_matches_cryptography(r: int, s: int) -> None:
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    encoded = raw_to_der(raw)
    assert encoded == encode_dss_signature(r, s)  # an independent DER encoder
    assert decode_dss_signature(encoded) == (r, s)
    assert der_to_raw(encoded) == raw


@pytest.mark.parametrize(
    ("hex_input", "reason"),
    [
        ("3006020101020101" + "00", "trailing"),
        ("30070202000102 0101", "minimally"),  # r with a superfluous 00
        ("308106020101020101", "minimally"),  # long-form length for a short value
        ("3080020101020101 0000", "indefinite"),
        ("3103020101", "expected tag"),
        ("3003020101", "2"),
        ("3009020101020101020101", "3 elements"),
        ("3006020100020101", "outside"),  # r = 0
        ("30060201ff020101", "outside"),  # r = -1
        ("3006020101040101", "expected tag"),
    ],
)
def test_non_canonical_der_is_rejected(hex_input: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        der_to_raw(bytes.fromhex(hex_input.replace(" ", "")))


def test_der_with_r_at_least_n_is_rejected() -> None:
    with pytest.raises(ProtocolError, match="outside"):
        der_to_raw(encode_dss_signature(sm2.N, 1))
    with pytest.raises(ProtocolError, match="64 bytes"):
        raw_to_der(b"\x01" * 63)


# --- keys ------------------------------------------------------------------------------


def test_pem_round_trip(key: Sm2PrivateKey) -> None:
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    restored = Sm2PrivateKey.from_pem(pem)
    assert restored.public_point == key.public_point
    assert sm2_verify(key.public_point, MESSAGE, restored.sign(MESSAGE))
    assert "PRIVATE" not in repr(restored)


def test_from_pem_rejects_garbage_and_other_curves() -> None:
    with pytest.raises(ValueError, match="PEM"):
        Sm2PrivateKey.from_pem(b"not a key")
    p256_pem = c_ec.generate_private_key(c_ec.SECP256R1()).private_bytes(
        c_serialization.Encoding.PEM,
        c_serialization.PrivateFormat.PKCS8,
        c_serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="SM2"):
        Sm2PrivateKey.from_pem(p256_pem)
    with pytest.raises(ValueError, match="SM2"):
        Sm2PrivateKey(object())


# --- OpenSSL CLI -----------------------------------------------------------------------


def _openssl_with_sm2() -> str:
    exe = shutil.which("openssl")
    if exe is None:
        pytest.skip("no openssl binary on PATH")
    probe = subprocess.run(
        [exe, "genpkey", "-algorithm", "SM2"], capture_output=True, check=False, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip("this openssl binary has no SM2")
    return exe


def test_openssl_cli_verifies_our_signature(key: Sm2PrivateKey, tmp_path: Path) -> None:
    exe = _openssl_with_sm2()
    pub = tmp_path / "pub.pem"
    pub.write_bytes(
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), key.public_point).public_bytes(
            t_serialization.Encoding.PEM, t_serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (tmp_path / "msg").write_bytes(MESSAGE)
    sig = tmp_path / "sig.der"

    def verify(message: bytes) -> subprocess.CompletedProcess[bytes]:
        (tmp_path / "msg").write_bytes(message)
        return subprocess.run(
            [
                *(exe, "pkeyutl", "-verify", "-rawin", "-digest", "sm3"),
                *("-pkeyopt", "distid:1234567812345678", "-pubin", "-inkey", str(pub)),
                *("-in", str(tmp_path / "msg"), "-sigfile", str(sig)),
            ],
            capture_output=True,
            check=False,
            timeout=30,
        )

    sig.write_bytes(raw_to_der(key.sign(MESSAGE)))
    ok = verify(MESSAGE)
    assert ok.returncode == 0, ok.stderr
    assert b"Verified Successfully" in ok.stdout
    assert verify(MESSAGE + b"x").returncode != 0

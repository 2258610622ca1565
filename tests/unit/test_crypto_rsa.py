from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from card.crypto.rsa import (
    digest_info,
    parse_digest_info,
    rsa_sign_digest_info,
    rsa_verify_digest,
    rsa_verify_pkcs1,
)
from card.errors import ProtocolError

MESSAGE = "<CEB311Message>报文</CEB311Message>".encode()
# RFC 8017 section 9.2, note 1
PREFIX = {
    "sha1": "3021300906052b0e03021a05000414",
    "sha256": "3031300d060960864801650304020105000420",
}
HASHES = {"sha1": hashes.SHA1, "sha256": hashes.SHA256}


@pytest.fixture(scope="module", params=[1024, 2048])
def private_key(request: pytest.FixtureRequest) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=request.param)


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_digest_info_matches_rfc_8017_prefixes(hash_name: str) -> None:
    digest = hashlib.new(hash_name, MESSAGE).digest()
    encoded = digest_info(hash_name, digest)
    assert encoded == bytes.fromhex(PREFIX[hash_name]) + digest
    assert parse_digest_info(encoded) == (hash_name, digest)


@pytest.mark.parametrize("hash_name", ["sha1", "sha256"])
def test_card_side_signature_equals_cryptography_and_verifies(
    private_key: rsa.RSAPrivateKey, hash_name: str
) -> None:
    digest = hashlib.new(hash_name, MESSAGE).digest()
    ours = rsa_sign_digest_info(private_key, digest_info(hash_name, digest))
    algorithm = HASHES[hash_name]()
    theirs = private_key.sign(digest, padding.PKCS1v15(), Prehashed(algorithm))
    assert ours == theirs  # PKCS#1 v1.5 is deterministic: byte-identical
    assert len(ours) == private_key.key_size // 8
    public = private_key.public_key()
    public.verify(ours, MESSAGE, padding.PKCS1v15(), algorithm)  # raises if invalid
    assert rsa_verify_pkcs1(public, ours, MESSAGE, hash_name)
    assert rsa_verify_digest(public, ours, digest, hash_name)


def test_verification_rejects_tampering(private_key: rsa.RSAPrivateKey) -> None:
    public = private_key.public_key()
    digest = hashlib.sha1(MESSAGE).digest()
    signature = rsa_sign_digest_info(private_key, digest_info("sha1", digest))
    assert not rsa_verify_pkcs1(public, signature, MESSAGE + b" ", "sha1")
    assert not rsa_verify_pkcs1(public, signature, MESSAGE, "sha256")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not rsa_verify_pkcs1(public, flipped, MESSAGE, "sha1")
    assert not rsa_verify_digest(public, flipped, digest, "sha1")
    assert not rsa_verify_digest(public, signature, digest[:-1], "sha1")
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    assert not rsa_verify_pkcs1(other, signature, MESSAGE, "sha1")


def test_sha1_digest_info_without_its_null_is_not_what_we_sign(
    private_key: rsa.RSAPrivateKey,
) -> None:
    # The card pads what it is given; a variant DigestInfo gives a different signature.
    digest = hashlib.sha1(MESSAGE).digest()
    no_null = bytes.fromhex("301f300706052b0e03021a0414") + digest
    signature = rsa_sign_digest_info(private_key, no_null)
    assert not rsa_verify_digest(private_key.public_key(), signature, digest, "sha1")


def test_digest_info_too_long_for_the_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert len(rsa_sign_digest_info(key, b"\x00" * (128 - 11))) == 128
    with pytest.raises(ValueError, match="too long"):
        rsa_sign_digest_info(key, b"\x00" * (128 - 10))


def test_digest_info_argument_errors() -> None:
    with pytest.raises(ValueError, match="unsupported hash"):
        digest_info("md5", b"\x00" * 16)
    with pytest.raises(ValueError, match="20 bytes"):
        digest_info("sha1", b"\x00" * 32)
    with pytest.raises(ValueError, match="unsupported hash"):
        rsa_verify_pkcs1(
            rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key(),
            b"",
            b"",
            "sm3",
        )


@pytest.mark.parametrize(
    ("hex_input", "reason"),
    [
        (PREFIX["sha1"] + "00" * 20 + "00", "trailing"),
        ("301f300706052b0e03021a0414" + "00" * 20, "canonical"),  # NULL omitted
        ("3020300906052b0e03021a05000413" + "00" * 19, "canonical"),  # 19-byte digest
        ("3020300c06082a864886f70d020505000410" + "00" * 16, "not sha1 or sha256"),  # md5
        ("3000", "AlgorithmIdentifier and a digest"),
        ("30043000 0400", "empty"),
        ("0400", "expected tag"),
    ],
)
def test_parse_digest_info_rejections(hex_input: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_digest_info(bytes.fromhex(hex_input.replace(" ", "")))

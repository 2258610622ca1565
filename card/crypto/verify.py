"""The one check of a card's signature against a certificate.

The agent verifies every signature before it leaves (CardService), the selftest checks
its test signature, the official protocol's SpcVerifySignData verifies for pages, and
the practice site verifies what a page submits: all through here.
"""

from __future__ import annotations

import hashlib

from card.crypto.algorithms import SignAlgorithm
from card.crypto.certs import CertificateInfo
from card.crypto.rsa import rsa_verify_digest
from card.crypto.sm2 import sm2_e, sm2_verify_digest
from card.errors import ProtocolError

__all__ = ["message_digest", "verify_digest", "verify_message"]


def message_digest(cert: CertificateInfo, algorithm: SignAlgorithm, message: bytes) -> bytes:
    """What a card signs for `message`: SM2 e = SM3(Z || M) with the certificate's key
    and the default ID; RSA the SHA-1 or SHA-256 hash."""
    if algorithm is SignAlgorithm.SM2_SM3:
        if cert.sm2_point is None:
            raise ProtocolError("an SM2-SM3 signature needs an SM2 certificate")
        return sm2_e(cert.sm2_point, message)
    return hashlib.new(algorithm.hash_name, message).digest()


def verify_digest(
    cert: CertificateInfo, algorithm: SignAlgorithm, digest: bytes, signature: bytes
) -> bool:
    """True when `signature` (SM2: raw r || s; RSA: PKCS#1 v1.5) over `digest` verifies
    with the certificate's key. False for anything else, malformed input included."""
    if algorithm.key_algorithm is not cert.key_algorithm:
        return False
    if len(digest) != algorithm.digest_size:
        return False
    if algorithm is SignAlgorithm.SM2_SM3:
        if cert.sm2_point is None or len(signature) != 64:
            return False
        try:
            return sm2_verify_digest(cert.sm2_point, digest, signature)
        except ProtocolError:
            return False
    key = cert.rsa_public_key
    return key is not None and rsa_verify_digest(key, signature, digest, algorithm.hash_name)


def verify_message(
    cert: CertificateInfo, algorithm: SignAlgorithm, message: bytes, signature: bytes
) -> bool:
    """`verify_digest` of the digest a card signs for `message`."""
    if algorithm.key_algorithm is not cert.key_algorithm:
        return False
    try:
        digest = message_digest(cert, algorithm, message)
    except ProtocolError:
        return False
    return verify_digest(cert, algorithm, digest, signature)

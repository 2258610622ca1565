"""Server-side verification of a card signature against the card's certificate."""

from __future__ import annotations

import base64
import binascii

from card.crypto.algorithms import KeyAlgorithm, SignAlgorithm
from card.crypto.certs import CertificateInfo
from card.crypto.sm2 import der_to_raw
from card.crypto.verify import verify_message
from card.errors import ProtocolError


def decode_signature(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_signature(
    cert: CertificateInfo, message: bytes, signature: bytes, algorithm: str | None
) -> tuple[bool, SignAlgorithm]:
    """(valid, algorithm). The algorithm follows the certificate's key; for RSA the
    hash named by the client is tried, or SHA-1 (legacy 1024-bit cards) then SHA-256."""
    if cert.key_algorithm is KeyAlgorithm.SM2:
        raw = signature
        if len(signature) != 64:  # a DER SEQUENCE from a client asking for "der"
            try:
                raw = der_to_raw(signature)
            except ProtocolError:
                return False, SignAlgorithm.SM2_SM3
        return verify_message(cert, SignAlgorithm.SM2_SM3, message, raw), SignAlgorithm.SM2_SM3
    if algorithm in (SignAlgorithm.RSA_SHA1, SignAlgorithm.RSA_SHA256):
        candidates = [SignAlgorithm(algorithm)]
    elif cert.key_bits <= 1024:
        candidates = [SignAlgorithm.RSA_SHA1, SignAlgorithm.RSA_SHA256]
    else:
        candidates = [SignAlgorithm.RSA_SHA256, SignAlgorithm.RSA_SHA1]
    for candidate in candidates:
        if verify_message(cert, candidate, message, signature):
            return True, candidate
    return False, candidates[0]

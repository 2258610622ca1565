"""Server-side verification of a card signature against the card's certificate."""

from __future__ import annotations

import base64
import binascii

from card.crypto.certs import CertificateInfo
from card.crypto.rsa import rsa_verify_pkcs1
from card.crypto.sm2 import der_to_raw, sm2_verify
from card.errors import ProtocolError


def decode_signature(value: str) -> bytes | None:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def verify_signature(
    cert: CertificateInfo, message: bytes, signature: bytes, algorithm: str | None
) -> tuple[bool, str]:
    """(valid, algorithm name). The algorithm follows the certificate's key; for RSA the
    hash named by the client is tried, or SHA-1 (legacy 1024-bit cards) then SHA-256."""
    if cert.key_algorithm == "SM2":
        if cert.sm2_point is None:
            return False, "SM2-SM3"
        raw = signature
        if len(signature) != 64:  # a DER SEQUENCE from a client asking for "der"
            try:
                raw = der_to_raw(signature)
            except ProtocolError:
                return False, "SM2-SM3"
        try:
            return sm2_verify(cert.sm2_point, message, raw), "SM2-SM3"
        except ProtocolError:
            return False, "SM2-SM3"
    key = cert.rsa_public_key
    if key is None:
        return False, "RSA"
    if algorithm == "RSA-SHA256":
        hashes = ["sha256"]
    elif algorithm == "RSA-SHA1":
        hashes = ["sha1"]
    else:
        hashes = ["sha1", "sha256"] if cert.key_bits <= 1024 else ["sha256", "sha1"]
    for name in hashes:
        if rsa_verify_pkcs1(key, signature, message, name):
            return True, f"RSA-{name.upper()}"
    return False, f"RSA-{hashes[0].upper()}"

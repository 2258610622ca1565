"""The key and signature algorithms of E-Port cards: one name per concept."""

from __future__ import annotations

from enum import StrEnum


class KeyAlgorithm(StrEnum):
    SM2 = "SM2"
    RSA = "RSA"


class SignAlgorithm(StrEnum):
    SM2_SM3 = "SM2-SM3"  # SM2 over e = SM3(Z || M), Z with the default user ID
    RSA_SHA1 = "RSA-SHA1"  # PKCS#1 v1.5 (legacy RSA-1024 cards; the official protocol)
    RSA_SHA256 = "RSA-SHA256"

    @property
    def digest_size(self) -> int:
        return 20 if self is SignAlgorithm.RSA_SHA1 else 32

    @property
    def key_algorithm(self) -> KeyAlgorithm:
        return KeyAlgorithm.SM2 if self is SignAlgorithm.SM2_SM3 else KeyAlgorithm.RSA

    @property
    def hash_name(self) -> str:
        """hashlib's name of the message hash (SM2 hashes with SM3 over Z || M)."""
        return {"SM2-SM3": "sm3", "RSA-SHA1": "sha1", "RSA-SHA256": "sha256"}[self.value]

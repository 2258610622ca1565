"""A throw-away certificate authority for the simulated cards.

Certificates look like real E-Port ones (C=CN, O=中国电子口岸, OU=<company>, CN=<person>,
private extensions under 1.3.6.1.4.1.5315.100) but the issuer is named "card-agent test
CA (...)" so that nobody mistakes them for certificates of 中国电子业务证书管理中心.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal, cast

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from card.crypto import der, oids
from card.crypto.certs import (
    certificate_from_pem,
    certificate_to_pem,
    parse_certificate,
    sm2_subject_public_key_info,
)
from card.crypto.sm2 import Sm2PrivateKey, raw_to_der

Algorithm = Literal["SM2", "RSA"]
KeyUsage = Literal["sign", "encipher"]

# keyUsage named bits (RFC 5280 4.2.1.3) as DER BIT STRING (octet, unused trailing bits)
_KEY_USAGE_BITS: dict[str, tuple[int, int]] = {
    "sign": (0b1100_0000, 6),  # digitalSignature, nonRepudiation
    "encipher": (0b0011_0000, 4),  # keyEncipherment, dataEncipherment
    "ca": (0b0000_0110, 1),  # keyCertSign, cRLSign
}
_RSA_SIGNATURES: dict[str, tuple[str, type[hashes.HashAlgorithm]]] = {
    "sha256": (oids.SHA256_WITH_RSA, hashes.SHA256),
    "sha1": (oids.SHA1_WITH_RSA, hashes.SHA1),
}
_ROOT_LIFETIME = timedelta(days=20 * 365)


def _name(*attributes: tuple[str, bytes]) -> bytes:
    return der.sequence(
        *(der.set_of(der.sequence(der.object_identifier(oid), value)) for oid, value in attributes)
    )


def _extension(oid: str, value: bytes, *, critical: bool = False) -> bytes:
    flag = der.boolean(True) if critical else b""
    return der.sequence(der.object_identifier(oid), flag, der.octet_string(value))


def _key_usage(kind: str) -> bytes:
    octet, unused = _KEY_USAGE_BITS[kind]
    return _extension(oids.KEY_USAGE, der.bit_string(bytes((octet,)), unused), critical=True)


def _key_id(spki: bytes) -> bytes:
    # RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey BIT STRING contents.
    bits = der.decode(spki).children()[1].bit_string()
    return hashlib.sha1(bits, usedforsecurity=False).digest()


def _spki(public_key: bytes | rsa.RSAPublicKey) -> bytes:
    if isinstance(public_key, rsa.RSAPublicKey):
        return public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return sm2_subject_public_key_info(bytes(public_key))


class TestCA:
    """A CA (a self-signed root, or an intermediate) that issues card certificates.

    Named TestCA for what it is; `__test__ = False` keeps pytest from collecting it.
    """

    __test__ = False

    def __init__(
        self, algorithm: Algorithm, key: Sm2PrivateKey | rsa.RSAPrivateKey, certificate_der: bytes
    ) -> None:
        self.algorithm: Algorithm = algorithm
        self._key = key
        self.certificate_der = certificate_der
        info = parse_certificate(certificate_der)
        self._subject = _tbs_fields(certificate_der)[5].encoded
        self._key_id = _key_id(_spki(self._public_key()))
        self.common_name = info.subject_cn or ""

    @classmethod
    def create(
        cls,
        algorithm: Algorithm,
        common_name: str | None = None,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        issuer: TestCA | None = None,
    ) -> TestCA:
        """A new key and CA certificate: SM2-with-SM3, or RSA-2048 with sha256WithRSA.

        Self-signed (a root) unless `issuer` is given, which makes an intermediate CA.
        """
        key: Sm2PrivateKey | rsa.RSAPrivateKey
        if algorithm == "SM2":
            key = Sm2PrivateKey.generate()
        elif algorithm == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            raise ValueError(f"unknown CA algorithm {algorithm!r}")
        start = not_before or datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
        end = not_after or start + _ROOT_LIFETIME
        subject = _name(
            (oids.COUNTRY, der.printable_string("CN")),
            (oids.ORGANIZATION, der.utf8_string("card-agent test")),
            (oids.COMMON_NAME, der.utf8_string(common_name or f"card-agent test CA ({algorithm})")),
        )
        spki = _spki(key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key.public_point)
        extensions = [
            _extension(oids.BASIC_CONSTRAINTS, der.sequence(der.boolean(True)), critical=True),
            _key_usage("ca"),
            _extension(oids.SUBJECT_KEY_ID, der.octet_string(_key_id(spki))),
        ]
        if issuer is None:
            signer, signer_algorithm, issuer_name = key, algorithm, subject
        else:
            signer, signer_algorithm, issuer_name = issuer._key, issuer.algorithm, issuer._subject
            extensions.append(issuer._authority_key_id())
        serial = secrets.randbits(63) | 1 << 63  # 64 bits, so the serial shows as 16 hex digits
        algorithm_id = _signature_algorithm(signer_algorithm, "sha256")
        tbs = _tbs(serial, algorithm_id, issuer_name, start, end, subject)
        cert = _sign(signer, "sha256", tbs + spki + der.explicit(3, der.sequence(*extensions)))
        return cls(algorithm, key, cert)

    def _authority_key_id(self) -> bytes:
        return _extension(oids.AUTHORITY_KEY_ID, der.sequence(der.tlv(0x80, self._key_id)))

    def _public_key(self) -> bytes | rsa.RSAPublicKey:
        if isinstance(self._key, rsa.RSAPrivateKey):
            return self._key.public_key()
        return self._key.public_point

    @property
    def certificate_pem(self) -> str:
        return certificate_to_pem(self.certificate_der)

    def issue(
        self,
        public_key: bytes | rsa.RSAPublicKey,
        *,
        common_name: str,
        org_unit: str,
        organization: str = "中国电子口岸",
        serial: int,
        not_before: datetime,
        not_after: datetime,
        key_usage: KeyUsage,
        extensions: Mapping[str, str] | None = None,
        signature_hash: Literal["sha256", "sha1"] = "sha256",
    ) -> bytes:
        """DER of an X.509 v3 card certificate for an SM2 point or an RSA key.

        `extensions` maps dotted OIDs under 1.3.6.1.4.1.5315.100 (e.g. .1 company name,
        .2 organisation code) to text, encoded as UTF8String. `signature_hash="sha1"`
        (RSA CA only) makes sha1WithRSA certificates like the legacy real cards.
        """
        if serial <= 0:
            raise ValueError("certificate serial numbers must be positive (RFC 5280)")
        if key_usage not in ("sign", "encipher"):
            raise ValueError(f"key_usage must be 'sign' or 'encipher', not {key_usage!r}")
        if signature_hash != "sha256" and self.algorithm != "RSA":
            raise ValueError("only an RSA CA can use a sha1WithRSA signature")
        subject = _name(
            (oids.COUNTRY, der.printable_string("CN")),
            (oids.ORGANIZATION, der.utf8_string(organization)),
            (oids.ORG_UNIT, der.utf8_string(org_unit)),
            (oids.COMMON_NAME, der.utf8_string(common_name)),
        )
        spki = _spki(public_key)
        ours = [
            _extension(oids.BASIC_CONSTRAINTS, der.sequence(), critical=True),
            _key_usage(key_usage),
            _extension(oids.SUBJECT_KEY_ID, der.octet_string(_key_id(spki))),
            self._authority_key_id(),
        ]
        for oid, text in sorted((extensions or {}).items()):
            if not oid.startswith(oids.EPORT_ARC + "."):
                raise ValueError(f"extension {oid} is not under {oids.EPORT_ARC}")
            ours.append(_extension(oid, der.utf8_string(text)))
        algorithm = _signature_algorithm(self.algorithm, signature_hash)
        tbs = _tbs(serial, algorithm, self._subject, not_before, not_after, subject)
        return _sign(self._key, signature_hash, tbs + spki + der.explicit(3, der.sequence(*ours)))

    def to_state(self) -> dict[str, str]:
        if isinstance(self._key, rsa.RSAPrivateKey):
            key_pem = self._key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        else:
            key_pem = self._key.to_pem()
        return {
            "algorithm": self.algorithm,
            "key_pem": key_pem.decode("ascii"),
            "certificate_pem": self.certificate_pem,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, str]) -> TestCA:
        algorithm = state["algorithm"]
        key_pem = state["key_pem"].encode("ascii")
        key: Sm2PrivateKey | rsa.RSAPrivateKey
        if algorithm == "SM2":
            key = Sm2PrivateKey.from_pem(key_pem)
        elif algorithm == "RSA":
            loaded = serialization.load_pem_private_key(key_pem, password=None)
            if not isinstance(loaded, rsa.RSAPrivateKey):
                raise ValueError("test CA state: key_pem is not an RSA key")
            key = loaded
        else:
            raise ValueError(f"test CA state: unknown algorithm {algorithm!r}")
        ca = cls(cast(Algorithm, algorithm), key, certificate_from_pem(state["certificate_pem"]))
        if _key_id(_spki(ca._public_key())) != _key_id(_tbs_fields(ca.certificate_der)[6].encoded):
            raise ValueError("test CA state: key and certificate do not match")
        return ca


def _tbs_fields(cert_der: bytes) -> list[der.Element]:
    """version, serial, signature, issuer, validity, subject, spki, extensions (v3 only)."""
    return der.decode(cert_der).children()[0].children()


def _signature_algorithm(algorithm: Algorithm, signature_hash: str) -> bytes:
    if algorithm == "SM2":
        # GM/T 0015 leaves the parameters absent, as OpenSSL does.
        return der.sequence(der.object_identifier(oids.SM2_WITH_SM3))
    return der.sequence(der.object_identifier(_RSA_SIGNATURES[signature_hash][0]), der.null())


def _tbs(
    serial: int,
    algorithm: bytes,
    issuer: bytes,
    not_before: datetime,
    not_after: datetime,
    subject: bytes,
) -> bytes:
    """The TBS fields up to (not including) the SubjectPublicKeyInfo, for concatenation."""
    return b"".join(
        (
            der.explicit(0, der.integer(2)),
            der.integer(serial),
            algorithm,
            issuer,
            der.sequence(der.x509_time(not_before), der.x509_time(not_after)),
            subject,
        )
    )


def _sign(key: Sm2PrivateKey | rsa.RSAPrivateKey, signature_hash: str, tbs_fields: bytes) -> bytes:
    tbs = der.sequence(tbs_fields)
    algorithm_id = der.decode(tbs).children()[2].encoded
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs, padding.PKCS1v15(), _RSA_SIGNATURES[signature_hash][1]())
    else:
        signature = raw_to_der(key.sign(tbs))  # Z of the CA's own key, default ID
    return der.sequence(tbs, algorithm_id, der.bit_string(signature))

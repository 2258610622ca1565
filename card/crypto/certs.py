"""Reading and checking the X.509 certificates on E-Port cards (SM2 and RSA).

pyca/cryptography parses names, times and extensions but cannot load an SM2 public key
or check an SM2-with-SM3 signature, and it refuses some certificates CAs do issue. So
the structure that signatures and keys depend on (TBS bytes, SubjectPublicKeyInfo,
signature) is always read with our strict DER reader, and cryptography supplies the
remaining fields where it accepts the certificate; otherwise our reader supplies them.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys

from card.crypto import der, oids
from card.crypto.algorithms import KeyAlgorithm
from card.crypto.rsa import rsa_verify_pkcs1
from card.crypto.sm2 import der_to_raw, sm2_verify, validate_public_point
from card.errors import ProtocolError

_RSA_SIGNATURE_HASH = {oids.SHA256_WITH_RSA: "sha256", oids.SHA1_WITH_RSA: "sha1"}
_MAX_CHAIN_DEPTH = 8


class CertificateChainError(ProtocolError):
    """The certificate does not chain to a trust anchor (or a link is invalid)."""


@dataclass(frozen=True)
class CertificateInfo:
    """What card-agent needs from a certificate.

    `serial_hex` is the "certificate number": the serial's content octets in lowercase
    hex with leading 00 octets dropped (at least one octet kept), i.e. whole byte pairs
    of the positive serial without DER's sign octet: 0x80 -> "80", 0x0102 -> "0102".
    A (non-conforming) negative serial keeps its two's-complement octets.
    `extensions` holds only the E-Port private extensions (1.3.6.1.4.1.5315.100.*), by
    dotted OID; a value that is not a DER string is given as UTF-8 text or else hex.
    Subject fields are the first of their kind; None if absent.
    """

    der: bytes = field(repr=False)
    serial_hex: str
    subject_cn: str | None
    subject_ou: str | None
    subject_o: str | None
    issuer_cn: str | None
    not_before: datetime
    not_after: datetime
    key_algorithm: KeyAlgorithm
    key_bits: int
    sm2_point: bytes | None = field(repr=False)
    rsa_public_key: rsa_keys.RSAPublicKey | None = field(repr=False, compare=False, hash=False)
    signature_algorithm_oid: str
    extensions: Mapping[str, str] = field(hash=False)
    is_ca: bool

    @property
    def company_name(self) -> str | None:
        return self.extensions.get(oids.EPORT_COMPANY_NAME)

    @property
    def org_code(self) -> str | None:
        return self.extensions.get(oids.EPORT_ORG_CODE)


@dataclass(frozen=True)
class _Skeleton:
    tbs: bytes
    serial: bytes
    signature_oid: str
    issuer: der.Element
    subject: der.Element
    not_before: datetime
    not_after: datetime
    spki: der.Element
    extensions: list[tuple[str, bool, bytes]]
    signature: bytes


def _skeleton(cert_der: bytes) -> _Skeleton:
    parts = der.decode(cert_der).expect(der.SEQUENCE, "Certificate").children()
    if len(parts) != 3:
        raise ProtocolError(f"Certificate has {len(parts)} parts, expected 3")
    tbs_el, outer_alg, signature = parts
    tbs = tbs_el.expect(der.SEQUENCE, "TBSCertificate").children()
    if tbs and tbs[0].tag == der.context_tag(0, constructed=True):
        if _single_element(tbs[0]).integer() not in (0, 1, 2):
            raise ProtocolError("unknown certificate version")
        tbs = tbs[1:]
    if len(tbs) < 6:
        raise ProtocolError("TBSCertificate is missing fields")
    serial, inner_alg, issuer, validity, subject, spki = tbs[:6]
    if not serial.expect(der.INTEGER, "serialNumber").content:
        raise ProtocolError("empty serialNumber")
    algorithm = _algorithm_oid(inner_alg)
    if outer_alg.encoded != inner_alg.encoded:
        raise ProtocolError("certificate signature algorithm differs from the TBS one")
    times = validity.expect(der.SEQUENCE, "Validity").children()
    if len(times) != 2:
        raise ProtocolError("Validity must hold notBefore and notAfter")
    extensions: list[tuple[str, bool, bytes]] = []
    for extra in tbs[6:]:
        if extra.tag == der.context_tag(3, constructed=True):
            extensions = [_extension(e) for e in _single(extra, "extensions").children()]
    return _Skeleton(
        tbs=tbs_el.encoded,
        serial=serial.content,
        signature_oid=algorithm,
        issuer=issuer.expect(der.SEQUENCE, "issuer Name"),
        subject=subject.expect(der.SEQUENCE, "subject Name"),
        not_before=times[0].time(),
        not_after=times[1].time(),
        spki=spki.expect(der.SEQUENCE, "SubjectPublicKeyInfo"),
        extensions=extensions,
        signature=signature.bit_string(),
    )


def _single_element(element: der.Element) -> der.Element:
    inner = element.children()
    if len(inner) != 1:
        raise ProtocolError(f"[{element.tag & 0x1F}]: expected one element, found {len(inner)}")
    return inner[0]


def _single(element: der.Element, what: str) -> der.Element:
    return _single_element(element).expect(der.SEQUENCE, what)


def _algorithm_oid(element: der.Element) -> str:
    parts = element.expect(der.SEQUENCE, "AlgorithmIdentifier").children()
    if not 1 <= len(parts) <= 2:
        raise ProtocolError("malformed AlgorithmIdentifier")
    return parts[0].oid()


def _extension(element: der.Element) -> tuple[str, bool, bytes]:
    parts = element.expect(der.SEQUENCE, "Extension").children()
    if len(parts) == 2:
        return parts[0].oid(), False, parts[1].octet_string()
    if len(parts) == 3:
        return parts[0].oid(), parts[1].boolean(), parts[2].octet_string()
    raise ProtocolError("malformed Extension")


def sm2_subject_public_key_info(point: bytes) -> bytes:
    """SubjectPublicKeyInfo for an SM2 point: id-ecPublicKey with the sm2p256v1 curve."""
    validate_public_point(point)
    algorithm = der.sequence(
        der.object_identifier(oids.EC_PUBLIC_KEY), der.object_identifier(oids.SM2_CURVE)
    )
    return der.sequence(algorithm, der.bit_string(point))


def _public_key(
    spki: der.Element,
) -> tuple[KeyAlgorithm, int, bytes | None, rsa_keys.RSAPublicKey | None]:
    parts = spki.children()
    if len(parts) != 2:
        raise ProtocolError("malformed SubjectPublicKeyInfo")
    algorithm = parts[0].expect(der.SEQUENCE, "SPKI algorithm").children()
    if not algorithm:
        raise ProtocolError("empty SPKI AlgorithmIdentifier")
    key_oid = algorithm[0].oid()
    if key_oid == oids.EC_PUBLIC_KEY:
        curve = algorithm[1].oid() if len(algorithm) == 2 else None
        if curve != oids.SM2_CURVE:
            raise ProtocolError(f"unsupported EC curve {curve} (only SM2 is)")
        point = parts[1].bit_string()
        validate_public_point(point)
        return KeyAlgorithm.SM2, 256, point, None
    if key_oid == oids.RSA_ENCRYPTION:
        try:
            key = serialization.load_der_public_key(spki.encoded)
        except ValueError as exc:
            raise ProtocolError(f"malformed RSA public key: {exc}") from exc
        if not isinstance(key, rsa_keys.RSAPublicKey):  # pragma: no cover - OID said RSA
            raise ProtocolError("RSA SubjectPublicKeyInfo did not load as RSA")
        return KeyAlgorithm.RSA, key.key_size, None, key
    raise ProtocolError(f"unsupported public key algorithm {key_oid}")


def _text(raw: bytes) -> str:
    try:
        return der.decode(raw).string()
    except ProtocolError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.hex()


def _name_from_reader(name: der.Element) -> dict[str, str]:
    values: dict[str, str] = {}
    for rdn in name.children():
        for attribute in rdn.expect(der.SET, "RelativeDistinguishedName").children():
            parts = attribute.expect(der.SEQUENCE, "AttributeTypeAndValue").children()
            if len(parts) != 2:
                raise ProtocolError("malformed AttributeTypeAndValue")
            values.setdefault(parts[0].oid(), parts[1].string())
    return values


def _name_from_cryptography(name: x509.Name) -> dict[str, str]:
    values: dict[str, str] = {}
    for attribute in name:
        value = attribute.value
        values.setdefault(
            attribute.oid.dotted_string, value if isinstance(value, str) else value.hex()
        )
    return values


def _fields_from_reader(skeleton: _Skeleton) -> dict[str, Any]:
    is_ca = False
    extensions: dict[str, str] = {}
    for oid, _, value in skeleton.extensions:
        if oid == oids.BASIC_CONSTRAINTS:
            flags = der.decode(value).expect(der.SEQUENCE, "basicConstraints").children()
            is_ca = bool(flags) and flags[0].tag == der.BOOLEAN and flags[0].boolean()
        elif oid.startswith(oids.EPORT_ARC + "."):
            extensions[oid] = _text(value)
    return {
        "subject": _name_from_reader(skeleton.subject),
        "issuer": _name_from_reader(skeleton.issuer),
        "not_before": skeleton.not_before,
        "not_after": skeleton.not_after,
        "is_ca": is_ca,
        "extensions": extensions,
    }


def _fields_from_cryptography(cert: x509.Certificate) -> dict[str, Any]:
    is_ca = False
    extensions: dict[str, str] = {}
    for extension in cert.extensions:
        value = extension.value
        if isinstance(value, x509.BasicConstraints):
            is_ca = value.ca
        elif isinstance(value, x509.UnrecognizedExtension) and (
            extension.oid.dotted_string.startswith(oids.EPORT_ARC + ".")
        ):
            extensions[extension.oid.dotted_string] = _text(value.value)
    return {
        "subject": _name_from_cryptography(cert.subject),
        "issuer": _name_from_cryptography(cert.issuer),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "is_ca": is_ca,
        "extensions": extensions,
    }


def parse_certificate(cert_der: bytes, *, use_cryptography: bool = True) -> CertificateInfo:
    """Parse an SM2 or RSA certificate; malformed input raises ProtocolError.

    `use_cryptography=False` forces our reader for every field (tests compare both).
    """
    cert_der = bytes(cert_der)
    skeleton = _skeleton(cert_der)
    algorithm, bits, point, rsa_key = _public_key(skeleton.spki)
    fields: dict[str, Any] | None = None
    # cryptography warns about (and will refuse) serials that are not positive; some
    # CAs issue them, and our reader handles them without a warning.
    serial_positive = not skeleton.serial[0] & 0x80 and any(skeleton.serial)
    if use_cryptography and serial_positive:
        try:
            fields = _fields_from_cryptography(x509.load_der_x509_certificate(cert_der))
        except ValueError:
            fields = None  # cryptography refused (e.g. a quirk it rejects); ours decides
    if fields is None:
        fields = _fields_from_reader(skeleton)
    subject, issuer = fields["subject"], fields["issuer"]
    return CertificateInfo(
        der=cert_der,
        serial_hex=(skeleton.serial.lstrip(b"\x00") or b"\x00").hex(),
        subject_cn=subject.get(oids.COMMON_NAME),
        subject_ou=subject.get(oids.ORG_UNIT),
        subject_o=subject.get(oids.ORGANIZATION),
        issuer_cn=issuer.get(oids.COMMON_NAME),
        not_before=fields["not_before"],
        not_after=fields["not_after"],
        key_algorithm=algorithm,
        key_bits=bits,
        sm2_point=point,
        rsa_public_key=rsa_key,
        signature_algorithm_oid=skeleton.signature_oid,
        extensions=MappingProxyType(fields["extensions"]),
        is_ca=fields["is_ca"],
    )


def days_left(info: CertificateInfo, now: datetime) -> float:
    """Days until notAfter (negative once expired). `now` must be timezone-aware."""
    if now.tzinfo is None:
        raise ValueError("days_left needs a timezone-aware `now`")
    return (info.not_after - now).total_seconds() / 86400


def verify_issued_by(cert_der: bytes, issuer_der: bytes) -> bool:
    """Whether `issuer_der`'s key signed `cert_der` and its subject is the cert's issuer.

    Names are compared as exact DER. SM2-with-SM3 uses Z of the issuer's key with the
    default ID (GM/T 0015). An unsupported signature algorithm raises ProtocolError.
    """
    cert = _skeleton(cert_der)
    issuer = _skeleton(issuer_der)
    if cert.issuer.encoded != issuer.subject.encoded:
        return False
    _, _, point, rsa_key = _public_key(issuer.spki)
    if cert.signature_oid == oids.SM2_WITH_SM3:
        if point is None:
            return False
        try:
            raw = der_to_raw(cert.signature)
        except ProtocolError:
            return False
        return sm2_verify(point, cert.tbs, raw)
    hash_name = _RSA_SIGNATURE_HASH.get(cert.signature_oid)
    if hash_name is None:
        raise ProtocolError(f"unsupported certificate signature algorithm {cert.signature_oid}")
    return rsa_key is not None and rsa_verify_pkcs1(rsa_key, cert.signature, cert.tbs, hash_name)


def verify_chain(
    cert_der: bytes,
    intermediates: Iterable[bytes],
    trust_anchors_der: Iterable[bytes],
    *,
    at: datetime | None = None,
) -> None:
    """Raise CertificateChainError unless `cert_der` chains to one of the anchors.

    Intermediates must be CA certificates; anchors are trusted as configured. With
    `at`, every certificate on the path must be valid at that moment; without it
    validity periods are not checked (callers report expiry themselves, see days_left).
    """
    anchors = [bytes(a) for a in trust_anchors_der]
    pool = [bytes(c) for c in intermediates]
    current = bytes(cert_der)
    for _ in range(_MAX_CHAIN_DEPTH):
        _check_time(current, at)
        if current in anchors:
            return
        for anchor in anchors:
            if verify_issued_by(current, anchor):
                _check_time(anchor, at)
                return
        for candidate in pool:
            if parse_certificate(candidate).is_ca and verify_issued_by(current, candidate):
                pool.remove(candidate)
                current = candidate
                break
        else:
            info = parse_certificate(current)
            raise CertificateChainError(
                f"no trusted issuer for {info.subject_cn!r} (issuer {info.issuer_cn!r}, "
                f"serial {info.serial_hex})"
            )
    raise CertificateChainError(f"certificate chain longer than {_MAX_CHAIN_DEPTH}")


def _check_time(cert_der: bytes, at: datetime | None) -> None:
    if at is None:
        return
    info = parse_certificate(cert_der)
    if not info.not_before <= at <= info.not_after:
        raise CertificateChainError(
            f"certificate {info.subject_cn!r} (serial {info.serial_hex}) is not valid at "
            f"{at.isoformat()}: {info.not_before.isoformat()} .. {info.not_after.isoformat()}"
        )


def certificate_to_pem(cert_der: bytes) -> str:
    body = "\n".join(textwrap.wrap(base64.b64encode(cert_der).decode("ascii"), 64))
    return f"-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n"


def certificate_from_pem(pem: str) -> bytes:
    """DER of the first CERTIFICATE block."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        raise ProtocolError("no PEM CERTIFICATE block found")
    try:
        return base64.b64decode("".join(pem[start + len(begin) : stop].split()), validate=True)
    except ValueError as exc:
        raise ProtocolError(f"invalid base64 in PEM certificate: {exc}") from exc


def certificate_summary(info: CertificateInfo, now: datetime) -> dict[str, Any]:
    """The certificate as the agent shows it (API and CLI): number, names, validity,
    key, and the PEM."""
    return {
        "certificate_number": info.serial_hex,
        "subject": {"cn": info.subject_cn, "ou": info.subject_ou, "o": info.subject_o},
        "issuer_cn": info.issuer_cn,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "days_left": round(days_left(info, now), 2),
        "key_algorithm": info.key_algorithm,
        "key_bits": info.key_bits,
        "pem": certificate_to_pem(info.der),
    }

"""RSA PKCS#1 v1.5 as the legacy E-Port RSA cards use it (SHA-1, also SHA-256).

Such a card is handed a DigestInfo and applies type-1 padding and the private key
itself, so the host side needs DigestInfo encode/parse and the simulator needs the
card's half (`rsa_sign_digest_info`).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from card.crypto import der, oids
from card.errors import ProtocolError

_HASHES: dict[str, tuple[str, type[hashes.HashAlgorithm], int]] = {
    "sha1": (oids.SHA1, hashes.SHA1, 20),
    "sha256": (oids.SHA256, hashes.SHA256, 32),
}
_NAME_BY_OID = {oid: name for name, (oid, _, _) in _HASHES.items()}
_MIN_PADDING = 8  # RFC 8017 9.2: at least eight 0xFF octets


def _hash(hash_name: str) -> tuple[str, type[hashes.HashAlgorithm], int]:
    try:
        return _HASHES[hash_name]
    except KeyError:
        raise ValueError(f"unsupported hash {hash_name!r}; use 'sha1' or 'sha256'") from None


def digest_info(hash_name: str, digest: bytes) -> bytes:
    """DER DigestInfo (RFC 8017 9.2) with the NULL parameters every signer emits."""
    oid, _, size = _hash(hash_name)
    if len(digest) != size:
        raise ValueError(f"{hash_name} digest must be {size} bytes, got {len(digest)}")
    algorithm = der.sequence(der.object_identifier(oid), der.null())
    return der.sequence(algorithm, der.octet_string(digest))


def parse_digest_info(data: bytes) -> tuple[str, bytes]:
    """(hash name, digest) of a canonical sha1/sha256 DigestInfo; anything else raises."""
    parts = der.decode(data).expect(der.SEQUENCE, "DigestInfo").children()
    if len(parts) != 2:
        raise ProtocolError("DigestInfo must hold an AlgorithmIdentifier and a digest")
    algorithm = parts[0].expect(der.SEQUENCE, "DigestInfo algorithm").children()
    if not algorithm:
        raise ProtocolError("empty DigestInfo AlgorithmIdentifier")
    name = _NAME_BY_OID.get(algorithm[0].oid())
    if name is None:
        raise ProtocolError(f"DigestInfo hash {algorithm[0].oid()} is not sha1 or sha256")
    digest = parts[1].octet_string()
    if len(digest) != _HASHES[name][2] or digest_info(name, digest) != data:
        raise ProtocolError(f"DigestInfo for {name} is not in its canonical form")
    return name, digest


def rsa_verify_pkcs1(
    public_key: rsa.RSAPublicKey, signature: bytes, message: bytes, hash_name: str
) -> bool:
    try:
        public_key.verify(signature, message, padding.PKCS1v15(), _hash(hash_name)[1]())
    except InvalidSignature:
        return False
    return True


def rsa_verify_digest(
    public_key: rsa.RSAPublicKey, signature: bytes, digest: bytes, hash_name: str
) -> bool:
    algorithm = _hash(hash_name)[1]()
    try:
        public_key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(algorithm))
    except (InvalidSignature, ValueError):  # ValueError: digest of the wrong length
        return False
    return True


def rsa_sign_digest_info(private_key: rsa.RSAPrivateKey, digest_info: bytes) -> bytes:
    """The card's half of PKCS#1 v1.5 signing: EM = 00 01 FF.. 00 || DigestInfo, then m^d.

    Used by the simulator only (test keys), so the plain-integer CRT below need not be
    constant-time. The DigestInfo is padded as given, as a card would.
    """
    numbers = private_key.private_numbers()
    public = numbers.public_numbers
    k = (public.n.bit_length() + 7) // 8
    pad = k - 3 - len(digest_info)
    if pad < _MIN_PADDING:
        raise ValueError(f"DigestInfo of {len(digest_info)} bytes is too long for a {k}-byte key")
    m = int.from_bytes(b"\x00\x01" + b"\xff" * pad + b"\x00" + digest_info, "big")
    p, q = numbers.p, numbers.q
    m1 = pow(m, numbers.dmp1, p)
    m2 = pow(m, numbers.dmq1, q)
    s = m2 + q * ((numbers.iqmp * (m1 - m2)) % p)
    if pow(s, public.e, public.n) != m:  # a CRT fault would otherwise leak the factors
        raise RuntimeError("RSA private operation self-check failed")
    return s.to_bytes(k, "big")

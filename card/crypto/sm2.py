"""SM2 signatures (GM/T 0003) the way E-Port cards produce them.

Cards return raw r||s (64 bytes) over e = SM3(Z || M), with Z computed from the
signer's public key and the default ID (GM/T 0009). Everything here therefore works on
raw signatures and e, and converts to DER only at the tongsuopy boundary.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from tongsuopy.crypto import serialization
from tongsuopy.crypto.asymciphers import ec
from tongsuopy.crypto.exceptions import UnsupportedAlgorithm

from card.crypto import _sm2_native, der
from card.crypto.sm3 import sm3
from card.errors import ProtocolError

SM2_DEFAULT_ID = b"1234567812345678"

P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = P - 3
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123

_CURVE_PARAMS = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))


def validate_public_point(point: bytes) -> tuple[int, int]:
    """(x, y) of a 65-byte uncompressed point 04||x||y on the SM2 curve.

    The cofactor is 1, so every affine point on the curve is in the signing group.
    """
    if len(point) != 65 or point[0] != 0x04:
        raise ProtocolError(
            f"SM2 public key must be 65 bytes 04||x||y, got {len(point)} bytes"
            + (f" starting {point[0]:02x}" if point else "")
        )
    x = int.from_bytes(point[1:33], "big")
    y = int.from_bytes(point[33:], "big")
    if x >= P or y >= P or (y * y - (x * x * x + A * x + B)) % P:
        raise ProtocolError("SM2 public key is not a point on the SM2 curve")
    return x, y


def sm2_z(public_point: bytes, uid: bytes = SM2_DEFAULT_ID) -> bytes:
    """Z = SM3(ENTL || ID || a || b || Gx || Gy || xA || yA)."""
    validate_public_point(public_point)
    bits = len(uid) * 8
    if bits > 0xFFFF:
        raise ValueError("SM2 user ID longer than 8191 bytes")
    return sm3(bits.to_bytes(2, "big") + uid + _CURVE_PARAMS + public_point[1:])


def sm2_e(public_point: bytes, message: bytes, uid: bytes = SM2_DEFAULT_ID) -> bytes:
    """e = SM3(Z || M): what a card's ECCSignData is given."""
    return sm3(sm2_z(public_point, uid) + message)


def raw_to_der(raw: bytes) -> bytes:
    """64-byte r||s -> DER SEQUENCE { r INTEGER, s INTEGER }."""
    if len(raw) != 64:
        raise ProtocolError(f"SM2 signature must be 64 bytes r||s, got {len(raw)}")
    r = int.from_bytes(raw[:32], "big")
    s = int.from_bytes(raw[32:], "big")
    if not (0 < r < N and 0 < s < N):
        raise ProtocolError("SM2 signature r or s is outside [1, n-1]")
    return der.sequence(der.integer(r), der.integer(s))


def der_to_raw(der_signature: bytes) -> bytes:
    """Canonical DER SEQUENCE of two INTEGERs in [1, n-1] -> 64-byte r||s."""
    seq = der.decode(der_signature).expect(der.SEQUENCE, "SM2 signature")
    parts = seq.children()
    if len(parts) != 2:
        raise ProtocolError(f"SM2 signature SEQUENCE has {len(parts)} elements, not 2")
    r, s = (part.integer() for part in parts)
    if not (0 < r < N and 0 < s < N):
        raise ProtocolError("SM2 signature r or s is outside [1, n-1]")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _check_e(e: bytes) -> None:
    if len(e) != 32:
        raise ValueError(f"SM2 e must be a 32-byte SM3 digest, got {len(e)} bytes")


@lru_cache(maxsize=64)
def _public_key(point: bytes) -> Any:
    # Verifying many signatures of one card re-uses its key object (immutable).
    validate_public_point(point)
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SM2(), point)


class Sm2PrivateKey:
    """An SM2 key that signs like a card: given e, returns raw r||s."""

    def __init__(self, key: Any) -> None:
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SM2):
            raise ValueError("not an SM2 private key")
        self._key = key
        self._point: bytes = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def __repr__(self) -> str:
        return f"Sm2PrivateKey(public_point={self._point.hex()[:18]}...)"

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        return cls(ec.generate_private_key(ec.SM2()))

    @classmethod
    def from_pem(cls, pem: bytes) -> Sm2PrivateKey:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except UnsupportedAlgorithm as exc:
            raise ValueError(f"not an SM2 private key: {exc}") from exc
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not an unencrypted PEM private key: {exc}") from exc
        return cls(key)

    def to_pem(self) -> bytes:
        """PKCS#8, unencrypted: for the simulator's state file only."""
        pem: bytes = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem

    @property
    def public_point(self) -> bytes:
        return self._point

    def sign_digest(self, e: bytes) -> bytes:
        _check_e(e)
        return der_to_raw(_sm2_native.sign_e(self._key._evp_pkey, e))

    def sign(self, message: bytes, uid: bytes = SM2_DEFAULT_ID) -> bytes:
        return self.sign_digest(sm2_e(self._point, message, uid))


def sm2_verify_digest(public_point: bytes, e: bytes, raw_sig: bytes) -> bool:
    """False for any signature that does not verify, malformed ones included.

    A malformed public point raises ProtocolError: that is a bad key, not a bad
    signature.
    """
    _check_e(e)
    key = _public_key(bytes(public_point))
    try:
        der_signature = raw_to_der(raw_sig)
    except ProtocolError:
        return False
    return _sm2_native.verify_e(key._evp_pkey, e, der_signature)


def sm2_verify(
    public_point: bytes, message: bytes, raw_sig: bytes, uid: bytes = SM2_DEFAULT_ID
) -> bool:
    return sm2_verify_digest(public_point, sm2_e(public_point, message, uid), raw_sig)

"""What the agent needs from an E-Port card, independent of how it is reached.

`EPortSession` implements this over the project's APDU profile. A driver for real
hardware (a vendor SKF or PKCS#11 library) would implement the same protocol; the
agent depends only on this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from card.crypto.algorithms import SignAlgorithm
from card.crypto.sm2 import raw_to_der
from card.eport.kinds import CardType
from card.eport.profile import PIN_MAX_LEN, PIN_MIN_LEN
from card.errors import InvalidPinFormat, InvalidRequest

__all__ = [
    "CardDriver",
    "CardInfo",
    "CardType",
    "CertSlot",
    "PinStatus",
    "SignAlgorithm",
    "Signature",
    "check_pin_format",
    "choose_algorithm",
    "default_algorithm",
    "mask_card_number",
]


def check_pin_format(pin: str) -> bytes:
    """The PIN as ASCII bytes; refuses what no E-Port card accepts (6 to 16 printable
    ASCII characters) before any driver sends it, so no try is spent on it."""
    if not isinstance(pin, str):
        raise InvalidPinFormat("PIN must be text")
    if not PIN_MIN_LEN <= len(pin) <= PIN_MAX_LEN:
        raise InvalidPinFormat(
            f"PIN must be {PIN_MIN_LEN} to {PIN_MAX_LEN} characters, got {len(pin)}"
        )
    if not all(0x21 <= ord(c) <= 0x7E for c in pin):
        raise InvalidPinFormat("PIN may contain only printable ASCII letters, digits and symbols")
    return pin.encode("ascii")


def default_algorithm(key_algorithm: str, key_bits: int) -> SignAlgorithm:
    """What a card with this signing key signs by default: SM2 keys SM2-SM3; RSA keys
    SHA-256, except legacy 1024-bit ones, which sign SHA-1 (as the published real
    samples show)."""
    if key_algorithm == "SM2":
        return SignAlgorithm.SM2_SM3
    return SignAlgorithm.RSA_SHA1 if key_bits <= 1024 else SignAlgorithm.RSA_SHA256


def choose_algorithm(default: SignAlgorithm, requested: SignAlgorithm | None) -> SignAlgorithm:
    """The algorithm to sign with when a caller asks for `requested` on a card whose
    key signs `default`: an RSA key signs either RSA hash; SM2 and RSA never mix."""
    if requested is None or requested is default:
        return default
    if default is not SignAlgorithm.SM2_SM3 and requested is not SignAlgorithm.SM2_SM3:
        return requested  # an RSA key signs any DigestInfo: SHA-1 or SHA-256
    raise InvalidRequest(f"a {default.value} card cannot sign {requested.value}")


class CertSlot(StrEnum):
    SIGN = "sign"
    ENCRYPT = "encrypt"


def mask_card_number(number: str) -> str:
    """Keep the last four characters: enough for staff to match a card, not to copy it."""
    if len(number) <= 4:
        return "*" * len(number)
    return "*" * (len(number) - 4) + number[-4:]


@dataclass(frozen=True)
class CardInfo:
    card_number: str
    holder_name: str
    company_name: str
    uscc: str  # unified social credit code, 18 characters
    card_type: CardType
    enterprise_code: str | None = None

    @property
    def masked_card_number(self) -> str:
        return mask_card_number(self.card_number)


@dataclass(frozen=True)
class PinStatus:
    tries_left: int | None  # None when the card is verified (the count is not reported)
    blocked: bool
    verified: bool


@dataclass(frozen=True)
class Signature:
    algorithm: SignAlgorithm
    value: bytes  # SM2: raw r||s (64 bytes, as the official client); RSA: PKCS#1 v1.5
    digest: bytes  # what the card signed: SM2 e = SM3(Z||M); RSA the message hash

    def der(self) -> bytes:
        """SM2 as a DER SEQUENCE of r and s; RSA signatures have no other form."""
        if self.algorithm is SignAlgorithm.SM2_SM3:
            return raw_to_der(self.value)
        return self.value


class CardDriver(Protocol):
    @property
    def atr(self) -> bytes: ...

    @property
    def algorithm(self) -> SignAlgorithm: ...

    def card_info(self) -> CardInfo: ...

    def certificate(self, slot: CertSlot = CertSlot.SIGN) -> bytes:
        """The X.509 certificate, DER."""
        ...

    def pin_status(self) -> PinStatus:
        """Never spends a try."""
        ...

    def verify_pin(self, pin: str) -> None:
        """Raises WrongPinError (tries_left) / PinBlockedError / InvalidPinFormat."""
        ...

    def change_pin(self, old_pin: str, new_pin: str) -> None: ...

    def sign(self, message: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        """Hash on the host as the card's algorithm requires, then sign. `algorithm`
        overrides the card's default hash where the key allows it (an RSA-2048 card asked
        for RSA-SHA1, as the official client's protocol does)."""
        ...

    def sign_digest(self, digest: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        """Sign a precomputed digest (SM2: e = SM3(Z||M); RSA: the message hash)."""
        ...

    def logout(self) -> None:
        """End the verified state on the card."""
        ...

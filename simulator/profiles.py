"""Card profiles as data: who the card belongs to, which keys it has, how its PIN stands.

A profile is a frozen description; `simulator.state.CardFactory` turns one into a card
(fresh keys, certificates from the world's test CA). Adding a card is adding a row to
`PROFILES`, not code. All people, companies and codes here are invented; the codes are
merely syntactically valid (the USCC check characters are right) so that host-side
validation has something realistic to chew on.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from card.eport.driver import CardType
from card.eport.profile import PIN_MAX_LEN, PIN_MIN_LEN

Algorithm = Literal["SM2", "RSA"]

# GB 32100-2015 unified social credit code alphabet (no I, O, S, V, Z) and weights.
_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code (GB 32100-2015)."""
    if len(first17) != 17 or any(c not in _USCC_ALPHABET for c in first17):
        raise ValueError("a USCC body is 17 characters of the GB 32100 alphabet")
    total = sum(_USCC_ALPHABET.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return _USCC_ALPHABET[(31 - total % 31) % 31]


def is_valid_uscc(code: str) -> bool:
    if len(code) != 18 or any(c not in _USCC_ALPHABET for c in code):
        return False
    return uscc_check_char(code[:17]) == code[17]


@dataclass(frozen=True, slots=True)
class CardProfile:
    name: str
    description: str
    card_type: CardType
    card_number: str  # ASCII digits, as printed on the card
    holder_name: str
    company_name: str
    uscc: str  # unified social credit code, 18 characters
    enterprise_code: str  # customs enterprise code, 10 characters
    algorithm: Algorithm
    key_bits: int  # 256 for SM2; 1024 or 2048 for RSA
    # RSA only: the hash the card is used with and that the CA signs its certificate with
    # (legacy cards: SHA-1 everywhere).
    rsa_hash: Literal["sha1", "sha256"] = "sha256"
    pin: str = "88888888"
    pin_max_tries: int = 10
    pin_tries_left: int | None = None  # None = max_tries; 0 = blocked from the start
    unblock_code: str = "12345678"  # the issuer's; a kiosk never knows it
    unblock_max_tries: int = 10
    # Certificate validity relative to the moment the card is made, in days.
    valid_from_days: int = -180
    valid_until_days: int = 730

    def __post_init__(self) -> None:
        if not (self.card_number.isascii() and self.card_number.isdigit()):
            raise ValueError(f"{self.name}: card number must be ASCII digits")
        if not is_valid_uscc(self.uscc):
            raise ValueError(f"{self.name}: {self.uscc!r} is not a valid USCC")
        if len(self.enterprise_code) != 10 or not self.enterprise_code.isascii():
            raise ValueError(f"{self.name}: customs enterprise code must be 10 ASCII chars")
        if self.algorithm == "SM2" and self.key_bits != 256:
            raise ValueError(f"{self.name}: SM2 keys are 256 bits")
        if self.algorithm == "RSA" and self.key_bits not in (1024, 2048):
            raise ValueError(f"{self.name}: RSA keys are 1024 or 2048 bits")
        for secret in (self.pin, self.unblock_code):
            ok = PIN_MIN_LEN <= len(secret) <= PIN_MAX_LEN and all(
                0x21 <= ord(c) <= 0x7E for c in secret
            )
            if not ok:
                raise ValueError(f"{self.name}: PINs are 6-16 printable ASCII characters")
        if self.valid_from_days >= self.valid_until_days:
            raise ValueError(f"{self.name}: certificate validity ends before it starts")


_SHENZHEN_CO = "深圳市前海示例贸易有限公司"
_SHENZHEN_USCC = "91440300MA5FQ3K23X"

_ALL = (
    CardProfile(
        name="legal-person-sm2",
        description="法人卡 (legal-person card), SM2, healthy",
        card_type=CardType.LEGAL_PERSON,
        card_number="8900000012345",
        holder_name="张伟",
        company_name=_SHENZHEN_CO,
        uscc=_SHENZHEN_USCC,
        enterprise_code="4403160A01",
        algorithm="SM2",
        key_bits=256,
    ),
    CardProfile(
        name="operator-sm2",
        description="操作员卡 (operator card) of the same company, SM2",
        card_type=CardType.OPERATOR,
        card_number="8900000012346",
        holder_name="李娜",
        company_name=_SHENZHEN_CO,
        uscc=_SHENZHEN_USCC,
        enterprise_code="4403160A01",
        algorithm="SM2",
        key_bits=256,
    ),
    CardProfile(
        name="legacy-rsa1024",
        description="legacy RSA-1024 card: SHA-1 signatures, sha1WithRSA certificates",
        card_type=CardType.LEGAL_PERSON,
        card_number="3100000004321",
        holder_name="王芳",
        company_name="上海示例进出口有限公司",
        uscc="91310000132457686A",
        enterprise_code="3122240B07",
        algorithm="RSA",
        key_bits=1024,
        rsa_hash="sha1",
    ),
    CardProfile(
        name="rsa2048",
        description="RSA-2048 card, SHA-256, factory PIN 00000000",
        card_type=CardType.OPERATOR,
        card_number="4400000077881",
        holder_name="刘洋",
        company_name="广州示例物流有限公司",
        uscc="91440101MA59UT4R3J",
        enterprise_code="4401940C12",
        algorithm="RSA",
        key_bits=2048,
        pin="00000000",
    ),
    CardProfile(
        name="blocked-pin",
        description="SM2 card whose PIN is blocked (retry counter 0)",
        card_type=CardType.OPERATOR,
        card_number="8900000099001",
        holder_name="陈静",
        company_name="深圳市前海示例供应链有限公司",
        uscc="91440300MA5H2LD887",
        enterprise_code="4403160D33",
        algorithm="SM2",
        key_bits=256,
        pin_tries_left=0,
    ),
    CardProfile(
        name="expired-cert",
        description="SM2 card whose signing certificate expired 30 days ago",
        card_type=CardType.LEGAL_PERSON,
        card_number="3300000055602",
        holder_name="杨磊",
        company_name="宁波示例国际货运代理有限公司",
        uscc="91330200MA2CX7B43U",
        enterprise_code="3302960E45",
        algorithm="SM2",
        key_bits=256,
        valid_from_days=-760,
        valid_until_days=-30,
    ),
    CardProfile(
        name="expiring-soon",
        description="SM2 card whose certificate expires in 10 days (Single Window warns < 30)",
        card_type=CardType.OPERATOR,
        card_number="1100000031415",
        holder_name="赵敏",
        company_name="北京示例报关有限公司",
        uscc="91110105MA01R9KE1H",
        enterprise_code="1105980F58",
        algorithm="SM2",
        key_bits=256,
        valid_from_days=-720,
        valid_until_days=10,
    ),
)

PROFILES: MappingProxyType[str, CardProfile] = MappingProxyType({p.name: p for p in _ALL})
DEFAULT_PROFILE = "legal-person-sm2"


def get_profile(name: str) -> CardProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise KeyError(f"unknown card profile {name!r}; known: {known}") from None

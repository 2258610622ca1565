"""What a simulated card remembers across power cycles, and where it comes from.

`CardState` is the card's persistent memory: who it belongs to, its keys and
certificates, its PIN and unblock code with their retry counters, and the state of the
test CAs that issued its certificates. `CardFactory` makes a fresh state from a
`CardProfile` (new keys, certificates from the factory's CAs: one SM2 and one RSA CA per
factory, i.e. per simulated "world"). `StateStore` keeps a state in a JSON file, written
atomically on every PIN counter change, so a card locked before a restart is still
locked after it. Without a store the card lives in memory only.

The file holds the PIN, the unblock code and private keys in clear: it is test
material, created with mode 0600.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from card.crypto import oids
from card.crypto.sm2 import Sm2PrivateKey
from card.eport.driver import CardType
from card.eport.profile import CARD_TYPE_BY_CODE, CARD_TYPE_CODES
from simulator.ca import KeyUsage, TestCA
from simulator.pin import PinObject
from simulator.profiles import Algorithm, CardProfile, get_profile

STATE_FORMAT = 1
SigningKey = Sm2PrivateKey | rsa.RSAPrivateKey


@dataclass
class CardState:
    profile: str
    card_type: CardType
    card_number: str
    holder_name: str
    company_name: str
    uscc: str
    enterprise_code: str
    algorithm: Algorithm
    key_bits: int
    pin: PinObject
    unblock: PinObject
    sign_key_pem: bytes = field(repr=False)
    enc_key_pem: bytes = field(repr=False)
    sign_cert: bytes = field(repr=False)
    enc_cert: bytes = field(repr=False)
    # TestCA.to_state() of the world's CAs by algorithm ("SM2", "RSA"): whichever exist.
    ca_states: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    _signing_key: SigningKey | None = field(default=None, init=False, repr=False, compare=False)

    def signing_key(self) -> SigningKey:
        if self._signing_key is None:
            self._signing_key = _load_key(self.algorithm, self.sign_key_pem)
        return self._signing_key

    def ca(self, algorithm: Algorithm) -> TestCA | None:
        ca_state = self.ca_states.get(algorithm)
        return None if ca_state is None else TestCA.from_state(ca_state)

    def ca_bundle_pem(self) -> str:
        """The certificates of the CAs behind this card's certificates, as a PEM bundle
        (what a kiosk would configure as its CA bundle for a real card)."""
        return "".join(ca["certificate_pem"] for ca in self.ca_states.values())

    # --- JSON --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode("ascii")

        return {
            "format": STATE_FORMAT,
            "profile": self.profile,
            "card": {
                "type": CARD_TYPE_CODES[self.card_type],
                "number": self.card_number,
                "holder_name": self.holder_name,
                "company_name": self.company_name,
                "uscc": self.uscc,
                "enterprise_code": self.enterprise_code,
            },
            "algorithm": self.algorithm,
            "key_bits": self.key_bits,
            "pin": _pin_dict(self.pin),
            "unblock": _pin_dict(self.unblock),
            "sign_key_pem": self.sign_key_pem.decode("ascii"),
            "enc_key_pem": self.enc_key_pem.decode("ascii"),
            "sign_cert": b64(self.sign_cert),
            "enc_cert": b64(self.enc_cert),
            "ca": self.ca_states,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CardState:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"card state format {data.get('format')!r} is not {STATE_FORMAT}")
        algorithm = data["algorithm"]
        if algorithm not in ("SM2", "RSA"):
            raise ValueError(f"card state: unknown algorithm {algorithm!r}")
        card = data["card"]
        return cls(
            profile=str(data["profile"]),
            card_type=CARD_TYPE_BY_CODE[card["type"]],
            card_number=str(card["number"]),
            holder_name=str(card["holder_name"]),
            company_name=str(card["company_name"]),
            uscc=str(card["uscc"]),
            enterprise_code=str(card["enterprise_code"]),
            algorithm=cast(Algorithm, algorithm),
            key_bits=int(data["key_bits"]),
            pin=_pin_from(data["pin"]),
            unblock=_pin_from(data["unblock"]),
            sign_key_pem=str(data["sign_key_pem"]).encode("ascii"),
            enc_key_pem=str(data["enc_key_pem"]).encode("ascii"),
            sign_cert=base64.b64decode(data["sign_cert"], validate=True),
            enc_cert=base64.b64decode(data["enc_cert"], validate=True),
            ca_states={str(k): dict(v) for k, v in data.get("ca", {}).items()},
        )

    def copy(self) -> CardState:
        """An independent card with the same memory (no store attached)."""
        return CardState.from_dict(self.to_dict())


def _pin_dict(pin: PinObject) -> dict[str, Any]:
    return {
        "value": pin.value.decode("ascii"),
        "tries_left": pin.tries_left,
        "max_tries": pin.max_tries,
    }


def _pin_from(data: Mapping[str, Any]) -> PinObject:
    return PinObject(
        str(data["value"]), max_tries=int(data["max_tries"]), tries_left=int(data["tries_left"])
    )


def _load_key(algorithm: Algorithm, pem: bytes) -> SigningKey:
    if algorithm == "SM2":
        return Sm2PrivateKey.from_pem(pem)
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("card state: the key is not an RSA private key")
    return key


def _rsa_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class StateStore:
    """One card's state in one JSON file, replaced atomically on every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> CardState | None:
        """The stored state, or None when the file does not exist."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return CardState.from_dict(json.loads(text))

    def save(self, state: CardState) -> None:
        # temp file in the same directory + fsync + rename: a crash leaves the old or
        # the new file, never half of one; then fsync the directory so the rename sticks.
        text = json.dumps(state.to_dict(), ensure_ascii=False, indent=1)
        directory = self.path.parent
        with self._lock:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def attach(self, state: CardState) -> None:
        """Save `state` whenever its PIN or unblock code changes (value or counter)."""

        def save() -> None:
            self.save(state)

        state.pin.on_change = save
        state.unblock.on_change = save


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class CardFactory:
    """Makes card states for profiles, with certificates from this world's test CAs.

    The CAs are created on first use (an RSA CA means an RSA-2048 key generation, which
    an SM2-only test should not pay for) or passed in to rebuild a known world.
    """

    def __init__(
        self,
        *,
        cas: Mapping[str, TestCA] | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._cas: dict[str, TestCA] = dict(cas or {})
        self._clock = clock
        self._lock = threading.Lock()

    def ca(self, algorithm: Algorithm) -> TestCA:
        with self._lock:
            ca = self._cas.get(algorithm)
            if ca is None:
                ca = self._cas[algorithm] = TestCA.create(algorithm)
            return ca

    @property
    def cas(self) -> dict[str, TestCA]:
        """The CAs created so far, by algorithm."""
        with self._lock:
            return dict(self._cas)

    def to_state(self) -> dict[str, dict[str, str]]:
        return {alg: ca.to_state() for alg, ca in self.cas.items()}

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping[str, str]]) -> CardFactory:
        return cls(cas={alg: TestCA.from_state(s) for alg, s in state.items()})

    def make_state(self, profile: CardProfile | str) -> CardState:
        prof = get_profile(profile) if isinstance(profile, str) else profile
        ca = self.ca(prof.algorithm)
        now = self._clock()
        not_before = now + timedelta(days=prof.valid_from_days)
        not_after = now + timedelta(days=prof.valid_until_days)
        keys = [self._new_key(prof) for _ in range(2)]  # signing, encryption
        usages: tuple[KeyUsage, KeyUsage] = ("sign", "encipher")
        certs = []
        for key, usage in zip(keys, usages, strict=True):
            public: bytes | rsa.RSAPublicKey = (
                key.public_point if isinstance(key, Sm2PrivateKey) else key.public_key()
            )
            certs.append(
                ca.issue(
                    public,
                    common_name=prof.holder_name,
                    org_unit=prof.company_name,
                    serial=secrets.randbits(63) | 1 << 62,  # positive, 8 octets
                    not_before=not_before,
                    not_after=not_after,
                    key_usage=usage,
                    extensions={
                        oids.EPORT_COMPANY_NAME: prof.company_name,
                        oids.EPORT_ORG_CODE: prof.uscc,
                    },
                    signature_hash=prof.rsa_hash if prof.algorithm == "RSA" else "sha256",
                )
            )
        pems = [k.to_pem() if isinstance(k, Sm2PrivateKey) else _rsa_pem(k) for k in keys]
        return CardState(
            profile=prof.name,
            card_type=prof.card_type,
            card_number=prof.card_number,
            holder_name=prof.holder_name,
            company_name=prof.company_name,
            uscc=prof.uscc,
            enterprise_code=prof.enterprise_code,
            algorithm=prof.algorithm,
            key_bits=prof.key_bits,
            pin=PinObject(prof.pin, max_tries=prof.pin_max_tries, tries_left=prof.pin_tries_left),
            unblock=PinObject(prof.unblock_code, max_tries=prof.unblock_max_tries),
            sign_key_pem=pems[0],
            enc_key_pem=pems[1],
            sign_cert=certs[0],
            enc_cert=certs[1],
            ca_states=self.to_state(),
        )

    @staticmethod
    def _new_key(prof: CardProfile) -> SigningKey:
        if prof.algorithm == "SM2":
            return Sm2PrivateKey.generate()
        return rsa.generate_private_key(public_exponent=65537, key_size=prof.key_bits)

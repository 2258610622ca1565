"""`EPortSession`: the E-Port card profile (docs/card-profile.md) over an exchange.

Nothing here caches a secret: the PIN is turned into a PIN block, sent, and dropped.
What is cached (FCI, card info, certificates) is tied to the transport's generation,
so a reset, a re-insertion or a reconnect makes the session select the application
again and read everything anew instead of trusting stale state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from card.apdu import CommandApdu
from card.crypto.certs import CertificateInfo, parse_certificate
from card.crypto.rsa import digest_info
from card.crypto.sm2 import sm2_e
from card.eport import profile as p
from card.eport.driver import (
    CardInfo,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
    check_pin_format,
    choose_algorithm,
    default_algorithm,
)
from card.eport.tlv import tlv_dict, unwrap
from card.errors import (
    ClaNotSupported,
    FileNotFound,
    InsNotSupported,
    InvalidRequest,
    ProtocolError,
    UnsupportedCard,
    WrongParameters,
    error_for_sw,
)
from card.exchange import ApduExchange, ExchangeConfig
from card.sw import StatusWord, tries_left
from card.transport import Transport

_CERT_FID = {CertSlot.SIGN: p.FID_SIGN_CERT, CertSlot.ENCRYPT: p.FID_ENC_CERT}
MAX_FILE_SIZE = 16 * 1024  # certificates are ~1 KiB; anything huge is a broken card


@dataclass(frozen=True)
class CardCapabilities:
    """What the card announced in its FCI."""

    profile_version: int
    algorithm: p.AlgorithmRef
    max_command_data: int
    max_response_data: int
    extended_length: bool
    chaining: bool


def pin_block(pin: str) -> bytes:
    """The profile's PIN block; refuses what no card would accept, before any APDU."""
    raw = check_pin_format(pin)
    return raw + b"\xff" * (p.PIN_BLOCK_LEN - len(raw))


def parse_fci(fci: bytes) -> CardCapabilities:
    outer = tlv_dict(unwrap(fci, p.TAG_FCI))
    if outer.get(p.TAG_DF_NAME) != p.EPORT_AID:
        raise ProtocolError("FCI does not name the E-Port application")
    prop = outer.get(p.TAG_PROPRIETARY)
    if prop is None:
        raise ProtocolError("FCI lacks the proprietary template")
    fields = tlv_dict(prop)
    try:
        version = fields[p.TAG_PROFILE_VERSION][0]
        algorithm = p.AlgorithmRef(fields[p.TAG_ALGORITHM][0])
        max_cmd = int.from_bytes(fields[p.TAG_MAX_COMMAND_DATA], "big")
        max_rsp = int.from_bytes(fields[p.TAG_MAX_RESPONSE_DATA], "big")
        flags = fields[p.TAG_FLAGS][0]
    except (KeyError, IndexError, ValueError) as exc:
        raise ProtocolError(f"FCI field missing or invalid: {exc}") from None
    if version != p.PROFILE_VERSION:
        raise UnsupportedCard(f"card speaks profile version {version}, not {p.PROFILE_VERSION}")
    if max_cmd < 16 or max_rsp < 16:
        raise ProtocolError(f"card announces unusable APDU sizes {max_cmd}/{max_rsp}")
    return CardCapabilities(
        version,
        algorithm,
        max_cmd,
        max_rsp,
        bool(flags & p.FLAG_EXTENDED_LENGTH),
        bool(flags & p.FLAG_CHAINING),
    )


def parse_card_info(data: bytes) -> CardInfo:
    fields = tlv_dict(unwrap(data, p.TAG_CARD_INFO))
    try:
        number = fields[p.TAG_CARD_NUMBER].decode("ascii")
        holder = fields[p.TAG_HOLDER_NAME].decode("utf-8")
        company = fields[p.TAG_COMPANY_NAME].decode("utf-8")
        uscc = fields[p.TAG_USCC].decode("ascii")
        card_type = p.CARD_TYPE_BY_CODE[fields[p.TAG_CARD_TYPE][0]]
        code = fields.get(p.TAG_ENTERPRISE_CODE)
        enterprise = code.decode("ascii") if code is not None else None
    except (KeyError, IndexError, ValueError) as exc:
        raise ProtocolError(f"EF.CARDINFO field missing or invalid: {exc}") from None
    return CardInfo(number, holder, company, uscc, card_type, enterprise)


class EPortSession:
    """Drives one E-Port card. Owned by one thread, like its transport."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.exchange = ApduExchange(transport, ExchangeConfig())
        self._generation: int | None = None
        self._caps: CardCapabilities | None = None
        self._info: CardInfo | None = None
        self._certs: dict[CertSlot, bytes] = {}
        self._sign_cert: CertificateInfo | None = None

    @classmethod
    def open(cls, transport: Transport) -> EPortSession:
        session = cls(transport)
        session.select()
        return session

    # --- application -------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self.transport.atr

    def select(self) -> CardCapabilities:
        """Select the application and adopt the sizes the card announces."""
        self.exchange.config = ExchangeConfig()  # conservative until the card says more
        command = CommandApdu(
            0x00, p.INS_SELECT, p.SELECT_BY_AID, p.SELECT_RETURN_FCI, p.EPORT_AID, 256
        )
        try:
            fci = self.exchange.send(command)
        except (FileNotFound, InsNotSupported, ClaNotSupported, WrongParameters) as exc:
            raise UnsupportedCard(f"no E-Port application on this card (SW {exc.sw:04X})") from None
        try:
            caps = parse_fci(fci)
        except ProtocolError as exc:
            raise UnsupportedCard(f"card answered the E-Port select oddly: {exc}") from None
        self.exchange.config = ExchangeConfig(
            extended_length=caps.extended_length,
            chaining=caps.chaining,
            max_command_data=caps.max_command_data,
        )
        self._caps = caps
        self._generation = self.transport.generation
        self._info = None
        self._certs.clear()
        self._sign_cert = None
        return caps

    def _ensure_selected(self) -> CardCapabilities:
        if self._caps is None or self._generation != self.transport.generation:
            return self.select()
        return self._caps

    @property
    def capabilities(self) -> CardCapabilities:
        return self._ensure_selected()

    @property
    def algorithm(self) -> SignAlgorithm:
        caps = self._ensure_selected()
        if caps.algorithm is p.AlgorithmRef.SM2_SM3:
            return SignAlgorithm.SM2_SM3
        info = self.signing_certificate()
        return default_algorithm("RSA", info.key_bits)  # the FCI said: not SM2

    # --- files ---------------------------------------------------------------------

    def read_file(self, fid: int) -> bytes:
        caps = self._ensure_selected()
        fcp = self.exchange.send(
            CommandApdu(
                0x00,
                p.INS_SELECT,
                p.SELECT_BY_FID,
                p.SELECT_RETURN_FCI,
                fid.to_bytes(2, "big"),
                256,
            )
        )
        try:
            size = int.from_bytes(tlv_dict(unwrap(fcp, 0x62))[0x80], "big")
        except KeyError:
            raise ProtocolError(f"FCP of file {fid:04X} has no size") from None
        if size > MAX_FILE_SIZE:
            raise ProtocolError(f"file {fid:04X} claims {size} bytes")
        chunk_max = (
            caps.max_response_data if caps.extended_length else min(caps.max_response_data, 256)
        )
        parts: list[bytes] = []
        offset = 0
        while offset < size:
            want = min(chunk_max, size - offset)
            response = self.exchange.transmit(
                CommandApdu(0x00, p.INS_READ_BINARY, offset >> 8, offset & 0xFF, b"", want)
            )
            if response.sw not in (StatusWord.OK, StatusWord.END_OF_FILE):
                raise error_for_sw(response.sw)
            if not response.data:
                raise ProtocolError(f"file {fid:04X} ended at {offset} of {size} bytes")
            parts.append(response.data)
            offset += len(response.data)
        data = b"".join(parts)
        if len(data) != size:
            raise ProtocolError(f"file {fid:04X}: read {len(data)} of {size} bytes")
        return data

    def card_info(self) -> CardInfo:
        self._ensure_selected()
        if self._info is None:
            self._info = parse_card_info(self.read_file(p.FID_CARD_INFO))
        return self._info

    def certificate(self, slot: CertSlot = CertSlot.SIGN) -> bytes:
        self._ensure_selected()
        cert = self._certs.get(slot)
        if cert is None:
            cert = self.read_file(_CERT_FID[slot])
            self._certs[slot] = cert
        return cert

    def signing_certificate(self) -> CertificateInfo:
        der = self.certificate(CertSlot.SIGN)
        if self._sign_cert is None or self._sign_cert.der != der:
            self._sign_cert = parse_certificate(der)
        return self._sign_cert

    # --- PIN -----------------------------------------------------------------------

    def pin_status(self) -> PinStatus:
        self._ensure_selected()
        response = self.exchange.transmit(CommandApdu(0x00, p.INS_VERIFY, 0x00, p.PIN_REF))
        if response.sw == StatusWord.OK:
            return PinStatus(None, blocked=False, verified=True)
        if response.sw == StatusWord.AUTH_METHOD_BLOCKED:
            return PinStatus(0, blocked=True, verified=False)
        left = tries_left(response.sw)
        if left is not None:
            return PinStatus(left, blocked=left == 0, verified=False)
        raise error_for_sw(response.sw)

    def verify_pin(self, pin: str) -> None:
        block = pin_block(pin)
        self._ensure_selected()
        self.exchange.send(CommandApdu(0x00, p.INS_VERIFY, 0x00, p.PIN_REF, block))

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        data = pin_block(old_pin) + pin_block(new_pin)
        self._ensure_selected()
        self.exchange.send(CommandApdu(0x00, p.INS_CHANGE_REFERENCE_DATA, 0x00, p.PIN_REF, data))

    def unblock_pin(self, unblock_code: str, new_pin: str) -> None:
        data = pin_block(unblock_code) + pin_block(new_pin)
        self._ensure_selected()
        self.exchange.send(CommandApdu(0x00, p.INS_RESET_RETRY_COUNTER, 0x00, p.PIN_REF, data))

    def logout(self) -> None:
        self._ensure_selected()
        self.exchange.send(CommandApdu(0x00, p.INS_VERIFY, p.VERIFY_RESET_P1, p.PIN_REF))

    # --- signatures ----------------------------------------------------------------

    def _choose(self, requested: SignAlgorithm | None) -> SignAlgorithm:
        return choose_algorithm(self.algorithm, requested)

    def sign(self, message: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        algorithm = self._choose(algorithm)
        if algorithm is SignAlgorithm.SM2_SM3:
            point = self.signing_certificate().sm2_point
            if point is None:
                raise ProtocolError("SM2 card whose signing certificate holds no SM2 key")
            return self._sign(algorithm, sm2_e(point, message))
        name = "sha1" if algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
        return self._sign(algorithm, hashlib.new(name, message).digest())

    def sign_digest(self, digest: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        algorithm = self._choose(algorithm)
        if len(digest) != algorithm.digest_size:
            raise InvalidRequest(
                f"{algorithm.value} needs a {algorithm.digest_size}-byte digest, got {len(digest)}"
            )
        return self._sign(algorithm, digest)

    def _sign(self, algorithm: SignAlgorithm, digest: bytes) -> Signature:
        if algorithm is SignAlgorithm.SM2_SM3:
            alg_ref, card_input = p.AlgorithmRef.SM2_SM3, digest
        else:
            name = "sha1" if algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
            alg_ref, card_input = p.AlgorithmRef.RSA_PKCS1, digest_info(name, digest)
        mse = bytes((0x84, 0x01, p.KEY_REF_SIGN, 0x80, 0x01, alg_ref))
        self.exchange.send(CommandApdu(0x00, p.INS_MSE, p.MSE_SET_DST_P1, p.MSE_SET_DST_P2, mse))
        value = self.exchange.send(
            CommandApdu(0x00, p.INS_PSO, p.PSO_CDS_P1, p.PSO_CDS_P2, card_input, 256)
        )
        if algorithm is SignAlgorithm.SM2_SM3 and len(value) != 64:
            raise ProtocolError(f"SM2 signature of {len(value)} bytes, expected 64")
        return Signature(algorithm, value, digest)

    def get_challenge(self, length: int = 8) -> bytes:
        self._ensure_selected()
        return self.exchange.send(CommandApdu(0x00, p.INS_GET_CHALLENGE, 0, 0, b"", length))

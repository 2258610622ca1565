"""`SkfDriver`: the `CardDriver` protocol over a vendor SKF (GM/T 0016) library.

Opening a driver connects to one device, finds the application and container holding
the signing key (`card.skf.discovery`: configured names must exist, missing ones are
discovered), checks that the container's public key is the one in its signing
certificate, and clears the security state, so that every driver starts "not verified"
like the APDU driver does.

What the agent gets, and where it comes from:

* certificates: SKF_ExportCertificate (sign / encryption), cached for the driver's life;
* card info: from the signing certificate (holder = subject CN; company = the E-Port
  extension 1.3.6.1.4.1.5315.100.1, else the subject OU; USCC = ...100.2) and the
  device's serial number (DEVINFO) as the card number, else the certificate serial.
  SKF does not say whether a card is a legal-person or an operator card:
  `SkfOptions.card_type` says it (operator unless configured);
* PIN: SKF_GetPINInfo (spends no try), SKF_VerifyPIN / SKF_ChangePIN with the retry
  count the library reports, SKF_ClearSecureState to log out. SKF has no "am I
  verified" query: `PinStatus.verified` is what this driver did (verify, then logout);
  while verified `tries_left` is None, as the `CardDriver` protocol says;
* SM2: e = SM3(Z||M) computed on the host (signer's key from the certificate, default
  ID), exactly as `EPortSession`, then SKF_ECCSignData(e); the ECCSIGNATUREBLOB becomes
  raw r||s. Computing e on the host rather than with SKF_DigestInit keeps one
  implementation of Z for every driver; `library_sm2_e` asks the library for its e, for
  diagnostics (does this library agree with us?);
* RSA: SKF_RSASignData is given the DER DigestInfo of the hash. GM/T 0016 says the
  library signs `pbData` of at most (modulus length - 11) bytes, i.e. it applies
  PKCS#1 v1.5 type-1 padding to the data as given (as vendors' own sample code and
  PKCS#11's CKM_RSA_PKCS do): the DigestInfo is the caller's part.

One thread only (see `card.skf.binding`). `atr` is empty: SKF hides the card's ATR.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from card.crypto.certs import CertificateInfo, parse_certificate
from card.crypto.rsa import digest_info
from card.crypto.sm2 import SM2_DEFAULT_ID, sm2_e
from card.eport.driver import (
    CardDriver,
    CardInfo,
    CardType,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
    check_pin_format,
    choose_algorithm,
    default_algorithm,
)
from card.errors import CardError, InvalidRequest, ProtocolError, UnsupportedCard
from card.registry import SkfLibraryDriver
from card.skf import types as t
from card.skf.binding import Handle, SkfLibrary, SkfName
from card.skf.discovery import Discovery, discover, select_device
from card.skf.sar import SkfNotFound, SkfNotSupported

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkfOptions:
    """How to find the key on a device. Names are compared as text, exactly."""

    device: str | None = None  # None: the only device present (the first of several)
    application: str | None = None  # None: discovered
    container: str | None = None  # None: discovered
    card_type: CardType = CardType.OPERATOR


@dataclass
class _Handles:
    device: Handle
    application: Handle | None = None
    container: Handle | None = None


@dataclass
class _Cache:
    certificates: dict[CertSlot, bytes] = field(default_factory=dict)
    signing: CertificateInfo | None = None
    info: CardInfo | None = None


class SkfDriver:
    """One device's signing key through an SKF library. Owned by one thread."""

    def __init__(
        self,
        library: SkfLibrary,
        device_name: SkfName,
        handles: _Handles,
        discovery: Discovery,
        device_info: t.DeviceInfo,
        options: SkfOptions,
    ) -> None:
        self.library = library
        self.device_name = device_name
        self._handles = handles
        self.discovery = discovery
        self.device_info = device_info
        self.options = options
        self._cache = _Cache()
        self._verified = False
        self._closed = False

    @classmethod
    def open(cls, library: SkfLibrary, options: SkfOptions | None = None) -> SkfDriver:
        """Connect, find the key, check it against its certificate, log out.

        Raises CardMissing when no device is present, UnsupportedCard when the device
        holds no usable key (the message lists what was found), and the mapped SKF
        errors of the calls.
        """
        options = options or SkfOptions()
        name = select_device(library, options.device)
        handles = _Handles(library.connect_dev(name))
        try:
            device_info = library.get_dev_info(handles.device)
            found = discover(library, handles.device, options.application, options.container)
            handles.application, handles.container = found.application, found.container
            driver = cls(library, name, handles, found.report, device_info, options)
            driver._check_key_matches_certificate()
            library.clear_secure_state(found.application)
        except BaseException:
            _release(library, handles)
            raise
        return driver

    def close(self) -> None:
        """Release the handles (errors ignored: the device may be gone). Idempotent."""
        if not self._closed:
            self._closed = True
            _release(self.library, self._handles)

    def __enter__(self) -> SkfDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- handles ---------------------------------------------------------------------------

    def _application(self) -> Handle:
        if self._closed or self._handles.application is None:
            raise CardError("SKF driver is closed")
        return self._handles.application

    def _container(self) -> Handle:
        if self._closed or self._handles.container is None:
            raise CardError("SKF driver is closed")
        return self._handles.container

    # --- identity --------------------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return b""

    @property
    def algorithm(self) -> SignAlgorithm:
        info = self.signing_certificate()
        return default_algorithm(info.key_algorithm, info.key_bits)

    def certificate(self, slot: CertSlot = CertSlot.SIGN) -> bytes:
        cert = self._cache.certificates.get(slot)
        if cert is None:
            cert = self.library.export_certificate(self._container(), slot is CertSlot.SIGN)
            if not cert:
                raise SkfNotFound(
                    f"no {slot.value} certificate in container {self.discovery.container}"
                )
            self._cache.certificates[slot] = cert
        return cert

    def signing_certificate(self) -> CertificateInfo:
        if self._cache.signing is None:
            self._cache.signing = parse_certificate(self.certificate(CertSlot.SIGN))
        return self._cache.signing

    def card_info(self) -> CardInfo:
        if self._cache.info is None:
            cert = self.signing_certificate()
            number = _card_number(self.device_info.serial_number) or cert.serial_hex
            company = cert.company_name or cert.subject_ou or cert.subject_o or ""
            self._cache.info = CardInfo(
                card_number=number,
                holder_name=cert.subject_cn or "",
                company_name=company,
                uscc=cert.org_code or "",
                card_type=self.options.card_type,
                enterprise_code=None,
            )
        return self._cache.info

    def _check_key_matches_certificate(self) -> None:
        cert = self.signing_certificate()
        expected = {
            t.CONTAINER_ECC: "SM2",
            t.CONTAINER_RSA: "RSA",
        }.get(self.discovery.container_type)
        if cert.key_algorithm != expected:
            raise UnsupportedCard(
                f"container {self.discovery.container} holds a {expected} key but its "
                f"signing certificate has a {cert.key_algorithm} key"
            )
        try:
            blob = self.library.export_public_key(self._container(), True)
        except SkfNotSupported:
            log.info("SKF library cannot export public keys; key/certificate match unchecked")
            return
        if cert.sm2_point is not None:
            matches = t.ecc_blob_to_point(blob) == cert.sm2_point
        else:
            key = t.rsa_blob_to_key(blob)
            numbers = cert.rsa_public_key.public_numbers() if cert.rsa_public_key else None
            matches = numbers is not None and (key.modulus, key.exponent) == (numbers.n, numbers.e)
        if not matches:
            raise UnsupportedCard(
                f"the signing key in container {self.discovery.container} is not the key of "
                "its signing certificate"
            )

    # --- PIN -------------------------------------------------------------------------------

    def pin_status(self) -> PinStatus:
        info = self.library.get_pin_info(self._application(), t.USER_TYPE)
        blocked = info.remaining == 0
        verified = self._verified and not blocked
        # As the CardDriver protocol (and the API) say: no count while verified, as an
        # APDU card's status query reports none; the library's is the max again anyway.
        return PinStatus(None if verified else info.remaining, blocked, verified)

    def verify_pin(self, pin: str) -> None:
        value = check_pin_format(pin)
        self._verified = False
        self.library.verify_pin(self._application(), value, t.USER_TYPE)
        self._verified = True

    def change_pin(self, old_pin: str, new_pin: str) -> None:
        old, new = check_pin_format(old_pin), check_pin_format(new_pin)
        self.library.change_pin(self._application(), old, new, t.USER_TYPE)

    def logout(self) -> None:
        self._verified = False
        self.library.clear_secure_state(self._application())

    # --- signatures ------------------------------------------------------------------------

    def sign(self, message: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        chosen = choose_algorithm(self.algorithm, algorithm)
        if chosen is SignAlgorithm.SM2_SM3:
            return self._sign(chosen, sm2_e(self._sm2_point(), message))
        name = "sha1" if chosen is SignAlgorithm.RSA_SHA1 else "sha256"
        return self._sign(chosen, hashlib.new(name, message).digest())

    def sign_digest(self, digest: bytes, *, algorithm: SignAlgorithm | None = None) -> Signature:
        chosen = choose_algorithm(self.algorithm, algorithm)
        if len(digest) != chosen.digest_size:
            raise InvalidRequest(
                f"{chosen.value} needs a {chosen.digest_size}-byte digest, got {len(digest)}"
            )
        return self._sign(chosen, digest)

    def _sign(self, algorithm: SignAlgorithm, digest: bytes) -> Signature:
        if algorithm is SignAlgorithm.SM2_SM3:
            value = self.library.ecc_sign_data(self._container(), digest)
        else:
            name = "sha1" if algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
            value = self.library.rsa_sign_data(
                self._container(),
                digest_info(name, digest),
                self.signing_certificate().key_bits // 8,
            )
        return Signature(algorithm, value, digest)

    def _sm2_point(self) -> bytes:
        point = self.signing_certificate().sm2_point
        if point is None:
            raise ProtocolError("SM2 container whose signing certificate holds no SM2 key")
        return point

    def library_sm2_e(self, message: bytes, uid: bytes = SM2_DEFAULT_ID) -> bytes | None:
        """e = SM3(Z||M) as the library computes it (SKF_DigestInit with the signer's
        key), or None when the library cannot. For diagnostics: the driver signs the e
        it computes itself."""
        try:
            return self.library.digest_sm2_e(self._handles.device, self._sm2_point(), uid, message)
        except SkfNotSupported:
            return None


def options_for(spec: SkfLibraryDriver, device: str | None = None) -> SkfOptions:
    """The driver options a registry entry's SKF spec asks for, on `device` (None: the
    first present)."""
    return SkfOptions(
        device=device,
        application=spec.application,
        container=spec.container,
        card_type=spec.card_type or CardType.OPERATOR,
    )


def open_skf_driver(
    spec: SkfLibraryDriver, device: str | None = None, *, library: SkfLibrary | None = None
) -> SkfDriver:
    """A driver for a registry entry (`card.registry`): load the entry's library (unless
    given one already loaded) and open the key on `device`."""
    return SkfDriver.open(library or SkfLibrary(spec.library), options_for(spec, device))


if TYPE_CHECKING:  # SkfDriver is a CardDriver (checked by mypy, nothing at run time)

    def _is_a_card_driver(driver: SkfDriver) -> CardDriver:
        return driver


def _card_number(serial: str) -> str:
    """A DEVINFO serial number usable as a card number: printable, no padding."""
    cleaned = serial.strip().strip("\0")
    return cleaned if cleaned.isprintable() else ""


def _release(library: SkfLibrary, handles: _Handles) -> None:
    steps = (
        ("container", handles.container, library.close_container),
        ("application", handles.application, library.close_application),
        ("device", handles.device, library.disconnect_dev),
    )
    for what, handle, close in steps:
        if handle is None:
            continue
        try:
            close(handle)
        except CardError as exc:
            log.debug("closing the SKF %s: %s", what, exc)
    handles.container = handles.application = None

"""Which card is this? A report for a support request, found without changing the card.

`card-agent card identify` gathers it (through the agent's card owner thread): the ATR
parsed, the driver registry entry it matches or why none does, which well-known
applications answer SELECT, and, for an SKF library, what the library enumerates. It
also says which driver is in use (`DriverInfo`), which the selftest names.

Safe by construction: no PIN is asked for or sent, no file is read and nothing is
written. Over APDUs the only command is SELECT by AID (which changes nothing but the
card's current selection: the agent re-opens its driver afterwards); over SKF only the
enumeration and information calls (EnumDev, GetDevInfo, EnumApplication,
EnumContainer, GetContainerType; opening and closing the handles they need). Nothing
personal is reported: the device serial number is masked like a card number;
certificates (which name the holder) are not read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from card.apdu import CommandApdu
from card.atr import AtrError, parse_atr
from card.eport.atr import describe_atr
from card.eport.driver import mask_card_number
from card.eport.profile import EPORT_AID
from card.errors import CardError, ProtocolError, TransportError
from card.exchange import ApduExchange
from card.registry import Match, Observation, Registry

if TYPE_CHECKING:
    from card.skf.binding import Handle, SkfLibrary, SkfName
    from card.transport import Transport

log = logging.getLogger(__name__)

DriverKind = Literal["eport-apdu", "skf"]

FCI_SHOWN_BYTES = 64  # enough to recognise an application; an FCI is rarely longer
_SW_OK = 0x9000


# --- the driver in use --------------------------------------------------------------------


@dataclass(frozen=True)
class DriverInfo:
    """The driver the agent opened for the card in the reader, and why that one."""

    driver: DriverKind
    why: str  # one line: the registry entry, the built-in fallback, the simulated card
    entry: str | None = None  # the registry entry's name, when one chose the driver
    source: str | None = None  # the registry file that entry came from
    library: str | None = None  # skf: the vendor library
    device: str | None = None  # skf: the device name
    application: str | None = None  # skf: where the key was found
    container: str | None = None

    def describe(self) -> str:
        where = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("device", self.device),
                ("application", self.application),
                ("container", self.container),
            )
            if value
        )
        return f"{self.driver}: {self.why}" + (f" ({where})" if where else "")


# --- the report ------------------------------------------------------------------------


@dataclass(frozen=True)
class AtrReport:
    hex: str
    convention: str | None = None
    protocols: tuple[int, ...] = ()
    historical_bytes: str = ""  # hex
    historical_text: str = ""  # printable ASCII, '.' for the rest
    tck: Literal["ok", "wrong", "absent", "unknown"] = "unknown"
    known_as: str | None = None  # card.eport.atr's table of known ATRs
    error: str | None = None  # the ATR is malformed: why


@dataclass(frozen=True)
class RegistryReport:
    """The registry's answer for what was observed: the entry that matches (first wins)
    and why each entry before it, or every entry, does not."""

    entry: str | None
    driver: DriverKind | None
    source: str | None
    description: str
    reasons: tuple[str, ...]

    @classmethod
    def from_match(cls, match: Match) -> RegistryReport:
        entry = match.entry
        if entry is None:
            return cls(None, None, None, "", match.reasons)
        return cls(entry.name, entry.driver.kind, entry.source, entry.description, match.reasons)


@dataclass(frozen=True)
class AidReport:
    """One SELECT by AID: the status word, and the start of the FCI when it answered."""

    name: str
    aid: str
    sw: str
    selected: bool
    fci: str | None = None


@dataclass(frozen=True)
class SkfContainerReport:
    name: str
    type: str  # "RSA", "ECC", "empty", or "unknown (n)"


@dataclass(frozen=True)
class SkfApplicationReport:
    name: str
    containers: tuple[SkfContainerReport, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class SkfDeviceReport:
    name: str
    registry: RegistryReport
    manufacturer: str | None = None
    issuer: str | None = None
    label: str | None = None
    serial_number: str | None = None  # masked: the last four characters
    version: str | None = None
    hardware_version: str | None = None
    firmware_version: str | None = None
    applications: tuple[SkfApplicationReport, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class SkfReport:
    library: str
    device_events: bool  # exports SKF_WaitForDevEvent (else the agent polls SKF_EnumDev)
    devices: tuple[SkfDeviceReport, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class IdentifyReport:
    backend: str
    reader: str | None
    atr: AtrReport | None = None  # None: the backend cannot see one (SKF)
    registry: RegistryReport | None = None  # for the ATR and reader (SKF: per device)
    applications: tuple[AidReport, ...] = ()
    skf: SkfReport | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (tuples become lists): the shape of `GET /v1/card/identify`."""
        document: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        return document


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


# --- ATR -----------------------------------------------------------------------------


def atr_report(atr: bytes) -> AtrReport:
    raw = atr.hex(" ").upper()
    known = describe_atr(atr)
    try:
        parsed = parse_atr(atr)
    except AtrError as exc:
        return AtrReport(raw, known_as=known, error=str(exc))
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in parsed.historical)
    valid = parsed.tck_valid
    tck: Literal["ok", "wrong", "absent"] = (
        "absent" if valid is None else "ok" if valid else "wrong"
    )
    return AtrReport(
        raw,
        convention=parsed.convention,
        protocols=parsed.protocols,
        historical_bytes=parsed.historical.hex(" ").upper(),
        historical_text=text,
        tck=tck,
        known_as=known,
    )


def registry_report(registry: Registry, seen: Observation) -> RegistryReport:
    return RegistryReport.from_match(registry.match(seen))


# --- SELECT of well-known applications ---------------------------------------------------


@dataclass(frozen=True)
class KnownAid:
    name: str
    aid: bytes


# Applications a kiosk may meet on a Chinese crypto card or token, and the usual
# multi-application ones, so a report says what a card is when it is not ours.
WELL_KNOWN_AIDS: tuple[KnownAid, ...] = (
    KnownAid("card-agent E-Port profile", EPORT_AID),
    KnownAid("PIV (NIST SP 800-73)", bytes.fromhex("A000000308000010000100")),
    KnownAid("GlobalPlatform issuer security domain", bytes.fromhex("A000000151000000")),
    KnownAid("Open Platform card manager (Visa)", bytes.fromhex("A000000003000000")),
    KnownAid("PKCS#15", bytes.fromhex("A000000063504B43532D3135")),
    KnownAid("OpenPGP card", bytes.fromhex("D27600012401")),
    KnownAid("ICAO eMRTD (LDS)", bytes.fromhex("A0000002471001")),
    KnownAid("EMV payment directory (1PAY.SYS.DDF01)", b"1PAY.SYS.DDF01"),
    KnownAid("EMV proximity directory (2PAY.SYS.DDF01)", b"2PAY.SYS.DDF01"),
)


def select_report(
    transport: Transport, aids: tuple[KnownAid, ...] = WELL_KNOWN_AIDS
) -> tuple[AidReport, ...]:
    """SELECT each AID (P2 = 00: return the FCI) and record the answer. Link failures
    (the card pulled) propagate; a malformed answer is recorded and the next AID tried."""
    exchange = ApduExchange(transport)
    answers = []
    for known in aids:
        command = CommandApdu(0x00, 0xA4, 0x04, 0x00, known.aid, 256)
        try:
            response = exchange.transmit(command)
        except TransportError:
            raise
        except (ProtocolError, CardError) as exc:
            answers.append(AidReport(known.name, known.aid.hex().upper(), "", False, str(exc)))
            continue
        selected = response.sw == _SW_OK
        fci = response.data[:FCI_SHOWN_BYTES].hex().upper() if response.data else None
        answers.append(
            AidReport(known.name, known.aid.hex().upper(), f"{response.sw:04X}", selected, fci)
        )
    return tuple(answers)


# --- what an SKF library enumerates ---------------------------------------------------------

_CONTAINER_TYPE_NAMES = {0: "empty", 1: "RSA", 2: "ECC"}


def skf_report(library: SkfLibrary, registry: Registry) -> SkfReport:
    """EnumDev (present devices), and for each: GetDevInfo, its applications and their
    containers with the key type. An error on one device or application is recorded
    and the rest still reported."""
    try:
        names = library.enum_dev(True)
    except CardError as exc:
        return SkfReport(str(library.path), library.has_dev_events, error=str(exc))
    devices = []
    for name in names:
        seen = registry_report(registry, Observation(skf_device=name.text))
        devices.append(_device_report(library, name, seen))
    return SkfReport(str(library.path), library.has_dev_events, tuple(devices))


def _version(pair: tuple[int, int]) -> str:
    return f"{pair[0]}.{pair[1]}"


def _device_report(library: SkfLibrary, name: SkfName, seen: RegistryReport) -> SkfDeviceReport:
    text = name.text
    try:
        with _opened(library.connect_dev(name), library.disconnect_dev) as device:
            info = library.get_dev_info(device)
            applications = tuple(
                _application_report(library, device, app)
                for app in library.enum_application(device)
            )
    except CardError as exc:
        return SkfDeviceReport(text, seen, error=str(exc))
    serial = info.serial_number
    return SkfDeviceReport(
        text,
        seen,
        manufacturer=info.manufacturer,
        issuer=info.issuer,
        label=info.label,
        serial_number=mask_card_number(serial) if serial else None,
        version=_version(info.version),
        hardware_version=_version(info.hardware_version),
        firmware_version=_version(info.firmware_version),
        applications=applications,
    )


def _application_report(library: SkfLibrary, device: Handle, app: SkfName) -> SkfApplicationReport:
    try:
        with _opened(library.open_application(device, app), library.close_application) as handle:
            containers = []
            for container in library.enum_container(handle):
                with _opened(
                    library.open_container(handle, container), library.close_container
                ) as opened:
                    kind = library.get_container_type(opened)
                containers.append(
                    SkfContainerReport(
                        container.text, _CONTAINER_TYPE_NAMES.get(kind, f"unknown ({kind})")
                    )
                )
    except CardError as exc:
        return SkfApplicationReport(app.text, error=str(exc))
    return SkfApplicationReport(app.text, tuple(containers))


@contextlib.contextmanager
def _opened(handle: Handle, close: Callable[[Handle], None]) -> Iterator[Handle]:
    try:
        yield handle
    finally:
        try:
            close(handle)
        except CardError as exc:  # the first error is the one to report
            log.debug("closing an SKF handle: %s", exc)

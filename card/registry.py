"""Which driver serves the card a kiosk sees: a data file, not code.

A registry maps what the kiosk observes — the card's ATR (hex patterns with wildcards or
masks, as pcsc-tools' smartcard_list.txt and Fortify's card.json write them), the PC/SC
reader's name, an SKF library's device names — to a driver: the built-in APDU profile
(`eport-apdu`) or a vendor SKF library (its path, optionally the application and
container to use).

The format (TOML; `card/data/drivers.toml` is the shipped file):

    version = 1

    [[driver]]
    name = "card-agent-simulator"        # unique; an override file's entry of the same
                                         # name replaces the shipped one
    description = "..."                  # optional
    driver = "eport-apdu"                # or "skf"
    atr = ["3B 8C 80 01 45 .. ..",       # '.' is any hex digit; spaces/colons ignored
           "3B8C8001/FFFFFFFF"]          # or value/mask, bit by bit
    readers = ["Virtual PCD *"]          # shell-style patterns, case-insensitive
    devices = ["ePass3000GM*"]           # SKF device names (skf only)
    library = "/opt/vendor/libskf.so"    # skf only: absolute path
    application = "..."                  # skf only, optional (else discovered)
    container = "..."                    # skf only, optional (else discovered)
    card_type = "legal_person"           # skf only, optional: SKF cannot tell
    enabled = false                      # optional: switch a (shipped) entry off

An entry matches an observation when every criterion it names matches (any of its
patterns); it must name at least one. Entries are tried in order — override files
first, then the shipped file — and the first match wins; when none matches, the reasons
are returned for a support report. Loading is strict: an unknown key, a wrong type, a
malformed pattern or a duplicate name is an error naming the file and the entry.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from card.atr import MAX_ATR_LEN
from card.eport.driver import CardType

FORMAT_VERSION = 1
SHIPPED = "drivers.toml"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COMMON_KEYS = {"name", "description", "driver", "atr", "readers", "devices", "enabled"}
_SKF_KEYS = {"library", "application", "container", "card_type"}
_SEPARATORS = re.compile(r"[\s:]+")


class RegistryError(ValueError):
    """A registry file that cannot be used; the message names the file and entry."""


# --- patterns ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AtrPattern:
    """An ATR pattern: bytes that must equal `value` wherever `mask` has a 1 bit."""

    text: str
    value: bytes
    mask: bytes

    def matches(self, atr: bytes) -> bool:
        if len(atr) != len(self.value):
            return False
        return all((a & m) == (v & m) for a, v, m in zip(atr, self.value, self.mask, strict=True))


def _hex_digits(text: str) -> str:
    return _SEPARATORS.sub("", text)


def parse_atr_pattern(text: str) -> AtrPattern:
    """`"3B 8C 80 01 .. 4?"` (wildcard nibbles '.' or '?') or `"3B8C8001/FFFFFF00"`."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an ATR pattern is a non-empty string")
    if "/" in text:
        value_text, _, mask_text = text.partition("/")
        value_hex, mask_hex = _hex_digits(value_text), _hex_digits(mask_text)
        try:
            value, mask = bytes.fromhex(value_hex), bytes.fromhex(mask_hex)
        except ValueError:
            raise ValueError(f"ATR pattern {text!r}: value and mask must be hex") from None
        if len(value) != len(mask):
            raise ValueError(
                f"ATR pattern {text!r}: value has {len(value)} bytes, mask {len(mask)}"
            )
    else:
        digits = _hex_digits(text)
        if len(digits) % 2:
            raise ValueError(f"ATR pattern {text!r}: an odd number of hex digits")
        if not re.fullmatch(r"[0-9A-Fa-f.?]*", digits):
            raise ValueError(f"ATR pattern {text!r}: only hex digits and '.'/'?' wildcards")
        value = bytes.fromhex("".join("0" if c in ".?" else c for c in digits))
        mask = bytes.fromhex("".join("0" if c in ".?" else "F" for c in digits))
    if not 2 <= len(value) <= MAX_ATR_LEN:
        raise ValueError(f"ATR pattern {text!r}: {len(value)} bytes (an ATR has 2 to 33)")
    return AtrPattern(text, value, mask)


def _glob(pattern: str, name: str) -> bool:
    return fnmatch.fnmatchcase(name.casefold(), pattern.casefold())


# --- entries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EportApduDriver:
    """The built-in driver for the project's APDU profile (card.eport.session)."""

    kind: Literal["eport-apdu"] = "eport-apdu"


@dataclass(frozen=True)
class SkfLibraryDriver:
    """A vendor SKF library (card.skf)."""

    library: Path
    application: str | None = None
    container: str | None = None
    card_type: CardType | None = None
    kind: Literal["skf"] = "skf"


DriverSpec = EportApduDriver | SkfLibraryDriver


@dataclass(frozen=True)
class Observation:
    """What the kiosk sees; None for what it did not look at."""

    atr: bytes | None = None
    reader: str | None = None
    skf_device: str | None = None


@dataclass(frozen=True)
class DriverEntry:
    name: str
    driver: DriverSpec
    source: str  # the file it came from
    description: str = ""
    atrs: tuple[AtrPattern, ...] = ()
    readers: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()
    enabled: bool = True

    def mismatch(self, seen: Observation) -> str | None:
        """None if the entry matches `seen`, else why not."""
        if not self.enabled:
            return "disabled"
        if self.atrs:
            if seen.atr is None:
                return "no ATR was seen"
            if not any(p.matches(seen.atr) for p in self.atrs):
                return f"ATR {seen.atr.hex(' ').upper()} matches none of its ATR patterns"
        if self.readers:
            if seen.reader is None:
                return "no reader name was seen"
            if not any(_glob(p, seen.reader) for p in self.readers):
                return f"reader {seen.reader!r} matches none of {list(self.readers)}"
        if self.devices:
            if seen.skf_device is None:
                return "no SKF device name was seen"
            if not any(_glob(p, seen.skf_device) for p in self.devices):
                return f"SKF device {seen.skf_device!r} matches none of {list(self.devices)}"
        return None


@dataclass(frozen=True)
class Match:
    """The first matching entry (or None) and why each entry before it did not match."""

    entry: DriverEntry | None
    reasons: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Registry:
    entries: tuple[DriverEntry, ...]

    def match(self, seen: Observation) -> Match:
        reasons: list[str] = []
        for entry in self.entries:
            why = entry.mismatch(seen)
            if why is None:
                return Match(entry, tuple(reasons))
            reasons.append(f"{entry.name} ({entry.source}): {why}")
        if not self.entries:
            reasons.append("the driver registry is empty")
        return Match(None, tuple(reasons))

    def entry(self, name: str) -> DriverEntry:
        for candidate in self.entries:
            if candidate.name == name:
                return candidate
        raise KeyError(f"no driver entry {name!r}")


# --- loading -----------------------------------------------------------------------------


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RegistryError(f"{where}: {key} must be a list of non-empty strings")
    if not value:
        raise RegistryError(f"{where}: {key} is empty (leave it out instead)")
    return tuple(value)


def _optional_text(where: str, table: Mapping[str, Any], key: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{where}: {key} must be a non-empty string")
    return value


def _skf_driver(where: str, table: Mapping[str, Any]) -> SkfLibraryDriver:
    library = table.get("library")
    if not isinstance(library, str) or not library:
        raise RegistryError(f'{where}: an skf driver needs library = "/path/to/libskf.so"')
    path = Path(library)
    if not path.is_absolute():
        raise RegistryError(f"{where}: library must be an absolute path, not {library!r}")
    card_type = _optional_text(where, table, "card_type")
    try:
        kind = CardType(card_type) if card_type is not None else None
    except ValueError:
        allowed = ", ".join(t.value for t in CardType)
        raise RegistryError(f"{where}: card_type {card_type!r} is not one of {allowed}") from None
    return SkfLibraryDriver(
        path,
        application=_optional_text(where, table, "application"),
        container=_optional_text(where, table, "container"),
        card_type=kind,
    )


def _entry(table: Any, index: int, source: str) -> DriverEntry:
    where = f"{source}: driver[{index}]"
    if not isinstance(table, dict):
        raise RegistryError(f"{where}: each [[driver]] must be a table")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"{where}: name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}"
        )
    where = f"{source}: driver {name!r}"
    kind = table.get("driver")
    if kind not in ("eport-apdu", "skf"):
        raise RegistryError(f'{where}: driver must be "eport-apdu" or "skf", got {kind!r}')
    allowed = _COMMON_KEYS | (_SKF_KEYS if kind == "skf" else set())
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RegistryError(
            f"{where}: unknown key(s) {', '.join(unknown)} for a {kind} driver "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    if kind == "eport-apdu" and "devices" in table:
        raise RegistryError(f"{where}: devices (SKF device names) apply to skf drivers only")
    driver: DriverSpec = _skf_driver(where, table) if kind == "skf" else EportApduDriver()
    atrs: tuple[AtrPattern, ...] = ()
    if "atr" in table:
        try:
            atrs = tuple(parse_atr_pattern(p) for p in _strings(where, "atr", table["atr"]))
        except ValueError as exc:
            if isinstance(exc, RegistryError):
                raise
            raise RegistryError(f"{where}: {exc}") from None
    readers = _strings(where, "readers", table["readers"]) if "readers" in table else ()
    devices = _strings(where, "devices", table["devices"]) if "devices" in table else ()
    if not (atrs or readers or devices):
        raise RegistryError(f"{where}: names nothing to match (atr, readers or devices)")
    description = table.get("description", "")
    if not isinstance(description, str):
        raise RegistryError(f"{where}: description must be a string")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise RegistryError(f"{where}: enabled must be true or false")
    return DriverEntry(name, driver, source, description, atrs, readers, devices, enabled)


def parse_registry(text: str, source: str) -> tuple[DriverEntry, ...]:
    """The entries of one registry file's text; `source` names it in errors."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistryError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"version", "driver"})
    if unknown:
        raise RegistryError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    if document.get("version") != FORMAT_VERSION:
        raise RegistryError(
            f"{source}: version = {FORMAT_VERSION} is required, got {document.get('version')!r}"
        )
    tables = document.get("driver", [])
    if not isinstance(tables, list):
        raise RegistryError(f"{source}: driver must be an array of tables ([[driver]])")
    entries = tuple(_entry(table, i, source) for i, table in enumerate(tables))
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise RegistryError(f"{source}: driver {entry.name!r} appears twice")
        seen.add(entry.name)
    return entries


def shipped_registry_text() -> str:
    return resources.files("card").joinpath("data", SHIPPED).read_text(encoding="utf-8")


def load_registry(
    *overrides: str | Path, shipped: bool = True, missing_ok: bool = False
) -> Registry:
    """Override files (first wins) merged over the shipped file.

    An override entry replaces a shipped (or later) entry of the same name. With
    `missing_ok`, an override file that does not exist is skipped (an optional
    /etc/card-agent/drivers.toml).
    """
    layers: list[tuple[DriverEntry, ...]] = []
    for path in map(Path, overrides):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if missing_ok:
                continue
            raise RegistryError(f"{path}: no such driver registry file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path}: cannot read: {exc}") from None
        layers.append(parse_registry(text, str(path)))
    if shipped:
        layers.append(parse_registry(shipped_registry_text(), f"card/data/{SHIPPED}"))
    merged: list[DriverEntry] = []
    names: set[str] = set()
    for layer in layers:
        for entry in layer:
            if entry.name not in names:
                names.add(entry.name)
                merged.append(entry)
    return Registry(tuple(merged))

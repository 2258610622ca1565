"""GM/T 0016 return codes (SAR_*) and the `card.errors` type each one means.

Every error from an SKF call is an `SkfError` (it keeps the code and the function)
combined with the type that says what happened, so the agent's one mapping of card
errors to wire codes covers SKF too. Types that derive from `ApduError` need a status
word: they carry the ISO 7816 status word with the same meaning (63Cx, 6983, 6982, ...),
documented per class; the SKF code itself is `error.sar`.

Codes and names follow GM/T 0016-2012 as published in GmSSL's `skf.h`.
"""

from __future__ import annotations

from typing import ClassVar

from card.errors import (
    ApduError,
    CardError,
    CardRemoved,
    CardReset,
    ConditionsNotSatisfied,
    FileNotFound,
    InvalidPinFormat,
    PinBlockedError,
    ProtocolError,
    SecurityStatusNotSatisfied,
    SkfError,
    Timeout,
    WrongData,
    WrongLength,
    WrongParameters,
    WrongPinError,
)

SAR_OK = 0x00000000
SAR_FAIL = 0x0A000001
SAR_UNKNOWNERR = 0x0A000002
SAR_NOTSUPPORTYETERR = 0x0A000003
SAR_FILEERR = 0x0A000004
SAR_INVALIDHANDLEERR = 0x0A000005
SAR_INVALIDPARAMERR = 0x0A000006
SAR_READFILEERR = 0x0A000007
SAR_WRITEFILEERR = 0x0A000008
SAR_NAMELENERR = 0x0A000009
SAR_KEYUSAGEERR = 0x0A00000A
SAR_MODULUSLENERR = 0x0A00000B
SAR_NOTINITIALIZEERR = 0x0A00000C
SAR_OBJERR = 0x0A00000D
SAR_MEMORYERR = 0x0A00000E
SAR_TIMEOUTERR = 0x0A00000F
SAR_INDATALENERR = 0x0A000010
SAR_INDATAERR = 0x0A000011
SAR_GENRANDERR = 0x0A000012
SAR_HASHOBJERR = 0x0A000013
SAR_HASHERR = 0x0A000014
SAR_GENRSAKEYERR = 0x0A000015
SAR_RSAMODULUSLENERR = 0x0A000016
SAR_CSPIMPRTPUBKEYERR = 0x0A000017
SAR_RSAENCERR = 0x0A000018
SAR_RSADECERR = 0x0A000019
SAR_HASHNOTEQUALERR = 0x0A00001A
SAR_KEYNOTFOUNTERR = 0x0A00001B
SAR_CERTNOTFOUNTERR = 0x0A00001C
SAR_NOTEXPORTERR = 0x0A00001D
SAR_DECRYPTPADERR = 0x0A00001E
SAR_MACLENERR = 0x0A00001F
SAR_BUFFER_TOO_SMALL = 0x0A000020
SAR_KEYINFOTYPEERR = 0x0A000021
SAR_NOT_EVENTERR = 0x0A000022
SAR_DEVICE_REMOVED = 0x0A000023
SAR_PIN_INCORRECT = 0x0A000024
SAR_PIN_LOCKED = 0x0A000025
SAR_PIN_INVALID = 0x0A000026
SAR_PIN_LEN_RANGE = 0x0A000027
SAR_USER_ALREADY_LOGGED_IN = 0x0A000028
SAR_USER_PIN_NOT_INITIALIZED = 0x0A000029
SAR_USER_TYPE_INVALID = 0x0A00002A
SAR_APPLICATION_NAME_INVALID = 0x0A00002B
SAR_APPLICATION_EXISTS = 0x0A00002C
SAR_USER_NOT_LOGGED_IN = 0x0A00002D
SAR_APPLICATION_NOT_EXISTS = 0x0A00002E
SAR_FILE_ALREADY_EXIST = 0x0A00002F
SAR_NO_ROOM = 0x0A000030
SAR_FILE_NOT_EXIST = 0x0A000031
SAR_REACH_MAX_CONTAINER_COUNT = 0x0A000032

SAR_NAMES: dict[int, str] = {
    value: name
    for name, value in sorted(globals().items())
    if name.startswith("SAR_") and isinstance(value, int)
}

_MAX_TRIES_NIBBLE = 0x0F


def sar_name(sar: int) -> str:
    """`SAR_PIN_INCORRECT (0x0A000024)`, or `unknown SKF code 0x...`."""
    name = SAR_NAMES.get(sar)
    return f"{name} (0x{sar:08X})" if name else f"unknown SKF code 0x{sar:08X}"


# --- the combined types --------------------------------------------------------------


class _SkfApduError(SkfError, ApduError):
    """An SKF error whose meaning has an ISO 7816 status word (`equivalent_sw`)."""

    equivalent_sw: ClassVar[int]

    def __init__(self, message: str, sw: int | None = None) -> None:
        ApduError.__init__(self, self.equivalent_sw if sw is None else sw, message)


class SkfWrongPin(SkfError, WrongPinError):
    """SAR_PIN_INCORRECT; `tries_left` is the library's retry count (sw: 63Cx)."""

    def __init__(self, message: str, tries_left: int) -> None:
        left = max(0, tries_left)
        ApduError.__init__(
            self, 0x63C0 | min(left, _MAX_TRIES_NIBBLE), f"{message}: {left} tries left"
        )
        self.tries_left = left


class SkfPinBlocked(_SkfApduError, PinBlockedError):
    """SAR_PIN_LOCKED (sw 6983)."""

    equivalent_sw = 0x6983


class SkfNotLoggedIn(_SkfApduError, SecurityStatusNotSatisfied):
    """SAR_USER_NOT_LOGGED_IN (sw 6982)."""

    equivalent_sw = 0x6982


class SkfConditionsNotSatisfied(_SkfApduError, ConditionsNotSatisfied):
    """Key usage, not initialised, already logged in, ... (sw 6985)."""

    equivalent_sw = 0x6985


class SkfNotFound(_SkfApduError, FileNotFound):
    """Application or file (sw 6A82), key or certificate (sw 6A88) not found."""

    equivalent_sw = 0x6A82


class SkfWrongLength(_SkfApduError, WrongLength):
    """Input data, name or modulus of a length the library refuses (sw 6700)."""

    equivalent_sw = 0x6700


class SkfWrongData(_SkfApduError, WrongData):
    """Input data or a name the library refuses (sw 6A80)."""

    equivalent_sw = 0x6A80


class SkfWrongParameters(_SkfApduError, WrongParameters):
    """An invalid parameter or PIN type (sw 6A86)."""

    equivalent_sw = 0x6A86


class SkfInvalidPinFormat(SkfError, InvalidPinFormat):
    """SAR_PIN_INVALID / SAR_PIN_LEN_RANGE: the library refused the PIN's form."""


class SkfDeviceRemoved(SkfError, CardRemoved):
    """SAR_DEVICE_REMOVED."""


class SkfHandleInvalid(SkfError, CardReset):
    """SAR_INVALIDHANDLEERR: the library no longer knows our handle, typically because
    the device was pulled and re-inserted (or reset) under it. The login is gone with
    it; reopening the driver is the remedy, which is what a CardReset makes the card
    owner do."""


class SkfTimeout(SkfError, Timeout):
    """SAR_TIMEOUTERR."""


class SkfProtocolError(SkfError, ProtocolError):
    """The library broke the calling conventions (e.g. a size it asked for was still
    too small), or answered something malformed."""


class SkfNotSupported(SkfError):
    """SAR_NOTSUPPORTYETERR: the library does not implement the call."""


_NOT_FOUND_KEY_SW = 0x6A88

# code -> (type, status word override)
_TYPES: dict[int, tuple[type[SkfError], int | None]] = {
    SAR_NOTSUPPORTYETERR: (SkfNotSupported, None),
    SAR_INVALIDHANDLEERR: (SkfHandleInvalid, None),
    SAR_INVALIDPARAMERR: (SkfWrongParameters, None),
    SAR_NAMELENERR: (SkfWrongLength, None),
    SAR_KEYUSAGEERR: (SkfConditionsNotSatisfied, None),
    SAR_MODULUSLENERR: (SkfWrongLength, None),
    SAR_NOTINITIALIZEERR: (SkfConditionsNotSatisfied, None),
    SAR_TIMEOUTERR: (SkfTimeout, None),
    SAR_INDATALENERR: (SkfWrongLength, None),
    SAR_INDATAERR: (SkfWrongData, None),
    SAR_RSAMODULUSLENERR: (SkfWrongLength, None),
    SAR_KEYNOTFOUNTERR: (SkfNotFound, _NOT_FOUND_KEY_SW),
    SAR_CERTNOTFOUNTERR: (SkfNotFound, _NOT_FOUND_KEY_SW),
    SAR_NOTEXPORTERR: (SkfConditionsNotSatisfied, None),
    SAR_BUFFER_TOO_SMALL: (SkfProtocolError, None),
    SAR_DEVICE_REMOVED: (SkfDeviceRemoved, None),
    SAR_PIN_INCORRECT: (SkfWrongPin, None),
    SAR_PIN_LOCKED: (SkfPinBlocked, None),
    SAR_PIN_INVALID: (SkfInvalidPinFormat, None),
    SAR_PIN_LEN_RANGE: (SkfInvalidPinFormat, None),
    SAR_USER_ALREADY_LOGGED_IN: (SkfConditionsNotSatisfied, None),
    SAR_USER_PIN_NOT_INITIALIZED: (SkfConditionsNotSatisfied, None),
    SAR_USER_TYPE_INVALID: (SkfWrongParameters, None),
    SAR_APPLICATION_NAME_INVALID: (SkfWrongData, None),
    SAR_APPLICATION_EXISTS: (SkfConditionsNotSatisfied, None),
    SAR_USER_NOT_LOGGED_IN: (SkfNotLoggedIn, None),
    SAR_APPLICATION_NOT_EXISTS: (SkfNotFound, None),
    SAR_FILE_NOT_EXIST: (SkfNotFound, None),
    # The rest (SAR_FAIL, SAR_UNKNOWNERR, file/memory/crypto failures, ...) mean "the
    # library failed" with nothing more specific to act on: plain SkfError.
}


# The transport-level ones are built with TransportError's constructor (message, code).
_TRANSPORT_TYPES: dict[int, type[SkfDeviceRemoved] | type[SkfHandleInvalid] | type[SkfTimeout]] = {
    SAR_DEVICE_REMOVED: SkfDeviceRemoved,
    SAR_INVALIDHANDLEERR: SkfHandleInvalid,
    SAR_TIMEOUTERR: SkfTimeout,
}


def error_type_for_sar(sar: int) -> type[CardError]:
    """The type `error_for_sar` raises for `sar` (for tests and documentation)."""
    return _TYPES.get(sar, (SkfError, None))[0]


def error_for_sar(sar: int, function: str, *, tries_left: int | None = None) -> SkfError:
    """The typed error for a non-OK return of `function`; never raises itself.

    `tries_left` is the retry count the PIN functions report next to SAR_PIN_INCORRECT
    (0 when the library did not fill it in).
    """
    message = f"{function} returned {sar_name(sar)}"
    cls, sw = _TYPES.get(sar, (SkfError, None))
    error: SkfError
    if cls is SkfWrongPin:
        error = SkfWrongPin(message, tries_left or 0)
    elif issubclass(cls, _SkfApduError):
        error = cls(message, sw)
    elif sar in _TRANSPORT_TYPES:
        error = _TRANSPORT_TYPES[sar](message, code=sar)
    else:
        error = cls(message)
    error.sar = sar
    error.function = function
    return error

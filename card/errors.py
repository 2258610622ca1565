"""One error vocabulary for the card layer.

Everything the card layer raises derives from `CardError`. Errors that come from a
status word carry it (`ApduError.sw`); errors from the transport carry the PC/SC
result code where there is one. The agent maps these once to wire codes.
"""

from __future__ import annotations

from typing import Any

from card.sw import StatusWord, describe, tries_left


class CardError(Exception):
    """Base of every error the card layer raises."""


# --- malformed bytes -------------------------------------------------------------


class ApduFormatError(CardError):
    """Bytes that are not a well-formed command or response APDU."""


class InvalidPinFormat(CardError):
    """A PIN that the card would never accept (length or characters); no try spent."""


class InvalidRequest(CardError):
    """An operation the card cannot be asked for (an algorithm its key does not do, a
    digest of the wrong size); nothing was sent."""


# --- status-word errors ----------------------------------------------------------


class ApduError(CardError):
    """The card answered with a status word other than 9000."""

    def __init__(self, sw: int, message: str | None = None) -> None:
        self.sw = sw
        super().__init__(message or f"card returned SW {sw:04X} ({describe(sw)})")

    def __reduce__(self) -> tuple[Any, ...]:
        # BaseException's default rebuilds with `type(self)(*self.args)`, i.e. passes
        # the message where these constructors take the SW: copy/pickle would crash.
        return (_rebuild_error, (type(self), self.args), self.__dict__)


def _rebuild_error(cls: type[ApduError], args: tuple[Any, ...]) -> ApduError:
    error = cls.__new__(cls)
    error.args = args
    return error


class WrongPinError(ApduError):
    """63Cx: the PIN was wrong; `tries_left` attempts remain."""

    def __init__(self, sw: int) -> None:
        left = tries_left(sw)
        self.tries_left: int = 0 if left is None else left
        super().__init__(sw, f"wrong PIN, {self.tries_left} tries left")


class PinBlockedError(ApduError):
    """6983: the PIN is blocked; only the issuer's unblock code can reset it."""

    def __init__(self, sw: int = StatusWord.AUTH_METHOD_BLOCKED) -> None:
        super().__init__(sw, "PIN blocked")


class SecurityStatusNotSatisfied(ApduError):
    """6982: the operation needs a verified PIN."""


class ConditionsNotSatisfied(ApduError):
    """6985: e.g. a signature without a security environment set."""


class FileNotFound(ApduError):
    """6A82: file or application not found."""


class WrongLength(ApduError):
    """6700 (or a wrong Le the exchange layer could not correct)."""


class WrongData(ApduError):
    """6A80: the card rejected the command data."""


class WrongParameters(ApduError):
    """6A86 / 6B00: incorrect P1-P2."""


class InsNotSupported(ApduError):
    """6D00."""


class ClaNotSupported(ApduError):
    """6E00."""


class ChainingNotSupported(ApduError):
    """6884."""


_BY_SW: dict[int, type[ApduError]] = {
    StatusWord.AUTH_METHOD_BLOCKED: PinBlockedError,
    StatusWord.SECURITY_STATUS_NOT_SATISFIED: SecurityStatusNotSatisfied,
    StatusWord.CONDITIONS_NOT_SATISFIED: ConditionsNotSatisfied,
    StatusWord.FILE_NOT_FOUND: FileNotFound,
    StatusWord.WRONG_LENGTH: WrongLength,
    StatusWord.WRONG_DATA: WrongData,
    StatusWord.INCORRECT_P1P2: WrongParameters,
    StatusWord.WRONG_P1P2: WrongParameters,
    StatusWord.INS_NOT_SUPPORTED: InsNotSupported,
    StatusWord.CLA_NOT_SUPPORTED: ClaNotSupported,
    StatusWord.CHAINING_NOT_SUPPORTED: ChainingNotSupported,
}


def error_for_sw(sw: int) -> ApduError:
    """The typed error for a non-9000 status word."""
    if tries_left(sw) is not None:
        return WrongPinError(sw)
    cls = _BY_SW.get(sw)
    if cls is PinBlockedError:
        return PinBlockedError(sw)
    if cls is not None:
        return cls(sw)
    return ApduError(sw)


# --- vendor SKF libraries ----------------------------------------------------------


class SkfError(CardError):
    """An error a vendor SKF (GM/T 0016) library returned.

    `sar` is the library's return code (SAR_*) and `function` the SKF call that
    returned it. `card.skf.errors` combines this class with the type that says what
    happened (WrongPinError, CardRemoved, ...), so callers catching those need not know
    about SKF; an unknown code is a plain `SkfError`.
    """

    sar: int = 0
    function: str = ""

    def __reduce__(self) -> tuple[Any, ...]:
        # As ApduError: the subclasses' constructors do not take `*self.args`.
        return (_rebuild_any_error, (type(self), self.args), self.__dict__)


def _rebuild_any_error(cls: type[CardError], args: tuple[Any, ...]) -> CardError:
    error = cls.__new__(cls)
    error.args = args
    return error


# --- card profile ----------------------------------------------------------------


class UnsupportedCard(CardError):
    """A card is present but it is not an E-Port card this profile can drive."""


class ProtocolError(CardError):
    """The card answered something the profile does not allow (bad TLV, wrong size)."""


# --- transport -------------------------------------------------------------------


class TransportError(CardError):
    """The link to the card failed. `retryable` says whether a new attempt may work."""

    retryable: bool = False

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code  # PC/SC result code where there is one
        super().__init__(message)


class ServiceUnavailable(TransportError):
    """pcscd is not running or not reachable."""

    retryable = True


class ReaderMissing(TransportError):
    """No reader (or not the configured one)."""


class ReaderBusy(TransportError):
    """Another process holds the card (sharing violation)."""

    retryable = True


class CardMissing(TransportError):
    """The reader is empty."""


class CardRemoved(TransportError):
    """The card was pulled; everything about the session is gone."""


class CardReset(TransportError):
    """The card was reset by someone; its security state is gone."""

    retryable = True


class TransportClosed(TransportError):
    """The transport was closed by its owner."""


class Timeout(TransportError):
    """The card did not answer in time."""

"""Card-layer and agent errors mapped once to stable wire codes.

The native API, the official-protocol endpoint, the CLI and telemetry all read from
here, so a code means the same thing everywhere. Messages are written for the kiosk
visitor's helper, never carry a stack trace, a PIN or document data.

Only the project's own errors (`AgentError`, the card layer's `CardError`, the card
owner's `OwnerError`) map to a 4xx or a card-specific code. Anything else is a bug:
`internal_error`, and the front end logs its type (never its message, which may quote
input).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.owner import Busy, JobTimeout, OwnerError, OwnerStopped
from agent.vocabulary import ErrorCode
from card import errors as ce

# OwnerError is here for the front ends, which never import the card owner itself.
__all__ = ["AgentError", "ErrorCode", "OwnerError", "WireError", "wire_error"]


@dataclass(frozen=True)
class WireError:
    code: ErrorCode
    http_status: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None


class AgentError(Exception):
    """An error the agent raises itself, already carrying its wire form."""

    def __init__(
        self,
        code: ErrorCode,
        http_status: int,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.wire = WireError(code, http_status, message, details or {}, retry_after_s)


# (card-layer error, code, HTTP status, message), most specific first.
_CARD_ERRORS: tuple[tuple[type[Exception], ErrorCode, int, str], ...] = (
    (
        ce.ServiceUnavailable,
        ErrorCode.READER_SERVICE_DOWN,
        503,
        "The card reader service is not running.",
    ),
    (ce.ReaderMissing, ErrorCode.READER_MISSING, 503, "No card reader is connected."),
    (ce.ReaderBusy, ErrorCode.READER_BUSY, 409, "Another program is using the card."),
    (ce.CardMissing, ErrorCode.CARD_MISSING, 409, "Insert the E-Port card into the reader."),
    (ce.CardRemoved, ErrorCode.CARD_REMOVED, 409, "The card was removed."),
    (ce.CardReset, ErrorCode.CARD_RESET, 409, "The card was reset; start again."),
    (ce.Timeout, ErrorCode.CARD_TIMEOUT, 504, "The card did not answer in time."),
    (ce.TransportError, ErrorCode.CARD_IO_ERROR, 502, "Communication with the card failed."),
    (
        ce.UnsupportedCard,
        ErrorCode.UNSUPPORTED_CARD,
        422,
        "This card is not a supported E-Port card "
        "(`card-agent card identify` on the kiosk says what it is).",
    ),
    (
        ce.InvalidPinFormat,
        ErrorCode.PIN_FORMAT,
        422,
        "The PIN must be 6 to 16 printable ASCII characters.",
    ),
    (
        ce.PinBlockedError,
        ErrorCode.PIN_BLOCKED,
        423,
        "The PIN is blocked. Contact the card issuer.",
    ),
    (ce.SecurityStatusNotSatisfied, ErrorCode.SESSION_REQUIRED, 401, "Verify the PIN first."),
    (ce.ApduError, ErrorCode.CARD_ERROR, 502, "The card refused the operation."),
    (ce.ProtocolError, ErrorCode.CARD_ERROR, 502, "The card answered something unexpected."),
    (ce.CardError, ErrorCode.CARD_ERROR, 502, "Card error."),
)


def wire_error(exc: BaseException) -> WireError:
    """The stable wire form of any exception; unknown ones become `internal_error`."""
    if isinstance(exc, AgentError):
        return exc.wire
    if isinstance(exc, Busy):
        return WireError(
            ErrorCode.BUSY,
            503,
            "The card is busy with other requests. Try again shortly.",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, JobTimeout):
        return WireError(ErrorCode.TIMEOUT, 504, "The card operation took too long.")
    if isinstance(exc, OwnerStopped):
        return WireError(ErrorCode.BUSY, 503, "The agent is shutting down.", retry_after_s=5)
    if isinstance(exc, ce.WrongPinError):
        return WireError(
            ErrorCode.PIN_INCORRECT,
            403,
            f"Wrong PIN. {exc.tries_left} tries left.",
            {"tries_left": exc.tries_left},
        )
    if isinstance(exc, ce.InvalidRequest):
        return WireError(ErrorCode.INVALID_INPUT, 422, str(exc))
    for cls, code, status, message in _CARD_ERRORS:
        if isinstance(exc, cls):
            details: dict[str, Any] = {}
            if isinstance(exc, ce.ApduError):
                details["sw"] = f"{exc.sw:04X}"
            return WireError(code, status, message, details)
    return WireError(ErrorCode.INTERNAL_ERROR, 500, "Internal error.")

"""Card-layer and agent errors mapped once to stable wire codes.

The native API, the official-protocol endpoint and telemetry all read from here, so a
code means the same thing everywhere. Messages are written for the kiosk visitor's
helper, never carry a stack trace, a PIN or document data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.owner import Busy, JobTimeout, OwnerStopped
from card import errors as ce


@dataclass(frozen=True)
class WireError:
    code: str
    http_status: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None


class AgentError(Exception):
    """An error the agent raises itself, already carrying its wire form."""

    def __init__(
        self,
        code: str,
        http_status: int,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.wire = WireError(code, http_status, message, details or {}, retry_after_s)


# (code, HTTP status, message) for each card-layer error, most specific first.
_CARD_ERRORS: tuple[tuple[type[Exception], str, int, str], ...] = (
    (ce.ServiceUnavailable, "reader_service_down", 503, "The card reader service is not running."),
    (ce.ReaderMissing, "reader_missing", 503, "No card reader is connected."),
    (ce.ReaderBusy, "reader_busy", 409, "Another program is using the card."),
    (ce.CardMissing, "card_missing", 409, "Insert the E-Port card into the reader."),
    (ce.CardRemoved, "card_removed", 409, "The card was removed."),
    (ce.CardReset, "card_reset", 409, "The card was reset; start again."),
    (ce.Timeout, "card_timeout", 504, "The card did not answer in time."),
    (ce.TransportError, "card_io_error", 502, "Communication with the card failed."),
    (ce.UnsupportedCard, "unsupported_card", 422, "This card is not a supported E-Port card."),
    (ce.InvalidPinFormat, "pin_format", 422, "The PIN must be 6 to 16 printable ASCII characters."),
    (ce.PinBlockedError, "pin_blocked", 423, "The PIN is blocked. Contact the card issuer."),
    (ce.SecurityStatusNotSatisfied, "session_required", 401, "Verify the PIN first."),
    (ce.ApduError, "card_error", 502, "The card refused the operation."),
    (ce.ProtocolError, "card_error", 502, "The card answered something unexpected."),
    (ce.CardError, "card_error", 502, "Card error."),
)


def wire_error(exc: BaseException) -> WireError:
    """The stable wire form of any exception; unknown ones become `internal_error`."""
    if isinstance(exc, AgentError):
        return exc.wire
    if isinstance(exc, Busy):
        return WireError(
            "busy",
            503,
            "The card is busy with other requests. Try again shortly.",
            retry_after_s=exc.retry_after_s,
        )
    if isinstance(exc, JobTimeout):
        return WireError("timeout", 504, "The card operation took too long.")
    if isinstance(exc, OwnerStopped):
        return WireError("busy", 503, "The agent is shutting down.", retry_after_s=5)
    if isinstance(exc, ValueError) and not isinstance(exc, ce.CardError):
        return WireError("invalid_input", 422, str(exc))
    if isinstance(exc, ce.WrongPinError):
        return WireError(
            "pin_incorrect",
            403,
            f"Wrong PIN. {exc.tries_left} tries left.",
            {"tries_left": exc.tries_left},
        )
    for cls, code, status, message in _CARD_ERRORS:
        if isinstance(exc, cls):
            details: dict[str, Any] = {}
            if isinstance(exc, ce.ApduError):
                details["sw"] = f"{exc.sw:04X}"
            return WireError(code, status, message, details)
    return WireError("internal_error", 500, "Internal error.")


# Every code the native API can answer, for the docs and for tests that check them.
ERROR_CODES: tuple[str, ...] = (
    "host_forbidden",
    "origin_forbidden",
    "unauthorized",
    "invalid_input",
    "unsupported_media_type",
    "payload_too_large",
    "not_found",
    "method_not_allowed",
    "busy",
    "timeout",
    "session_required",
    "pin_incorrect",
    "pin_blocked",
    "pin_tries_low",
    "pin_format",
    "reader_service_down",
    "reader_missing",
    "reader_busy",
    "card_missing",
    "card_removed",
    "card_reset",
    "card_changed",
    "card_timeout",
    "card_io_error",
    "unsupported_card",
    "card_error",
    "signature_invalid",
    "audit_unavailable",
    "pairing_error",
    "internal_error",
)

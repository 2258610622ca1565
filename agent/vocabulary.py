"""The words the agent and its clients share: wire error codes and signing purposes.

Defined once here. The extension reads the same lists from `extension/lib/vocabulary.json`,
generated from this module (`python -m agent.vocabulary`); a test checks that the file
is up to date, so Python and JavaScript cannot drift apart.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any


class ErrorCode(StrEnum):
    """Every `error.code` the native API answers (docs/api.md has the meanings)."""

    HOST_FORBIDDEN = "host_forbidden"
    ORIGIN_FORBIDDEN = "origin_forbidden"
    UNAUTHORIZED = "unauthorized"
    INVALID_INPUT = "invalid_input"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BUSY = "busy"
    TIMEOUT = "timeout"
    SESSION_REQUIRED = "session_required"
    PIN_INCORRECT = "pin_incorrect"
    PIN_BLOCKED = "pin_blocked"
    PIN_TRIES_LOW = "pin_tries_low"
    PIN_FORMAT = "pin_format"
    READER_SERVICE_DOWN = "reader_service_down"
    READER_MISSING = "reader_missing"
    READER_BUSY = "reader_busy"
    CARD_MISSING = "card_missing"
    CARD_REMOVED = "card_removed"
    CARD_RESET = "card_reset"
    CARD_CHANGED = "card_changed"
    CARD_TIMEOUT = "card_timeout"
    CARD_IO_ERROR = "card_io_error"
    UNSUPPORTED_CARD = "unsupported_card"
    CARD_ERROR = "card_error"
    SIGNATURE_INVALID = "signature_invalid"
    AUDIT_UNAVAILABLE = "audit_unavailable"
    PAIRING_ERROR = "pairing_error"
    INTERNAL_ERROR = "internal_error"


class Purpose(StrEnum):
    """Why a document is signed: one of the Single Window steps (recorded in the audit
    log, shown to the holder)."""

    SEAL = "seal"  # make the e-seal and generate the agreement
    AGREEMENT = "agreement"
    DATA_AUTHORISATION = "data_authorisation"
    APPLICATION = "application"
    RECEIPT = "receipt"  # acknowledge receipt of the e-policy
    LOGIN = "login"  # the card-login challenge
    OTHER = "other"


VOCABULARY_FILE = Path(__file__).resolve().parents[1] / "extension" / "lib" / "vocabulary.json"


def vocabulary() -> dict[str, Any]:
    return {
        "error_codes": [code.value for code in ErrorCode],
        "purposes": [purpose.value for purpose in Purpose],
    }


def vocabulary_json() -> str:
    return json.dumps(vocabulary(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    """Write the extension's copy (`--check`: exit 1 if it is out of date instead)."""
    wanted = vocabulary_json()
    current = VOCABULARY_FILE.read_text(encoding="utf-8") if VOCABULARY_FILE.exists() else ""
    if "--check" in argv:
        if current != wanted:
            print(f"{VOCABULARY_FILE} is out of date: run python -m agent.vocabulary")
            return 1
        return 0
    if current != wanted:
        VOCABULARY_FILE.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

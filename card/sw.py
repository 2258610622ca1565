"""ISO 7816-4 status words.

A status word is two bytes; most are fixed values, some carry a number in the low
byte or nibble (61xx, 6Cxx, 63Cx). `StatusWord` names the fixed ones; the helpers
below read the parameterised ones.
"""

from __future__ import annotations

from enum import IntEnum


class StatusWord(IntEnum):
    OK = 0x9000
    # warnings
    END_OF_FILE = 0x6282
    VERIFY_FAILED = 0x6300  # no counter given
    # execution / checking errors
    MEMORY_FAILURE = 0x6581
    WRONG_LENGTH = 0x6700
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882
    LAST_COMMAND_EXPECTED = 0x6883
    CHAINING_NOT_SUPPORTED = 0x6884
    COMMAND_INCOMPATIBLE = 0x6981
    SECURITY_STATUS_NOT_SATISFIED = 0x6982
    AUTH_METHOD_BLOCKED = 0x6983
    REFERENCE_DATA_NOT_USABLE = 0x6984
    CONDITIONS_NOT_SATISFIED = 0x6985
    COMMAND_NOT_ALLOWED_NO_EF = 0x6986
    WRONG_DATA = 0x6A80
    FUNCTION_NOT_SUPPORTED = 0x6A81
    FILE_NOT_FOUND = 0x6A82
    RECORD_NOT_FOUND = 0x6A83
    NOT_ENOUGH_MEMORY = 0x6A84
    INCORRECT_P1P2 = 0x6A86
    REFERENCE_DATA_NOT_FOUND = 0x6A88
    WRONG_P1P2 = 0x6B00
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    NO_PRECISE_DIAGNOSIS = 0x6F00


def sw_of(sw1: int, sw2: int) -> int:
    return (sw1 << 8) | sw2


def is_ok(sw: int) -> bool:
    return sw == StatusWord.OK


def bytes_available(sw: int) -> int | None:
    """61xx: xx more bytes wait for GET RESPONSE (00 means 256 or more)."""
    if sw >> 8 == 0x61:
        return (sw & 0xFF) or 256
    return None


def exact_length(sw: int) -> int | None:
    """6Cxx: resend with Le = xx (00 means 256)."""
    if sw >> 8 == 0x6C:
        return (sw & 0xFF) or 256
    return None


def tries_left(sw: int) -> int | None:
    """63Cx: verification failed (or status asked), x tries remain."""
    if sw & 0xFFF0 == 0x63C0:
        return sw & 0x0F
    return None


def describe(sw: int) -> str:
    """A short human label for logs and error messages."""
    if (n := bytes_available(sw)) is not None:
        return f"{n} bytes available"
    if (n := exact_length(sw)) is not None:
        return f"wrong Le, exact length {n}"
    if (n := tries_left(sw)) is not None:
        return f"verification failed, {n} tries left"
    try:
        return StatusWord(sw).name.lower().replace("_", " ")
    except ValueError:
        return "unknown status"

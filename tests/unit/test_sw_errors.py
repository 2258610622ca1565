"""card.sw helpers and card.errors: status word -> typed error."""

from __future__ import annotations

import copy
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from card.errors import (
    ApduError,
    ApduFormatError,
    CardError,
    CardReset,
    ChainingNotSupported,
    ClaNotSupported,
    ConditionsNotSatisfied,
    FileNotFound,
    InsNotSupported,
    PinBlockedError,
    ReaderBusy,
    ReaderMissing,
    SecurityStatusNotSatisfied,
    ServiceUnavailable,
    TransportError,
    WrongData,
    WrongLength,
    WrongParameters,
    WrongPinError,
    error_for_sw,
)
from card.sw import StatusWord, bytes_available, describe, exact_length, is_ok, sw_of, tries_left

TYPED: dict[int, type[ApduError]] = {
    0x6983: PinBlockedError,
    0x6982: SecurityStatusNotSatisfied,
    0x6985: ConditionsNotSatisfied,
    0x6A82: FileNotFound,
    0x6700: WrongLength,
    0x6A80: WrongData,
    0x6A86: WrongParameters,
    0x6B00: WrongParameters,
    0x6D00: InsNotSupported,
    0x6E00: ClaNotSupported,
    0x6884: ChainingNotSupported,
}


@pytest.mark.parametrize(("sw", "expected"), [(0x63C0, 0), (0x63C3, 3), (0x63CF, 15)])
def test_63cx_is_wrong_pin_with_tries_left(sw: int, expected: int) -> None:
    error = error_for_sw(sw)
    assert type(error) is WrongPinError
    assert error.tries_left == expected
    assert error.sw == sw
    assert f"{expected} tries left" in str(error)


@pytest.mark.parametrize(("sw", "cls"), sorted(TYPED.items()))
def test_typed_errors(sw: int, cls: type[ApduError]) -> None:
    error = error_for_sw(sw)
    assert type(error) is cls
    assert error.sw == sw
    assert isinstance(error, ApduError)
    assert isinstance(error, CardError)


def test_pin_blocked() -> None:
    error = error_for_sw(0x6983)
    assert isinstance(error, PinBlockedError)
    assert str(error) == "PIN blocked"
    assert not isinstance(error, WrongPinError)
    assert PinBlockedError().sw == 0x6983


def test_generic_message_names_the_sw() -> None:
    assert str(error_for_sw(0x6A82)) == "card returned SW 6A82 (file not found)"
    assert str(error_for_sw(0x6F00)) == "card returned SW 6F00 (no precise diagnosis)"
    assert str(ApduError(0x6A88, "no such key")) == "no such key"


@pytest.mark.parametrize("sw", [0x6F00, 0x6A88, 0x6300, 0x6881, 0x6A81, 0x6C10, 0x6110, 0x9999])
def test_unknown_or_untyped_sw_is_plain_apdu_error(sw: int) -> None:
    error = error_for_sw(sw)
    assert type(error) is ApduError
    assert error.sw == sw
    assert f"{sw:04X}" in str(error)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF))
def test_every_sw_maps_to_an_apdu_error_carrying_it(sw: int) -> None:
    error = error_for_sw(sw)
    assert error.sw == sw
    if sw & 0xFFF0 == 0x63C0:
        assert type(error) is WrongPinError
    elif sw in TYPED:
        assert type(error) is TYPED[sw]
    else:
        assert type(error) is ApduError


@pytest.mark.parametrize(
    "error",
    [
        ApduError(0x6F00),
        ApduError(0x6A88, "custom"),
        WrongPinError(0x63C2),
        PinBlockedError(),
        FileNotFound(0x6A82),
        WrongLength(0x6C10, "card asked for a second Le correction"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_copy_and_pickle(error: ApduError) -> None:
    # Exceptions are copied by loggers, test runners and process pools; the default
    # BaseException reduction re-calls __init__ with the message in place of the SW.
    for clone in (copy.copy(error), copy.deepcopy(error), pickle.loads(pickle.dumps(error))):
        assert type(clone) is type(error)
        assert clone.sw == error.sw
        assert str(clone) == str(error)
        if isinstance(error, WrongPinError):
            assert isinstance(clone, WrongPinError)
            assert clone.tries_left == error.tries_left


def test_transport_errors() -> None:
    error = ReaderBusy("held by another process", code=0x8010000B)
    assert error.code == 0x8010000B
    assert error.retryable
    assert isinstance(error, TransportError)
    assert isinstance(error, CardError)
    assert ServiceUnavailable("down").retryable
    assert CardReset("reset").retryable
    assert not ReaderMissing("none").retryable
    assert not TransportError("x").retryable
    assert pickle.loads(pickle.dumps(error)).code == 0x8010000B


def test_format_error_is_a_card_error_only() -> None:
    # Not a ValueError: the agent answers only its own errors; anything else is a bug.
    assert not issubclass(ApduFormatError, ValueError)
    assert issubclass(ApduFormatError, CardError)
    assert not issubclass(ApduFormatError, ApduError)


# --- card.sw helpers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sw", "expected"), [(0x6100, 256), (0x6101, 1), (0x6110, 16), (0x61FF, 255)]
)
def test_bytes_available(sw: int, expected: int) -> None:
    assert bytes_available(sw) == expected


@pytest.mark.parametrize(
    ("sw", "expected"), [(0x6C00, 256), (0x6C01, 1), (0x6C10, 16), (0x6CFF, 255)]
)
def test_exact_length(sw: int, expected: int) -> None:
    assert exact_length(sw) == expected


@pytest.mark.parametrize(("sw", "expected"), [(0x63C0, 0), (0x63C1, 1), (0x63CA, 10)])
def test_tries_left(sw: int, expected: int) -> None:
    assert tries_left(sw) == expected


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 0xFFFF))
def test_helpers_only_read_their_own_family(sw: int) -> None:
    assert (bytes_available(sw) is not None) == (sw >> 8 == 0x61)
    assert (exact_length(sw) is not None) == (sw >> 8 == 0x6C)
    assert (tries_left(sw) is not None) == (sw >> 4 == 0x63C)
    assert is_ok(sw) == (sw == 0x9000)
    assert sw_of(sw >> 8, sw & 0xFF) == sw
    assert isinstance(describe(sw), str)


def test_helpers_reject_neighbours() -> None:
    assert bytes_available(0x9000) is None
    assert bytes_available(0x6C10) is None
    assert exact_length(0x6110) is None
    assert tries_left(0x6300) is None
    assert tries_left(0x63D1) is None
    assert tries_left(0x6C05) is None


def test_describe() -> None:
    assert describe(0x6100) == "256 bytes available"
    assert describe(0x6C0A) == "wrong Le, exact length 10"
    assert describe(0x63C2) == "verification failed, 2 tries left"
    assert describe(0x6A82) == "file not found"
    assert describe(StatusWord.OK) == "ok"
    assert describe(0x6A89) == "unknown status"

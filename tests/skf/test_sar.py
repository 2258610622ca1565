"""Every SAR code becomes a typed card error that keeps the code: in isolation, and
returned by the real (software) library through the driver."""

from __future__ import annotations

import copy
import pickle

import pytest

from card import errors as ce
from card.skf import sar
from tests.skf.conftest import SoftSkf

# What each code must mean to the rest of card-agent (written out here, not derived
# from the table under test). Codes not listed must be a plain SkfError.
MEANING: dict[int, type[ce.CardError]] = {
    sar.SAR_NOTSUPPORTYETERR: sar.SkfNotSupported,
    sar.SAR_INVALIDHANDLEERR: ce.CardReset,
    sar.SAR_INVALIDPARAMERR: ce.WrongParameters,
    sar.SAR_NAMELENERR: ce.WrongLength,
    sar.SAR_KEYUSAGEERR: ce.ConditionsNotSatisfied,
    sar.SAR_MODULUSLENERR: ce.WrongLength,
    sar.SAR_NOTINITIALIZEERR: ce.ConditionsNotSatisfied,
    sar.SAR_TIMEOUTERR: ce.Timeout,
    sar.SAR_INDATALENERR: ce.WrongLength,
    sar.SAR_INDATAERR: ce.WrongData,
    sar.SAR_RSAMODULUSLENERR: ce.WrongLength,
    sar.SAR_KEYNOTFOUNTERR: ce.FileNotFound,
    sar.SAR_CERTNOTFOUNTERR: ce.FileNotFound,
    sar.SAR_NOTEXPORTERR: ce.ConditionsNotSatisfied,
    sar.SAR_BUFFER_TOO_SMALL: ce.ProtocolError,
    sar.SAR_DEVICE_REMOVED: ce.CardRemoved,
    sar.SAR_PIN_INCORRECT: ce.WrongPinError,
    sar.SAR_PIN_LOCKED: ce.PinBlockedError,
    sar.SAR_PIN_INVALID: ce.InvalidPinFormat,
    sar.SAR_PIN_LEN_RANGE: ce.InvalidPinFormat,
    sar.SAR_USER_ALREADY_LOGGED_IN: ce.ConditionsNotSatisfied,
    sar.SAR_USER_PIN_NOT_INITIALIZED: ce.ConditionsNotSatisfied,
    sar.SAR_USER_TYPE_INVALID: ce.WrongParameters,
    sar.SAR_APPLICATION_NAME_INVALID: ce.WrongData,
    sar.SAR_APPLICATION_EXISTS: ce.ConditionsNotSatisfied,
    sar.SAR_USER_NOT_LOGGED_IN: ce.SecurityStatusNotSatisfied,
    sar.SAR_APPLICATION_NOT_EXISTS: ce.FileNotFound,
    sar.SAR_FILE_NOT_EXIST: ce.FileNotFound,
}
ALL_CODES = sorted(code for code in sar.SAR_NAMES if code != sar.SAR_OK)
UNKNOWN_CODES = [0x0A0000FF, 0xE0000001, 0xFFFFFFFF, 1]
# ISO status words the ApduError-derived ones carry (the agent shows them).
EQUIVALENT_SW = {
    sar.SAR_PIN_LOCKED: 0x6983,
    sar.SAR_USER_NOT_LOGGED_IN: 0x6982,
    sar.SAR_APPLICATION_NOT_EXISTS: 0x6A82,
    sar.SAR_CERTNOTFOUNTERR: 0x6A88,
    sar.SAR_INDATAERR: 0x6A80,
}


def test_the_table_knows_all_50_codes_of_the_standard() -> None:
    assert len(ALL_CODES) == 50
    assert sar.SAR_NAMES[0x0A000024] == "SAR_PIN_INCORRECT"
    assert sar.sar_name(0x0A000023) == "SAR_DEVICE_REMOVED (0x0A000023)"
    assert sar.sar_name(0xE0000001) == "unknown SKF code 0xE0000001"


@pytest.mark.parametrize("code", ALL_CODES + UNKNOWN_CODES, ids=lambda c: f"{c:08X}")
def test_each_code_maps_to_its_meaning_and_keeps_the_code(code: int) -> None:
    error = sar.error_for_sar(code, "SKF_Something", tries_left=3)
    expected = MEANING.get(code, ce.SkfError)
    assert isinstance(error, expected)
    assert isinstance(error, ce.SkfError)
    assert isinstance(error, ce.CardError)
    if code not in MEANING:
        assert type(error) is ce.SkfError
    assert error.sar == code
    assert error.function == "SKF_Something"
    assert f"{code:08X}" in str(error)
    assert sar.error_type_for_sar(code) is type(error)
    if isinstance(error, ce.TransportError):
        assert error.code == code
    if code in EQUIVALENT_SW:
        assert isinstance(error, ce.ApduError)
        assert error.sw == EQUIVALENT_SW[code]


def test_wrong_pin_carries_the_librarys_retry_count() -> None:
    error = sar.error_for_sar(sar.SAR_PIN_INCORRECT, "SKF_VerifyPIN", tries_left=4)
    assert isinstance(error, ce.WrongPinError)
    assert (error.tries_left, error.sw) == (4, 0x63C4)
    assert "4 tries left" in str(error)
    # More tries than a 63Cx nibble can say: the count is kept, the SW saturates.
    many = sar.error_for_sar(sar.SAR_PIN_INCORRECT, "SKF_VerifyPIN", tries_left=99)
    assert isinstance(many, ce.WrongPinError)
    assert (many.tries_left, many.sw) == (99, 0x63CF)
    none = sar.error_for_sar(sar.SAR_PIN_INCORRECT, "SKF_VerifyPIN")
    assert isinstance(none, ce.WrongPinError)
    assert none.tries_left == 0


@pytest.mark.parametrize(
    "code", [sar.SAR_PIN_INCORRECT, sar.SAR_DEVICE_REMOVED, sar.SAR_PIN_LOCKED, 0xE0000001]
)
def test_errors_survive_copy_and_pickle(code: int) -> None:
    error = sar.error_for_sar(code, "SKF_VerifyPIN", tries_left=2)
    for clone in (copy.copy(error), pickle.loads(pickle.dumps(error))):
        assert type(clone) is type(error)
        assert str(clone) == str(error)
        assert (clone.sar, clone.function) == (code, "SKF_VerifyPIN")
        if isinstance(error, ce.WrongPinError):
            assert isinstance(clone, ce.WrongPinError)
            assert clone.tries_left == 2


@pytest.mark.parametrize("code", ALL_CODES + UNKNOWN_CODES, ids=lambda c: f"{c:08X}")
def test_each_code_from_the_library_reaches_the_caller_typed(code: int, softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    driver = softskf.open()
    softskf.control.fail("SKF_GetPINInfo", code)
    with pytest.raises(ce.CardError) as caught:
        driver.pin_status()
    error = caught.value
    assert isinstance(error, MEANING.get(code, ce.SkfError))
    assert isinstance(error, ce.SkfError)
    assert (error.sar, error.function) == (code, "SKF_GetPINInfo")
    softskf.control.clear_failure("SKF_GetPINInfo")
    assert driver.pin_status().tries_left == 10  # the driver is still usable

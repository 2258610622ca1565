"""The agent's error vocabulary, as Single Window pages read it."""

from __future__ import annotations

import pytest

from agent.compat.methods import compat_error
from agent.errors import WireError, wire_error
from agent.owner import Busy, JobTimeout
from agent.vocabulary import ErrorCode
from card import errors as ce


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_page_form(code: str) -> None:
    message, err = compat_error(WireError(code, 500, "English message", {"tries_left": 3}))
    assert message
    assert "{" not in message
    assert err.startswith("Err:")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ce.CardMissing("no card"), "Err:Custom51590"),
        (ce.CardRemoved("pulled"), "Err:Custom51590"),
        (ce.ReaderMissing("no reader"), "Err:Custom50200"),
        (ce.ServiceUnavailable("no pcscd"), "Err:Custom50200"),
        (ce.ReaderBusy("exclusive"), "Err:Custom50200"),
        (ce.InvalidPinFormat("bad"), "Err:Base50000"),
        (ce.WrongPinError(0x63C4), "Err:CardAgent.pin_incorrect"),
        (ce.PinBlockedError(), "Err:CardAgent.pin_blocked"),
        (ce.CardReset("reset"), "Err:CardAgent.card_reset"),
        (Busy(0.5), "Err:CardAgent.busy"),
        (JobTimeout("sign", 15, started=True), "Err:CardAgent.timeout"),
        (RuntimeError("bug"), "Err:CardAgent.internal_error"),
    ],
)
def test_card_errors(exc: Exception, expected: str) -> None:
    assert compat_error(wire_error(exc))[1] == expected


def test_messages_carry_tries_left() -> None:
    message, _ = compat_error(wire_error(ce.WrongPinError(0x63C4)))
    assert message == "IC卡密码错误，还可以尝试4次"


def test_invalid_input_keeps_its_own_message() -> None:
    message, code = compat_error(
        WireError(ErrorCode.INVALID_INPUT, 422, "args中必须包含非空的字符串参数inData")
    )
    assert (message, code) == ("args中必须包含非空的字符串参数inData", "Err:Base50000")

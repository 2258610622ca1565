"""PIN entry in the extension's own window: tries left before typing, wrong PINs, and
the explicit confirmation the last try needs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import PIN, AgentHandle, Kiosk, PracticeHandle

pytestmark = pytest.mark.e2e

WRONG = "12345678"


def open_login_dialog(kiosk: Kiosk, practice: PracticeHandle) -> tuple[Any, Any]:
    page = kiosk.context.new_page()
    page.goto(practice.origin + "/")
    page.wait_for_selector("#card-status.good")
    page.click("[data-testid=login]")
    kiosk.approve_pairing(kiosk.next_dialog())
    dialog = kiosk.next_dialog()
    dialog.wait_for_selector("#view-sign:not([hidden])")
    return page, dialog


def wrong_pin(dialog: Any, tries_after: int) -> None:
    dialog.fill("#pin", WRONG)
    dialog.click("#confirm")
    dialog.wait_for_selector(f"[data-testid=error]:has-text('还可尝试 {tries_after} 次')")


def test_wrong_pin_shows_tries_left(
    kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle
) -> None:
    page, dialog = open_login_dialog(kiosk, practice)
    assert dialog.inner_text("[data-testid=tries-left]") == "密码还可尝试 10 次"
    wrong_pin(dialog, 9)
    assert dialog.inner_text("[data-testid=tries-left]") == "密码还可尝试 9 次"
    assert dialog.input_value("#pin") == ""
    kiosk.shot(dialog, "wrong-pin")
    # A PIN no card accepts is refused before anything reaches the card.
    dialog.fill("#pin", "12")
    dialog.click("#confirm")
    dialog.wait_for_selector("[data-testid=error]:has-text('本次未消耗尝试次数')")
    # The right PIN then works, and the page goes on.
    kiosk.confirm_sign(dialog, PIN)
    page.wait_for_selector("section[data-step=notice]:not([hidden])")
    results = [a["result"] for a in agent.audit_records() if a["event"] == "pin_verify"]
    assert results == ["failed", "ok"]


def test_last_try_needs_explicit_confirmation(
    kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle
) -> None:
    page, dialog = open_login_dialog(kiosk, practice)
    for left in range(9, 0, -1):
        wrong_pin(dialog, left)
    # One try left: a warning, and no confirmation without ticking "use my last try".
    dialog.wait_for_selector("[data-testid=last-try]:not([hidden])")
    assert dialog.is_disabled("[data-testid=confirm]")
    dialog.fill("#pin", PIN)
    assert dialog.is_disabled("[data-testid=confirm]")
    kiosk.shot(dialog, "last-try")
    # Nothing was spent while the button was refused.
    status = agent.runtime.backend.card.state.pin.tries_left if _sim(agent) else None
    assert status in (None, 1)
    dialog.check("[data-testid=last-try-confirm]")
    assert dialog.is_enabled("[data-testid=confirm]")
    kiosk.shot(dialog, "last-try-confirmed")
    with dialog.expect_event("close"):
        dialog.click("#confirm")
    page.wait_for_selector("section[data-step=notice]:not([hidden])")
    results = [a["result"] for a in agent.audit_records() if a["event"] == "pin_verify"]
    assert results == ["failed"] * 9 + ["ok"]


def test_agent_refuses_last_try_without_confirmation(
    kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle
) -> None:
    """The window's reactive path: the agent says pin_tries_low (e.g. a stricter
    pin_floor than the window assumed); the window asks for the confirmation."""
    page, dialog = open_login_dialog(kiosk, practice)
    for left in range(9, 0, -1):
        wrong_pin(dialog, left)
    # Hide the proactive warning as a window that knew nothing would, and try again.
    dialog.evaluate("document.querySelector('#last-try').hidden = true")
    dialog.evaluate("document.querySelector('#confirm').disabled = false")
    dialog.fill("#pin", PIN)
    dialog.click("#confirm")
    dialog.wait_for_selector("[data-testid=last-try]:not([hidden])")
    dialog.wait_for_selector("[data-testid=error]:has-text('我确认使用最后一次机会')")
    codes = [a.get("error") for a in agent.audit_records() if a["event"] == "pin_verify"]
    assert codes[-1] == "pin_tries_low"
    assert page.is_visible("section[data-step=login]")


def _sim(agent: AgentHandle) -> bool:
    return hasattr(agent.runtime.backend, "card")

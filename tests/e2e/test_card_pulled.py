"""The card pulled in the middle of the claim: a clear message, and the next card
starts clean (its PIN needed again, nothing of the previous visitor's left)."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PIN, AgentHandle, Kiosk, PracticeHandle
from tests.e2e.flow import CONTACT, login, visible_step

pytestmark = pytest.mark.e2e


def test_card_pulled_mid_flow(kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle) -> None:
    page = kiosk.context.new_page()
    page.goto(practice.origin + "/")
    login(kiosk, page, pair=True)
    page.click("#view-policy")
    visible_step(page, "contact")
    for field, value in CONTACT.items():
        page.fill(f"[data-testid={field}]", value)
    page.check("[data-testid=read-agree]")
    page.wait_for_selector("[data-testid=doc-close]:not([disabled])")
    page.click("[data-testid=doc-close]")
    page.click("[data-testid=confirm-apply]")
    kiosk.confirm_sign(kiosk.next_dialog())
    visible_step(page, "seal")

    # The visitor clicks, the extension's window opens ... and the card is pulled.
    page.click("[data-testid=seal]")
    dialog = kiosk.next_dialog()
    dialog.wait_for_selector("#view-sign:not([hidden])")
    agent.pull_card()
    dialog.wait_for_selector("#fatal-title:has-text('电子口岸卡已拔出')")
    kiosk.shot(dialog, "dialog-card-pulled")
    page.wait_for_selector("[data-testid=pulled]:not([hidden])")
    assert "电子口岸卡已拔出" in page.inner_text("[data-testid=pulled]")
    assert "从登录开始" in page.inner_text("[data-testid=pulled]")
    kiosk.shot(page, "page-card-pulled")
    if not dialog.is_closed():
        dialog.wait_for_event("close")

    # The agent forgot the session: nothing can be signed on it any more.
    assert (
        agent.runtime.service.sessions.get(agent.pairing_store().list_clients()[0].client_id)
        is None
    )

    # The next visitor's card: a different holder, PIN needed, tries untouched.
    agent.insert_card("operator-sm2")
    page.click("[data-testid=restart]")
    visible_step(page, "login")
    page.wait_for_selector("#card-status.good")
    page.click("[data-testid=login]")
    dialog = kiosk.next_dialog()
    dialog.wait_for_selector("#view-sign:not([hidden])")
    assert dialog.inner_text("[data-testid=holder]") == "李娜"
    assert dialog.is_visible("#pin")
    assert dialog.inner_text("[data-testid=tries-left]") == "密码还可尝试 10 次"
    kiosk.shot(dialog, "next-card-login")
    kiosk.confirm_sign(dialog, PIN)
    visible_step(page, "notice")
    assert "李娜" in page.inner_text("#user-box")
    summary = page.evaluate("async () => (await fetch('/api/summary')).json()")
    assert [r["step"] for r in summary["records"]] == ["login"]
    assert summary["holder"] == "李娜"

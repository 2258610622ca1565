"""Driving the practice Single Window like a visitor at the kiosk would."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from card.crypto.certs import certificate_from_pem, parse_certificate
from card.crypto.sm2 import sm2_verify
from tests.e2e.conftest import PIN, Kiosk

SIGNED = ["application", "seal", "agreement", "data_authorisation", "submit", "receipt"]
CONTACT = {"name": "张伟", "mobile": "13800138000", "email": "zhangwei@example.com"}


def visible_step(page: Any, step: str) -> None:
    page.wait_for_selector(f"section[data-step={step}]:not([hidden])")


def sign_in_dialog(kiosk: Kiosk, name: str, official: bool) -> None:
    """Extension mode: the extension's window asks to confirm. Official mode: the page
    already carries the PIN; nothing to do."""
    if official:
        return
    dialog = kiosk.next_dialog()
    kiosk.confirm_sign(dialog, name=name)


def login(kiosk: Kiosk, page: Any, *, official: bool = False, pair: bool = False) -> None:
    visible_step(page, "login")
    if official:
        page.wait_for_selector("#card-status.good")
        page.fill("#pin-input", PIN)
    else:
        page.wait_for_selector("#card-status.good")
    kiosk.shot(page, "login")
    page.click("[data-testid=login]")
    if pair:
        kiosk.approve_pairing(kiosk.next_dialog())
    if not official:
        dialog = kiosk.next_dialog()
        dialog.wait_for_selector("#view-sign:not([hidden])")
        assert dialog.locator("[data-testid=purpose]").inner_text() == "卡介质登录"
        assert dialog.locator("[data-testid=tries-left]").inner_text() == "密码还可尝试 10 次"
        kiosk.confirm_sign(dialog, name="dialog-login")
    visible_step(page, "notice")


def run_practice_flow(
    kiosk: Kiosk, page: Any, *, read_seconds: float, official: bool = False
) -> dict[str, Any]:
    """The whole claim, from card login to the receipt; returns /api/summary. Extension
    mode pairs first (a fresh browser profile); the official protocol has no pairing."""
    login(kiosk, page, official=official, pair=not official)
    assert "您有一份待确认小微信保易保单，请查看保单" in page.inner_text("[data-testid=notice]")
    kiosk.shot(page, "notice")
    page.click("#view-policy")

    visible_step(page, "contact")
    page.fill("[data-testid=name]", CONTACT["name"])
    page.fill("[data-testid=mobile]", CONTACT["mobile"])
    # The guide's rule: no hyphen or underscore in the e-mail address.
    page.fill("[data-testid=email]", "zhang_wei@example-mail.com")
    page.click("[data-testid=read-agree]")  # the page unticks it again at once
    page.wait_for_selector("[data-error=email]:not(:empty)")
    assert "中划线（-）或下划线（_）" in page.inner_text("[data-error=email]")
    assert not page.is_checked("[data-testid=read-agree]")
    kiosk.shot(page, "contact-email-rule")
    page.fill("[data-testid=email]", CONTACT["email"])
    page.check("[data-testid=read-agree]")

    # The application form pops up and cannot be closed before the reading time is up.
    page.wait_for_selector("[data-testid=doc-modal]:not([hidden])")
    opened = time.monotonic()
    assert page.is_disabled("[data-testid=doc-close]")
    assert page.is_disabled("[data-testid=confirm-apply]")
    kiosk.shot(page, "application-form")
    page.wait_for_selector(
        "[data-testid=doc-close]:not([disabled])", timeout=read_seconds * 1000 + 5000
    )
    # Page clock against page clock: when the page opened the form, and when the test saw
    # the button enabled (a busy machine delays only the latter).
    enabled_at = page.evaluate("Date.now()")
    opened_at = int(page.get_attribute("[data-testid=doc-close]", "data-opened-at") or 0)
    assert enabled_at - opened_at >= read_seconds * 1000 - 300, (enabled_at, opened_at)
    assert time.monotonic() - opened <= read_seconds + 5
    page.click("[data-testid=doc-close]")
    assert page.is_enabled("[data-testid=confirm-apply]")
    page.click("[data-testid=confirm-apply]")
    sign_in_dialog(kiosk, "dialog-application", official)

    visible_step(page, "seal")
    page.wait_for_function("() => document.querySelector('#seal-img').naturalWidth > 0")
    kiosk.shot(page, "seal")
    page.click("[data-testid=seal]")
    sign_in_dialog(kiosk, "dialog-seal", official)

    visible_step(page, "agreement")
    assert page.is_disabled("[data-testid=agree]")
    page.check("[data-testid=agree-terms]")
    kiosk.shot(page, "agreement")
    page.click("[data-testid=agree]")
    sign_in_dialog(kiosk, "dialog-agreement", official)

    visible_step(page, "authorise")
    assert page.is_disabled("[data-testid=authorise]")
    page.check("[data-testid=agree-data]")
    kiosk.shot(page, "authorise")
    page.click("[data-testid=authorise]")
    sign_in_dialog(kiosk, "dialog-authorise", official)

    visible_step(page, "submit")
    kiosk.shot(page, "submit")
    page.click("[data-testid=submit]")
    sign_in_dialog(kiosk, "dialog-submit", official)

    visible_step(page, "result")
    page.wait_for_selector("[data-testid=approved]:not([hidden])")
    kiosk.shot(page, "result")
    page.click("[data-testid=receipt]")
    sign_in_dialog(kiosk, "dialog-receipt", official)

    visible_step(page, "done")
    kiosk.shot(page, "done")
    summary: dict[str, Any] = page.evaluate(
        """async () => {
            const summary = await (await fetch('/api/summary')).json();
            summary.documents = {};
            for (const r of summary.records) {
                if (r.step === 'login') continue;
                const doc = await (await fetch('/api/document/' + r.step)).json();
                summary.documents[r.step] = doc.text;
            }
            return summary;
        }"""
    )
    page.click("[data-testid=finish]")
    visible_step(page, "bye")
    kiosk.shot(page, "bye")
    return summary


def check_signatures(summary: dict[str, Any]) -> None:
    """Our own check of every document signature, against the card's certificate."""
    records = summary["records"]
    assert all(r["verified"] for r in records), records
    assert summary["complete"]
    cert = parse_certificate(certificate_from_pem(summary["certificate_pem"]))
    assert cert.sm2_point is not None
    for r in records[1:]:
        text = summary["documents"][r["step"]].encode()
        assert hashlib.sha256(text).hexdigest() == r["sha256"]
        assert sm2_verify(cert.sm2_point, text, base64.b64decode(r["signature"])), r["step"]
        assert not sm2_verify(cert.sm2_point, text + b"x", base64.b64decode(r["signature"]))

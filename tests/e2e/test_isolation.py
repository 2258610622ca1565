"""What pages cannot do: a page on an unlisted origin gets nothing, an iframe can neither
ask in the page's name nor forge the extension's answers; pages never see the token."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import (
    AgentHandle,
    IntegratorHandle,
    Kiosk,
    PracticeHandle,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def kiosk_settings(
    agent: AgentHandle, practice: PracticeHandle, integrator: IntegratorHandle
) -> dict[str, Any]:
    return {
        "agentUrl": agent.url,
        "pageOrigins": [practice.origin, integrator.origin],
        # The frame's origin gets the bridge only: the content script runs there, so
        # the service worker's own check is what keeps the page API away from it.
        "bridgeOrigins": [practice.origin, integrator.frame_origin],
        "keypad": "off",
    }


def nothing_happened(kiosk: Kiosk, agent: AgentHandle) -> None:
    assert kiosk.no_dialog(within_s=1.5)
    assert agent.pairing_store().pending() == []
    assert [a for a in agent.audit_records() if a["event"] in ("sign_request", "pin_verify")] == []


def test_unlisted_origin_gets_nothing(
    kiosk: Kiosk, integrator: IntegratorHandle, agent: AgentHandle
) -> None:
    page = kiosk.context.new_page()
    # The integrator's page, served from an origin that is not on the page API's list
    # (only on the bridge's: the content script is there, the service worker refuses).
    page.goto(f"{integrator.frame_origin}/")
    page.wait_for_function("() => window.client !== undefined")
    answers = page.evaluate(
        """async () => {
            const out = {};
            out.available = await window.client.available(800);
            for (const method of ['status', 'card', 'sign']) {
                try {
                    out[method] = await window.client.call(method,
                        {purpose: 'agreement', title: 't', text: 'x'}, {timeoutMs: 800});
                } catch (e) { out[method] = e.code; }
            }
            return out;
        }"""
    )
    assert answers == {
        "available": False,
        "status": "no_extension",
        "card": "no_extension",
        "sign": "no_extension",
    }
    kiosk.shot(page, "unlisted-origin")
    nothing_happened(kiosk, agent)


def test_iframe_cannot_ask_or_answer(
    kiosk: Kiosk, integrator: IntegratorHandle, agent: AgentHandle
) -> None:
    page = kiosk.context.new_page()
    page.goto(f"{integrator.origin}/")
    page.wait_for_function("() => window.client !== undefined")
    assert page.evaluate("() => window.client.available(5000)")
    frame = page.frame_locator("#foreign")
    frame.locator("body").wait_for()
    foreign = next(f for f in page.frames if f.url.startswith(integrator.frame_origin))

    # 1. The iframe asks for a signature in the parent's name: the content script ignores
    #    it (its source is not the page's window), no window opens, nothing is signed.
    foreign.evaluate(
        """() => parent.postMessage({channel: 'card-agent/v1', type: 'request',
            id: 'evil-1', method: 'sign',
            params: {purpose: 'agreement', title: '伪造的协议', text: 'pay me'}}, '*')"""
    )
    nothing_happened(kiosk, agent)

    # 2. The page waits for a real answer; the iframe forges one (worst case: it knows
    #    the request id) and a card event. The page's client accepts neither.
    page.evaluate(
        """() => {
            crypto.randomUUID = () => 'known-id';
            window.outcome = null;
            window.client.call('sign', {purpose: 'agreement', title: '真实的协议', text: 'ok'})
                .then((r) => { window.outcome = {ok: r}; },
                      (e) => { window.outcome = {error: e.code}; });
        }"""
    )
    dialog = kiosk.next_dialog()  # pairing: the page's own request is real
    foreign.evaluate(
        """() => {
            parent.postMessage({channel: 'card-agent/v1', type: 'response', id: 'known-id',
                                ok: true, result: {signature: 'FORGED'}}, '*');
            parent.postMessage({channel: 'card-agent/v1', type: 'event',
                                event: 'card_removed'}, '*');
        }"""
    )
    page.wait_for_timeout(500)
    assert page.evaluate("() => window.outcome") is None
    assert page.evaluate("() => window.events") == []
    kiosk.shot(page, "forged-answer-ignored")
    dialog.wait_for_selector("#view-pair:not([hidden])")
    with dialog.expect_event("close"):  # the visitor cancels; the window closes itself
        dialog.evaluate(
            "setTimeout(() => document.querySelector('[data-testid=pair-cancel]').click(), 0)"
        )
    page.wait_for_function("() => window.outcome !== null")
    assert page.evaluate("() => window.outcome") == {"error": "user_cancelled"}

    # 3. The iframe heard none of the extension's answers, and no page saw a token.
    status = page.evaluate("() => window.client.call('status', {}, {timeoutMs: 5000})")
    assert status["paired"] is False
    assert "token" not in str(status)
    assert foreign.evaluate("() => window.heard") == []

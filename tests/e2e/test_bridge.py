"""The Single Window bridge: an unmodified page speaking the official client protocol
(`new WebSocket("ws://127.0.0.1:61232")`) reaches card-agent's compatible endpoint
through the extension. The practice site's ?mode=official variant is such a page."""

from __future__ import annotations

import importlib.util

import pytest

from tests.e2e.conftest import EXTENSION_ORIGIN, AgentHandle, Kiosk, PracticeHandle
from tests.e2e.flow import SIGNED, check_signatures, run_practice_flow

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        importlib.util.find_spec("agent.compat") is None,
        reason="agent/compat (the official-protocol endpoint) is not in this tree yet",
    ),
]


def test_whole_flow_through_the_bridge(
    kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle
) -> None:
    assert agent.compat_url is not None
    page = kiosk.context.new_page()
    page.goto(practice.origin + "/?mode=official")
    summary = run_practice_flow(kiosk, page, read_seconds=2.0, official=True)
    assert [r["step"] for r in summary["records"]] == ["login", *SIGNED]
    check_signatures(summary)
    # The endpoint saw the extension (not the page) on the socket, and the bridge named
    # the page in each signature's title for the audit log.
    signs = [a for a in agent.signatures() if a["result"] == "ok"]
    assert len(signs) == 7
    assert {a["origin"] for a in signs} == {EXTENSION_ORIGIN}
    assert signs[0]["purpose"] == "login"
    assert practice.origin in signs[0]["title"]
    assert [a["purpose"] for a in signs[1:]] == [
        "application",
        "seal",
        "agreement",
        "data_authorisation",
        "application",
        "receipt",
    ]
    assert [a["data_sha256"] for a in signs] == [r["sha256"] for r in summary["records"]]


def test_bridge_only_for_listed_pages(
    kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle
) -> None:
    """A page whose origin is not on the bridge list keeps the browser's own WebSocket
    (to the official client's address, where nothing of ours listens in this test): it
    does not reach card-agent's endpoint through the extension."""
    kiosk.configure(
        agentUrl=agent.url,
        compatUrl=agent.compat_url,
        pageOrigins=[practice.origin],
        bridgeOrigins=[],
    )
    page = kiosk.context.new_page()
    page.goto(practice.origin + "/?mode=official")
    page.wait_for_selector("#card-status.bad")
    assert "无法连接电子口岸客户端" in page.inner_text("#card-status")
    assert page.is_disabled("[data-testid=login]")
    kiosk.shot(page, "no-bridge")

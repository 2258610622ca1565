"""The whole practice claim in real Chromium through the extension's page API."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import AgentHandle, Kiosk, PracticeHandle
from tests.e2e.flow import SIGNED, check_signatures, run_practice_flow

pytestmark = pytest.mark.e2e

PURPOSES = [
    "login",
    "application",
    "seal",
    "agreement",
    "data_authorisation",
    "application",
    "receipt",
]


@pytest.fixture
def practice_read_seconds() -> float:
    return 10.0  # the Single Window's forced reading time, as in production


def check_summary(summary: dict[str, Any], agent: AgentHandle) -> None:
    records = summary["records"]
    assert [r["step"] for r in records] == ["login", *SIGNED]
    check_signatures(summary)
    # The agent's audit log: exactly these documents were signed, in this order.
    signs = [a for a in agent.signatures() if a["result"] == "ok"]
    assert [a["purpose"] for a in signs] == PURPOSES
    assert [a["data_sha256"] for a in signs] == [r["sha256"] for r in records]
    assert {a["cert_number"] for a in signs} == {summary["certificate_number"]}


def test_whole_practice_flow(kiosk: Kiosk, practice: PracticeHandle, agent: AgentHandle) -> None:
    page = kiosk.context.new_page()
    page.goto(practice.origin + "/")
    summary = run_practice_flow(kiosk, page, read_seconds=10.0)
    check_summary(summary, agent)
    # "结束办理" ended the session and cleared the card's verified state.
    client = agent.pairing_store().list_clients()[0]
    assert agent.runtime.service.sessions.get(client.client_id) is None
    card = getattr(agent.runtime.backend, "card", None)  # the simulated card
    assert card is None or not card.verified
    # One PIN entry for the whole claim (a session), one confirmation per signature.
    verifies = [a for a in agent.audit_records() if a["event"] == "pin_verify"]
    assert [a["result"] for a in verifies] == ["ok"]

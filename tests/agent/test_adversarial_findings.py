"""Findings of the adversarial test run (reliability issue), on the native API.

Each test reproduces what the hostile process or page did, through real uvicorn, on
both backends. (Finding 1, a stopped pcscd: test_hung_pcscd.py; 2, slow and idle
connections: tests/ops/test_connection_limits.py; 3, idle compat pages:
tests/compat/test_idle_slots.py.)
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.agent.conftest import ORIGIN, OTHER_ORIGIN, Agent, assert_error, sign_body
from tests.agent.test_api_flow import sign_ok

LONE_SURROGATE_TITLE = b'{"purpose": "seal", "title": "t\\ud800", "data": "ZG9j"}'


def post_raw(client: httpx.Client, path: str, body: bytes) -> httpx.Response:
    return client.post(path, content=body, headers={"Content-Type": "application/json"})


# --- 4: strings are checked before the card is touched ----------------------------------


def test_a_lone_surrogate_in_the_title_never_reaches_the_card(
    agent: Agent, client: httpx.Client
) -> None:
    assert agent.verify(client).status_code == 200
    records = len(agent.audit_records())
    before = agent.signatures_made()
    r = post_raw(client, "/v1/sign", LONE_SURROGATE_TITLE)
    error = assert_error(r, 422, "invalid_input")
    assert error["details"]["fields"] == ["title"]
    assert agent.signatures_made() == before
    assert len(agent.audit_records()) == records
    sign_ok(agent, client)  # the session and the card are as they were


@pytest.mark.parametrize(
    "body",
    [
        b'{"client_name": "x\\udfff"}',
        b'{"client_name": "\\ud83d"}',
    ],
)
def test_a_lone_surrogate_in_a_pairing_request_is_invalid_input(agent: Agent, body: bytes) -> None:
    with agent.client(ORIGIN) as c:
        assert_error(post_raw(c, "/v1/pair", body), 422, "invalid_input")


def test_a_valid_surrogate_pair_is_text(agent: Agent) -> None:
    with agent.client(ORIGIN) as c:
        r = post_raw(c, "/v1/pair", b'{"client_name": "kiosk \\ud83d\\ude00"}')
    assert r.status_code == 201, r.text


def test_a_failure_after_the_card_signed_still_leaves_a_record(
    agent: Agent, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The card signs, then writing the outcome fails: the request record, written while
    the card signed, still names it, and no signature leaves the agent."""
    assert agent.verify(client).status_code == 200
    audit = agent.runtime.audit
    real = audit.append

    def failing_outcome(event: str, **fields: Any) -> Any:
        if event == "sign":
            raise OSError(28, "No space left on device")
        return real(event, **fields)

    monkeypatch.setattr(audit, "append", failing_outcome)
    monkeypatch.setattr(audit, "append_later", failing_outcome, raising=False)
    before = agent.signatures_made()
    r = client.post("/v1/sign", json=sign_body(b"signed, then the disk filled"))
    assert r.status_code >= 500
    assert "signature" not in r.json()
    assert agent.signatures_made() == before + 1
    requests = [rec for rec in agent.audit_records() if rec["event"] == "sign_request"]
    assert requests, "no durable record names the request the card signed"
    assert requests[-1]["title"] == "Test document"


# --- 5: unauthenticated events socket input -------------------------------------------------


async def _expect_4401(agent: Agent, first: str | bytes) -> None:
    async with agent.ws(ORIGIN) as ws:
        await ws.send(first)
        messages = []
        try:
            while len(messages) < 2:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=5)))
        except ConnectionClosed:
            pass
        assert messages in ([], [{"type": "error", "code": "unauthorized"}])
        assert ws.close_code == 4401


@pytest.mark.parametrize(
    "first",
    [
        b'{"type": "auth", "token": "x"}',  # a binary frame
        '{"type": "auth", "token": "\\ud800"}',  # a lone surrogate as the token
        '{"type": "auth", "token": "abc\\udfff"}',
    ],
)
def test_events_socket_closes_4401_with_one_log_line(agent: Agent, first: str | bytes) -> None:
    asyncio.run(_expect_4401(agent, first))
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    assert log.count("events: unauthenticated") == 1


# --- 6: the size limit is on the decoded document ------------------------------------------


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_documents_over_max_data_bytes_are_refused(
    make_agent: Any, backend_kind: str, extra: int
) -> None:
    limit = 3000
    agent = make_agent(security={"max_data_bytes": limit, "max_body_bytes": 64 * 1024})
    token = agent.pair()
    with agent.client(ORIGIN, token) as client:
        assert agent.verify(client).status_code == 200
        before = agent.signatures_made()
        assert_error(
            client.post("/v1/sign", json=sign_body(b"x" * (limit + extra))),
            413,
            "payload_too_large",
        )
        assert agent.signatures_made() == before
        sign_ok(agent, client, b"x" * limit)


def test_an_empty_document_is_refused(agent: Agent, client: httpx.Client) -> None:
    assert agent.verify(client).status_code == 200
    before = agent.signatures_made()
    assert_error(client.post("/v1/sign", json=sign_body(b"")), 422, "invalid_input")
    assert agent.signatures_made() == before


# --- 7: one caller's pairing flood does not lock the others out ------------------------------


def test_a_pairing_flood_without_origin_leaves_the_extension_able_to_pair(agent: Agent) -> None:
    with agent.client(origin=None) as local:
        answers = [local.post("/v1/pair", json={"client_name": f"flood {n}"}) for n in range(20)]
    assert all(r.status_code in (201, 409) for r in answers)
    # The extension (its own origin) still gets a pairing code at once.
    assert agent.pair(ORIGIN, "extension")


def test_a_pairing_flood_from_one_origin_does_not_block_that_origin_for_minutes(
    agent: Agent,
) -> None:
    with agent.client(OTHER_ORIGIN) as other:
        for n in range(20):
            r = other.post("/v1/pair", json={"client_name": f"flood {n}"})
            assert r.status_code == 201, r.text  # the oldest pending request yields
    assert agent.pair(ORIGIN, "extension")
    assert agent.pair(OTHER_ORIGIN, "latest")


# --- 8: a refused PIN ends the sessions that relied on the card's verified state ---------


def test_another_clients_wrong_pin_ends_the_session_visibly(agent: Agent) -> None:
    """The card has one verified state; another client's wrong PIN clears it. The agent
    used to keep the first client's session, which then met `session_required` from the
    card. Now that session ends with the card's state, and the client is told why."""
    first, second = agent.pair(ORIGIN, "first"), agent.pair(OTHER_ORIGIN, "second")
    with agent.client(ORIGIN, first) as a, agent.client(OTHER_ORIGIN, second) as b:
        assert agent.verify(a).status_code == 200
        sign_ok(agent, a)
        assert_error(agent.verify(b, "31415926"), 403, "pin_incorrect")
        assert not agent.card_verified()
        # The agent's view agrees with the card's, before anything is sent to the card.
        assert len(agent.runtime.service.sessions) == 0
        before = agent.signatures_made()
        error = assert_error(a.post("/v1/sign", json=sign_body()), 401, "session_required")
        assert error["details"] == {"reason": "card_verification_lost"}
        assert "another client" in error["message"]
        assert agent.signatures_made() == before
        ended = [r for r in agent.audit_records() if r["event"] == "session_end"]
        assert ended[-1]["reason"] == "card_verification_lost"
        assert ended[-1]["clients"] == [agent.client_id("first")]
        # Told once; verifying again starts a new session.
        assert_error(a.post("/v1/sign", json=sign_body()), 401, "session_required")
        assert agent.verify(a).status_code == 200
        sign_ok(agent, a)


def test_another_clients_right_pin_leaves_the_session(agent: Agent) -> None:
    first, second = agent.pair(ORIGIN, "first"), agent.pair(OTHER_ORIGIN, "second")
    with agent.client(ORIGIN, first) as a, agent.client(OTHER_ORIGIN, second) as b:
        assert agent.verify(a).status_code == 200
        assert agent.verify(b).status_code == 200
        assert agent.pins_presented() >= 2
        sign_ok(agent, a)
        sign_ok(agent, b)


def test_the_holders_own_wrong_pin_ends_its_session(agent: Agent, client: httpx.Client) -> None:
    assert agent.verify(client).status_code == 200
    assert_error(agent.verify(client, "31415926"), 403, "pin_incorrect")
    assert not agent.card_verified()
    assert_error(client.post("/v1/sign", json=sign_body()), 401, "session_required")
    assert agent.verify(client).status_code == 200
    sign_ok(agent, client)

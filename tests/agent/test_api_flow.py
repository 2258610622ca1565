"""PIN policy, signing sessions and the event WebSocket, end to end over real HTTP.

On every backend (the software card in process, behind pcscd, in a softskf token): tests
read the card's real PIN counter and verified state, count the PINs and signature
commands it got, and pull or insert it (tests/pcscd_support.py `CardHandle`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from agent.vocabulary import ErrorCode
from card.crypto.certs import certificate_from_pem, parse_certificate
from card.crypto.sm2 import der_to_raw, sm2_e, sm2_verify_digest
from tests.agent.conftest import (
    CARD_PIN,
    ORIGIN,
    OTHER_ORIGIN,
    Agent,
    assert_error,
    sign_body,
)

WRONG_PINS = ("31415926", "27182818", "14142135", "17320508", "22360679", "26457513")


def pin_state(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/v1/pin")
    assert r.status_code == 200, r.text
    state: dict[str, Any] = r.json()
    return state


def sign_ok(agent: Agent, client: httpx.Client, data: bytes = b"invoice 42") -> dict[str, Any]:
    r = client.post("/v1/sign", json=sign_body(data))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# --- PIN ------------------------------------------------------------------------------


def test_wrong_pin_counts_down_then_right_pin_resets(agent: Agent, client: httpx.Client) -> None:
    assert pin_state(client) == {"tries_left": 10, "blocked": False, "verified": False}
    for n, pin in enumerate(WRONG_PINS[:3], start=1):
        error = assert_error(agent.verify(client, pin), 403, "pin_incorrect")
        assert error["details"] == {"tries_left": 10 - n}
        assert pin_state(client)["tries_left"] == 10 - n
        assert agent.pin_tries_left() == 10 - n
    r = agent.verify(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["card"]["card_number"].endswith("2345")
    assert body["card"]["card_number"].startswith("*")
    assert 0 < body["session"]["expires_in_s"] <= 180
    assert pin_state(client) == {"tries_left": None, "blocked": False, "verified": True}
    assert agent.pin_tries_left() == 10
    assert agent.card_verified()
    results = [(r["result"], r.get("error")) for r in agent.audit_records()]
    assert results == [("failed", "pin_incorrect")] * 3 + [("ok", None)]


def test_pin_floor_refuses_the_last_tries_without_confirmation(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(security={"pin_floor": 2})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        for pin in (WRONG_PINS * 2)[:8]:
            assert_error(agent.verify(c, pin), 403, "pin_incorrect")
        assert pin_state(c)["tries_left"] == 2

        # At the floor: refused before VERIFY, whatever the PIN (even the right one).
        since = agent.pins_presented()
        for pin in (WRONG_PINS[0], CARD_PIN):
            error = assert_error(agent.verify(c, pin), 409, "pin_tries_low")
            assert error["details"] == {"tries_left": 2}
            error = assert_error(
                agent.verify(c, pin, confirm_final_try=False), 409, "pin_tries_low"
            )
        assert agent.pins_presented() == since
        assert pin_state(c)["tries_left"] == 2
        assert agent.pin_tries_left() == 2

        # Confirmed: the try is spent.
        error = assert_error(
            agent.verify(c, WRONG_PINS[1], confirm_final_try=True), 403, "pin_incorrect"
        )
        assert error["details"] == {"tries_left": 1}
        assert pin_state(c)["tries_left"] == 1
        assert agent.pins_presented() == since + 1

        assert_error(agent.verify(c, CARD_PIN), 409, "pin_tries_low")
        assert pin_state(c)["tries_left"] == 1
        assert agent.verify(c, CARD_PIN, confirm_final_try=True).status_code == 200
        assert pin_state(c) == {"tries_left": None, "blocked": False, "verified": True}
    assert agent.pin_tries_left() == 10


def test_default_floor_keeps_the_last_try(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()  # pin_floor = 1
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        for pin in (WRONG_PINS * 2)[:9]:
            assert_error(agent.verify(c, pin), 403, "pin_incorrect")
        error = assert_error(agent.verify(c, WRONG_PINS[0]), 409, "pin_tries_low")
        assert error["details"] == {"tries_left": 1}
        assert agent.pin_tries_left() == 1
        # Spending the very last try with a wrong PIN blocks the card.
        assert_error(agent.verify(c, WRONG_PINS[0], confirm_final_try=True), 403, "pin_incorrect")
        since = agent.pins_presented()
        assert_error(agent.verify(c, CARD_PIN, confirm_final_try=True), 423, "pin_blocked")
        assert agent.pins_presented() == since
        assert pin_state(c) == {"tries_left": 0, "blocked": True, "verified": False}


def test_blocked_card_answers_423_without_sending_the_pin(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(card={"profile": "blocked-pin"})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert pin_state(c) == {"tries_left": 0, "blocked": True, "verified": False}
        for pin, confirm in ((CARD_PIN, False), (CARD_PIN, True), (WRONG_PINS[0], True)):
            assert_error(agent.verify(c, pin, confirm_final_try=confirm), 423, "pin_blocked")
        assert agent.pins_presented() == 0
        assert agent.pin_tries_left() == 0
        assert not agent.card_verified()
        assert_error(c.post("/v1/sign", json=sign_body()), 401, "session_required")
    assert agent.signatures_made() == 0
    assert [r["error"] for r in agent.audit_records()] == ["pin_blocked"] * 3


def test_sign_without_session_is_refused_before_the_card(
    agent: Agent, client: httpx.Client
) -> None:
    since = agent.card_operations()
    digest = base64.b64encode(bytes(32)).decode()
    for body in (sign_body(), {"purpose": "login", "title": "t", "digest": digest}):
        assert_error(client.post("/v1/sign", json=body), 401, "session_required")
    assert agent.card_operations() == since


# --- sessions -----------------------------------------------------------------------------


def test_verify_then_sign_gives_a_signature_that_verifies(
    agent: Agent, client: httpx.Client
) -> None:
    assert agent.verify(client).status_code == 200
    certs = client.get("/v1/card/certificates").json()
    info = parse_certificate(certificate_from_pem(certs["sign"]["pem"]))
    assert info.sm2_point is not None
    data = "单一窗口 报关单 123".encode()
    body = sign_ok(agent, client, data)
    assert body["algorithm"] == "SM2-SM3"
    assert body["certificate_number"] == certs["sign"]["certificate_number"]
    digest = base64.b64decode(body["digest"])
    assert digest == sm2_e(info.sm2_point, data)
    assert sm2_verify_digest(info.sm2_point, digest, base64.b64decode(body["signature"]))
    # Precomputed digest, DER signature format.
    r = client.post(
        "/v1/sign",
        json={
            "purpose": "agreement",
            "title": "digest",
            "digest": body["digest"],
            "signature_format": "der",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["signature_format"] == "der"
    request, outcome = agent.signature_records(r.json()["audit_id"])
    assert outcome["result"] == "ok"
    raw = der_to_raw(base64.b64decode(r.json()["signature"]))
    assert outcome["signature_sha256"] == hashlib.sha256(raw).hexdigest()
    assert request["origin"] == ORIGIN
    assert request["purpose"] == "agreement"
    assert request["digest"] == base64.b64decode(body["digest"]).hex()


def test_sessions_belong_to_the_client_that_verified(agent: Agent) -> None:
    mine, theirs = agent.pair(ORIGIN, "a"), agent.pair(OTHER_ORIGIN, "b")
    with agent.client(ORIGIN, mine) as a, agent.client(OTHER_ORIGIN, theirs) as b:
        assert agent.verify(a).status_code == 200
        assert_error(b.post("/v1/sign", json=sign_body()), 401, "session_required")
        sign_ok(agent, a)
        # Ending someone else's session is not possible: b has none, a's stays, and so
        # does the card's verified state a's session relies on.
        assert b.post("/v1/session/end", json={}).json() == {"ended": False}
        assert agent.card_verified()
        sign_ok(agent, a)
        assert a.post("/v1/session/end", json={}).json() == {"ended": True}
        assert not agent.card_verified()


def test_card_pull_ends_the_session_and_the_next_visitor_starts_clean(
    agent: Agent, client: httpx.Client
) -> None:
    assert agent.verify(client).status_code == 200
    assert agent.card_verified()
    sign_ok(agent, client)

    agent.pull_card()
    assert agent.wait_for(lambda: not agent.card_present(), timeout=2)
    error = assert_error(client.post("/v1/sign", json=sign_body()), 401, "session_required")
    assert error["code"] in list(ErrorCode)
    # Without a card, card operations say so with a documented code.
    r = client.get("/v1/pin")
    assert r.status_code == 409
    assert r.json()["error"]["code"] in ("card_missing", "card_removed")
    assert r.json()["error"]["code"] in list(ErrorCode)

    agent.insert_card()
    assert agent.wait_for(agent.card_present, timeout=2)
    assert not agent.card_verified()
    since = agent.signatures_made()
    assert_error(client.post("/v1/sign", json=sign_body()), 401, "session_required")
    assert agent.signatures_made() == since
    assert pin_state(client) == {"tries_left": 10, "blocked": False, "verified": False}
    assert agent.verify(client).status_code == 200
    sign_ok(agent, client)


def test_sign_racing_a_card_pull_fails_with_a_documented_code(
    agent: Agent, client: httpx.Client
) -> None:
    """No waiting for the pull to be noticed: whichever layer sees it first answers."""
    for _ in range(3):
        assert agent.verify(client).status_code == 200
        agent.pull_card()
        r = client.post("/v1/sign", json=sign_body())
        assert r.status_code in (401, 409), r.text
        code = r.json()["error"]["code"]
        assert code in ("session_required", "card_removed", "card_missing")
        assert code in list(ErrorCode)
        assert "signature" not in r.json()
        agent.insert_card()
        assert agent.wait_for(agent.card_present, timeout=2)
        assert not agent.card_verified()


def test_session_end_clears_the_cards_verified_state(agent: Agent, client: httpx.Client) -> None:
    assert agent.verify(client).status_code == 200
    assert agent.card_verified()
    r = client.post("/v1/session/end", json={})
    assert r.status_code == 200
    assert r.json() == {"ended": True}
    assert not agent.card_verified()  # the logout was sent before the answer
    assert_error(client.post("/v1/sign", json=sign_body()), 401, "session_required")
    assert pin_state(client)["verified"] is False
    assert client.post("/v1/session/end", json={}).json() == {"ended": False}


@pytest.mark.slow
def test_idle_session_expires_and_logs_the_card_out(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(security={"session_idle_s": 1.0})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
        sign_ok(agent, c)
        assert agent.card_verified()
        # Nobody asks: the service's expiry loop ends it and logs the card out.
        assert agent.wait_for(lambda: not agent.card_verified(), timeout=3.5)
        assert_error(c.post("/v1/sign", json=sign_body()), 401, "session_required")


@pytest.mark.slow
def test_idle_session_noticed_by_a_request_still_logs_the_card_out(
    make_agent: Callable[..., Agent],
) -> None:
    """The first to notice an expired session may be a request rather than the expiry
    loop: the card must be logged out all the same."""
    agent = make_agent(security={"session_idle_s": 1.0})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
        verified_at = time.monotonic()
        assert agent.card_verified()
        time.sleep(max(0.0, verified_at + 1.02 - time.monotonic()))
        assert_error(c.post("/v1/sign", json=sign_body()), 401, "session_required")
        assert agent.wait_for(lambda: not agent.card_verified(), timeout=3.0), (
            "the card is still verified after its session expired"
        )


@pytest.mark.slow
def test_one_clients_expiry_does_not_log_out_another_live_session(
    make_agent: Callable[..., Agent],
) -> None:
    agent = make_agent(security={"session_idle_s": 1.0})
    first, second = agent.pair(ORIGIN, "first"), agent.pair(OTHER_ORIGIN, "second")
    with agent.client(ORIGIN, first) as a, agent.client(OTHER_ORIGIN, second) as b:
        assert agent.verify(a).status_code == 200
        a_verified = time.monotonic()
        time.sleep(0.5)
        assert agent.verify(b).status_code == 200
        time.sleep(max(0.0, a_verified + 1.1 - time.monotonic()))
        # a's session is over, b's is not: b still signs, a must verify again.
        sign_ok(agent, b)
        assert_error(a.post("/v1/sign", json=sign_body()), 401, "session_required")
        assert agent.card_verified()
        # Once b's session ends too, the card is logged out.
        assert agent.wait_for(lambda: not agent.card_verified(), timeout=3.5)


# --- the agent checks the card's signature --------------------------------------------


@pytest.mark.parametrize("profile", ["legal-person-sm2", "rsa2048"])
def test_card_signature_that_does_not_verify_is_withheld(
    make_agent: Callable[..., Agent], profile: str
) -> None:
    agent = make_agent(card={"profile": profile})
    pin = "00000000" if profile == "rsa2048" else CARD_PIN
    token = agent.pair()

    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c, pin).status_code == 200
        sign_ok(agent, c)
        agent.faulty_signatures(True)
        for body in (sign_body(b"faulty card"), sign_body(b"again", signature_format="der")):
            r = c.post("/v1/sign", json=body)
            error = assert_error(r, 502, "signature_invalid")
            assert set(r.json()) == {"error"}
            assert set(error) <= {"code", "message", "details"}
            assert "signature" not in error.get("details", {})
        outcome = agent.audit_records()[-1]
        assert outcome["event"] == "sign"
        assert outcome["result"] == "failed"
        assert outcome["error"] == "signature_invalid"
        assert "algorithm" not in outcome
        request = [r for r in agent.audit_records() if r["id"] == outcome["request"]]
        assert request[0]["event"] == "sign_request"
        # A healthy card again: signing works as before.
        agent.faulty_signatures(False)
        sign_ok(agent, c)


# --- WebSocket events ------------------------------------------------------------------


async def _expect_close(ws: Any, code: int) -> None:
    """The agent says unauthorized (at most once) and closes with `code`."""
    messages: list[Any] = []
    try:
        while len(messages) < 2:
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=5)))
    except ConnectionClosed:
        pass
    assert messages in ([], [{"type": "error", "code": "unauthorized"}])
    assert ws.close_code == code


@pytest.mark.parametrize(
    "first",
    [
        json.dumps({"type": "auth", "token": "not-a-token"}),
        json.dumps({"type": "auth"}),
        json.dumps({"type": "auth", "token": ["x"]}),
        json.dumps({"type": "auth", "token": None}),
        "hello",
        "[]",
        "{",
    ],
)
def test_events_socket_without_valid_auth_is_closed_4401(agent: Agent, first: str) -> None:
    async def run() -> None:
        async with agent.ws(ORIGIN) as ws:
            await ws.send(first)
            await _expect_close(ws, 4401)

    asyncio.run(run())


def test_events_socket_refuses_a_token_from_another_origin(agent: Agent) -> None:
    theirs = agent.pair(OTHER_ORIGIN, "other")
    local = agent.pair(None, "local")

    async def run() -> None:
        for origin, token in ((ORIGIN, theirs), (ORIGIN, local), (None, theirs)):
            async with agent.ws(origin) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                await _expect_close(ws, 4401)

    asyncio.run(run())


def test_events_socket_reports_pull_and_insert_within_a_second(agent: Agent, token: str) -> None:
    async def next_event(ws: Any, kind: str, started: float) -> float:
        while True:
            remaining = started + 1.0 - time.monotonic()
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=max(remaining, 0.01)))
            if message["type"] == kind:
                return time.monotonic() - started

    async def run() -> None:
        async with agent.ws(ORIGIN) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            hello = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            assert hello["type"] == "hello"
            assert hello["card_present"] is True
            for _ in range(2):
                started = time.monotonic()
                agent.pull_card()
                assert await next_event(ws, "card_removed", started) < 1.0
                started = time.monotonic()
                agent.insert_card()
                assert await next_event(ws, "card_inserted", started) < 1.0

    asyncio.run(run())


def test_events_socket_for_a_local_tool(agent: Agent) -> None:
    local = agent.pair(None, "local")

    async def run() -> None:
        async with agent.ws(None) as ws:  # no Origin
            await ws.send(json.dumps({"type": "auth", "token": local}))
            hello = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            assert hello["type"] == "hello"

    asyncio.run(run())

"""No PIN anywhere: not in the agent's logs (DEBUG, APDU traces included), the audit
log, any response or WebSocket message, or any file in the state directory.

Flows run with distinctive PINs: the card's own, wrong ones, malformed ones, a changed
one, PINs in the wrong places (query string, text/plain body, extra fields). Each is
then searched for as text, as hex of its bytes (the PIN block on the wire) and base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from websockets.exceptions import ConnectionClosed

from tests.agent.conftest import CARD_PIN, ORIGIN, Agent, sign_body

WRONG = ("31415926", "27182818")
NEW_PIN = "16180339"
MALFORMED = ("2718 2818", "314159265358979323846", "1414\u00e9213")
ALL_PINS = (CARD_PIN, *WRONG, NEW_PIN, "314159265358979323846", "1414\u00e9213")


def forms(pin: str) -> set[bytes]:
    raw = pin.encode("utf-8")
    b64 = base64.b64encode(raw).rstrip(b"=")
    return {raw, raw.hex().encode(), raw.hex().upper().encode(), b64[: len(b64) - 1]}


def leaks(blobs: Iterable[tuple[str, bytes]]) -> list[str]:
    found = []
    for where, blob in blobs:
        for pin in ALL_PINS:
            for form in forms(pin):
                if form in blob:
                    found.append(f"{pin!r} as {form!r} in {where}")
    return found


def run_flows(agent: Agent, ws_messages: list[str]) -> None:
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert c.get("/v1/pin").json()["tries_left"] == 10
        for pin in WRONG:
            assert agent.verify(c, pin).status_code == 403
        for pin in MALFORMED:
            assert agent.verify(c, pin).status_code == 422
        assert agent.verify(c, "x" * 65).status_code == 422  # over the length limit
        # PINs where they do not belong: refused, and not echoed or logged either.
        c.get("/v1/pin/verify", params={"pin": WRONG[0]})
        c.get(f"/v1/{WRONG[1]}")
        c.post(
            "/v1/pin/verify",
            content=json.dumps({"pin": WRONG[0]}),
            headers={"Content-Type": "text/plain"},
        )
        c.post("/v1/pin/verify", json={"pin": WRONG[0], "extra": WRONG[1]})
        c.post("/v1/pin/verify", json={"pin": int(WRONG[0])})
        c.post("/v1/pin/verify", json={"pin": [WRONG[0]]})
        c.post("/v1/pin/verify", json={"pin": {"value": WRONG[0]}})
        c.post(
            "/v1/pin/verify",
            content=b'{"pin": "' + WRONG[1].encode() + b'"',
            headers={"Content-Type": "application/json"},
        )
        c.post(
            "/v1/pin/verify",
            content=b'{"pin": "' + WRONG[1].encode() + b'", "x": ' + b"[" * 50 + b"]" * 50 + b"}",
            headers={"Content-Type": "application/json"},
        )
        c.post("/v1/sign", json=sign_body(title=f"PIN {WRONG[0]}") | {"pin": WRONG[0]})

        # The real thing: verify, sign, change the PIN and back, end the session.
        assert agent.verify(c, CARD_PIN).status_code == 200
        assert c.post("/v1/sign", json=sign_body(b"leak test")).status_code == 200
        r = c.post("/v1/pin/change", json={"old_pin": WRONG[0], "new_pin": NEW_PIN})
        assert r.status_code == 403
        r = c.post("/v1/pin/change", json={"old_pin": CARD_PIN, "new_pin": MALFORMED[0]})
        assert r.status_code == 422
        r = c.post("/v1/pin/change", json={"old_pin": CARD_PIN, "new_pin": NEW_PIN})
        assert r.status_code == 200, r.text
        assert agent.verify(c, NEW_PIN).status_code == 200
        r = c.post("/v1/pin/change", json={"old_pin": NEW_PIN, "new_pin": CARD_PIN})
        assert r.status_code == 200, r.text
        assert agent.verify(c, CARD_PIN, confirm_final_try=True).status_code == 200
        assert c.post("/v1/session/end", json={}).status_code == 200

        # Card pulled mid-session, and back.
        assert agent.verify(c, CARD_PIN).status_code == 200
        agent.pull_card()
        assert agent.verify(c, WRONG[0]).status_code == 409
        agent.insert_card()
        assert agent.wait_for(agent.card_present)
        assert agent.verify(c, CARD_PIN).status_code == 200

    async def websocket() -> None:
        for first in (json.dumps({"type": "auth", "token": CARD_PIN}), WRONG[0]):
            async with agent.ws(ORIGIN) as ws:
                await ws.send(first)
                try:
                    while True:
                        ws_messages.append(str(await asyncio.wait_for(ws.recv(), 5)))
                except ConnectionClosed:
                    pass

    asyncio.run(websocket())


def test_no_pin_in_logs_audit_responses_or_state(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(security={"pin_floor": 1})
    ws_messages: list[str] = []
    run_flows(agent, ws_messages)

    log = agent.log_path.read_bytes()
    # The capture works: APDUs (PIN blocks masked) or SKF calls (names and results
    # only) at DEBUG, service and card events.
    if agent.skf is None:
        assert b"card.apdu" in log
        assert b"00200081 Lc=16 ****" in log
    else:
        assert b"card.skf.binding" in log
        assert b"SKF_VerifyPIN -> SAR_PIN_INCORRECT" in log
    assert b"card_removed" in log or b"card event" in log
    audit = agent.audit_path.read_bytes()
    assert b'"event":"pin_change"' in audit
    assert len(agent.bodies) > 30

    blobs: list[tuple[str, bytes]] = [("agent log", log), ("audit log", audit)]
    blobs += [(f"response {i}", body) for i, body in enumerate(agent.bodies)]
    blobs += [(f"ws message {i}", m.encode()) for i, m in enumerate(ws_messages)]
    # Every file of the agent: not the SKF token's store, which is the card's own
    # memory (it holds the PIN, as the card does), not the agent's.
    token = agent.skf.library_path.parent if agent.skf is not None else None
    files = [
        p
        for p in agent.root.rglob("*")
        if p.is_file() and (token is None or token not in p.parents)
    ]
    assert any(p.name == "pairing.json" for p in files)
    blobs += [(str(p.relative_to(agent.root)), p.read_bytes()) for p in files]
    assert leaks(blobs) == []


def test_no_bearer_token_in_logs_audit_or_state(make_agent: Callable[..., Agent]) -> None:
    """Tokens are secrets too: the events socket carries one in its first message, and
    websockets logs every frame at DEBUG unless the agent redacts them."""
    agent = make_agent()
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
        assert c.post("/v1/sign", json=sign_body()).status_code == 200

    async def websocket() -> None:
        async with agent.ws(ORIGIN) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "hello"
            agent.pull_card()
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "card_removed"

    asyncio.run(websocket())
    log = agent.log_path.read_bytes()
    assert b"< TEXT [" in log  # frames were logged, as opcode and length
    secret = token.encode()
    assert secret not in log
    assert secret not in agent.audit_path.read_bytes()
    for path in agent.state_dir.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path


def test_leak_search_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The search itself: a PIN as text, as a hex PIN block and as base64 is found."""
    block = CARD_PIN.encode() + b"\xff" * 8
    assert leaks([("x", b"verify " + CARD_PIN.encode())])
    assert leaks([("x", block.hex().upper().encode())])
    assert leaks([("x", base64.b64encode(WRONG[0].encode()))])
    assert not leaks([("x", b"00200081 Lc=16 ********************************")])

"""Pages that vanish mid-request, many pages, and the endpoint's lifecycle."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import cast

import pytest

from agent.compat.server import CompatLimits, CompatServer, OriginPolicy
from agent.service import CardService

from .conftest import agent_factory
from .harness import CARD_PIN, CompatAgent, loopback_socket, ok_data


def test_a_page_closing_mid_request_leaves_the_agent_healthy(agent: CompatAgent) -> None:
    agent.slow_signatures(0.6)  # a slow card signature
    page = agent.client()
    page.send(
        json.dumps(
            {
                "_method": "cus-sec_SpcSignDataAsPEM",
                "_id": 1,
                "args": {"inData": "gone", "passwd": CARD_PIN},
            }
        )
    )
    assert agent.wait_for(lambda: agent.runtime.owner.health().busy_for_s is not None, 5)
    page.close()  # the visitor closed the tab while the card was signing
    # The card job finishes; nothing stays stuck and the card is left unverified (the
    # connection's session was ended and the card's verified state cleared).
    assert agent.wait_for(lambda: agent.runtime.owner.health().busy_for_s is None, 10)
    assert agent.wait_for(lambda: not agent.card_verified(), 10)
    assert len(agent.runtime.service.sessions) == 0
    agent.slow_signatures(0)
    started = time.monotonic()
    with agent.client() as page:
        assert ok_data(page.call("cus-sec_SpcGetCardID")) == [agent.card_data.card_number]
        ok_data(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "next", "passwd": CARD_PIN}))
    assert time.monotonic() - started < 5
    # The interrupted signature was still recorded: an audit id names every card signing.
    signs = [r for r in agent.audit_records() if r["event"] == "sign"]
    assert [r["result"] for r in signs] == ["ok", "ok"]


def test_a_lone_surrogate_id_is_answered_and_the_page_stays_connected(
    agent: CompatAgent,
) -> None:
    # Found by tests/fuzz/fuzz_compat.py: the reply echoed `_id` with a lone surrogate
    # (from a valid "\\ud800" escape) and could not be sent; the connection broke.
    number = agent.card_data.card_number
    with agent.client() as page:
        page.send('{"_method":"cus-sec_SpcGetCardID","_id":"t\\ud800"}')
        frame = page.recv()
        assert frame["_id"] == "t\ud800"
        assert ok_data(frame["_args"]) == [number]
        assert ok_data(page.call("cus-sec_SpcGetCardID")) == [number]


def test_closing_the_page_clears_the_card(agent: CompatAgent) -> None:
    with agent.client() as page:
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        assert agent.card_verified()
    assert agent.wait_for(lambda: not agent.card_verified())
    assert len(agent.runtime.service.sessions) == 0


def test_concurrent_pages_are_served_one_card_call_at_a_time(agent: CompatAgent) -> None:
    pages = [agent.client() for _ in range(4)]
    try:
        body = {"_method": "cus-sec_SpcSignRandom", "args": {"random": "r", "passwd": CARD_PIN}}
        for number, page in enumerate(pages):
            page.send(json.dumps({**body, "_id": number}))
        for number, page in enumerate(pages):
            frame = page.recv()
            assert frame["_id"] == number
            assert frame["_args"]["Result"] is True
    finally:
        for page in pages:
            page.close()


def test_stopping_the_agent_with_a_page_open(tmp_path: Path) -> None:
    with agent_factory(tmp_path) as start:
        agent = start()
        page = agent.client()
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        assert agent.card_verified()
    # Stopping closed the page's connection, which ended its session and cleared the
    # card before the card owner stopped (the harness checks that the server stopped).
    assert not agent.card_verified()
    page.close()


def _bare_server(port: int) -> CompatServer:
    # Starting and stopping never calls the service: no card needed for these two.
    return CompatServer(
        cast(CardService, None),
        host="127.0.0.1",
        port=port,
        policy=OriginPolicy(frozenset(), singlewindow=True),
        limits=CompatLimits(max_frame_bytes=1024, max_message_units=1024, max_data_bytes=1024),
    )


def test_a_taken_port_fails_the_start_cleanly() -> None:
    taken = loopback_socket()
    taken.listen()
    try:
        with pytest.raises(OSError):
            asyncio.run(_bare_server(taken.getsockname()[1]).start())
    finally:
        taken.close()


def test_start_and_stop_on_their_own() -> None:
    async def cycle() -> int | None:
        server = _bare_server(0)
        await server.start()
        port = server.port
        await server.stop()
        await server.stop()  # idempotent
        return port

    port = asyncio.run(cycle())
    assert port
    with socket.create_server(("127.0.0.1", port)):  # released
        pass

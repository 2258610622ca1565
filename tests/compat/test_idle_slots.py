"""Idle pages cannot hold the endpoint's connection slots (reliability finding 3).

Pages keep one socket each and the endpoint serves a few at a time. Sockets that answer
pings but send nothing held every slot, so the next visitor's page got 403. Now an idle
connection is closed after `compat.idle_timeout_s`, and a new page takes the slot of
the connection that has been idle longest; only when every slot is busy with a request
is a new page refused.
"""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import StartAgent
from .harness import CARD_PIN, CompatAgent, CompatClient, ok_data

SLOTS = 3


def closed_with(page: CompatClient, timeout: float = 5.0) -> int | None:
    """The close code the server sent, or None if the page is still open."""
    try:
        page.ws.recv(timeout=timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None
    except TimeoutError:
        return None
    raise AssertionError("the idle page received a message")


def test_the_longest_idle_page_yields_its_slot(start_agent: StartAgent) -> None:
    agent = start_agent(compat={"max_connections": SLOTS})
    pages = [agent.client() for _ in range(SLOTS)]
    try:
        ok_data(pages[0].call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        time.sleep(0.05)
        for page in pages[1:]:
            ok_data(page.call("cus-sec_SpcGetCardID"))  # more recently active than pages[0]
        with agent.client() as newcomer:  # the next visitor's page
            assert ok_data(newcomer.call("cus-sec_SpcGetCardID")) == [agent.card_data.card_number]
            assert closed_with(pages[0]) == 1001
            # Its session ended with it: the card is no longer verified for anyone.
            assert agent.wait_for(lambda: not agent.card_verified())
            for page in pages[1:]:
                assert ok_data(page.call("cus-sec_SpcGetCardID"))
    finally:
        for page in pages:
            page.close()


def test_a_page_is_refused_only_when_every_slot_is_busy(start_agent: StartAgent) -> None:
    agent = start_agent(compat={"max_connections": SLOTS})
    agent.slow_signatures(0.5)  # a slow card signature
    pages = [agent.client() for _ in range(SLOTS)]
    try:
        body = {"_method": "cus-sec_SpcSignRandom", "args": {"random": "r", "passwd": CARD_PIN}}
        for number, page in enumerate(pages):
            page.send(json.dumps({**body, "_id": number}))
        time.sleep(0.2)
        with pytest.raises(InvalidStatus):
            agent.client()
        for page in pages:
            assert page.recv()["_args"]["Result"] is True
    finally:
        agent.slow_signatures(0)
        for page in pages:
            page.close()


def test_idle_pages_are_closed_after_the_idle_timeout(start_agent: StartAgent) -> None:
    agent: CompatAgent = start_agent(compat={"idle_timeout_s": 1})
    page = agent.client()
    try:
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        assert agent.card_verified()
        assert closed_with(page, timeout=5.0) == 1001
        assert agent.wait_for(lambda: not agent.card_verified())
        assert len(agent.runtime.service.sessions) == 0
    finally:
        page.close()

"""A vendor SKF library that hangs in a call is a job timeout, not a frozen agent.

The owner thread is the only caller of the library, so a hung call holds it: the card
job answers `timeout` at its deadline, jobs behind it too, and everything that does not
need the card (status, the events socket, the health the watchdog reads) keeps
answering. When the call returns, the owner re-opens the driver and serves again.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.agent.conftest import ORIGIN, Agent, assert_error, sign_body

pytestmark = pytest.mark.skf

JOB_TIMEOUT_S = 2.0


@pytest.mark.parametrize("backend_kind", [pytest.param("skf", marks=pytest.mark.skf)])
@pytest.mark.parametrize("function", ["SKF_GetPINInfo", "SKF_ECCSignData"])
def test_a_hanging_skf_call_times_out_and_the_agent_stays_responsive(
    make_agent: Callable[..., Agent], function: str
) -> None:
    agent = make_agent(card={"job_timeout_s": JOB_TIMEOUT_S})
    assert agent.skf is not None
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
    agent.skf.control.hang(function)

    results: dict[str, httpx.Response] = {}

    def card_call(name: str) -> None:
        with agent.client(ORIGIN, token) as c:
            if function == "SKF_ECCSignData":
                results[name] = c.post("/v1/sign", json=sign_body())
            else:
                results[name] = c.get("/v1/pin")

    first = threading.Thread(target=card_call, args=("first",), daemon=True)
    started = time.monotonic()
    first.start()
    agent.skf.control.wait_until_hanging(function)
    second = threading.Thread(target=card_call, args=("second",), daemon=True)
    second.start()  # queued behind the hung call

    # Nothing that does not need the card waits for it.
    with httpx.Client(base_url=agent.base_url, timeout=2.0, trust_env=False) as plain:
        for _ in range(5):
            asked = time.monotonic()
            status = plain.get("/v1/status")
            assert status.status_code == 200
            assert status.json()["card_present"] is True
            assert time.monotonic() - asked < 1.0
            time.sleep(0.1)

    async def events_hello() -> dict[str, object]:
        async with agent.ws(ORIGIN) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            hello: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 2))
            return hello

    assert asyncio.run(events_hello())["type"] == "hello"

    first.join(JOB_TIMEOUT_S + 5)
    second.join(JOB_TIMEOUT_S + 5)
    assert not first.is_alive()
    assert not second.is_alive()
    assert time.monotonic() - started < 2 * JOB_TIMEOUT_S + 3
    assert_error(results["first"], 504, "timeout")
    assert_error(results["second"], 504, "timeout")
    # What the systemd watchdog decides from: the owner is stuck in the library.
    health = agent.runtime.owner.health()
    assert health.thread_alive
    assert health.stuck(1.0)
    assert health.job_label in ("pin_status", "sign")

    # The call returns: the agent serves again, without a restart.
    agent.skf.control.hang(None)
    deadline = time.monotonic() + 10
    with agent.client(ORIGIN, token) as c:
        while (r := c.get("/v1/pin")).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.1)
        assert not agent.runtime.owner.health().stuck(5.0)
        # The overrun re-opened the driver, which starts logged out: verify again.
        assert agent.verify(c).status_code == 200
        assert c.post("/v1/sign", json=sign_body()).status_code == 200

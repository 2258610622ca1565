"""A hung pcscd (stopped, not dead) must not freeze the agent (reliability finding 1).

pcsc-lite's SCardCancel opens a new connection to pcscd and waits for its answer
without a timeout; the agent used it to wake the card owner thread from the event loop,
so a stopped pcscd froze the API, the events socket and the watchdog pings with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest

from tests.agent.conftest import ORIGIN, Agent, assert_error
from tests.pcscd_support import PcscDaemon

pytestmark = pytest.mark.pcsc

JOB_TIMEOUT_S = 3.0


@pytest.mark.parametrize("backend_kind", [pytest.param("pcsc", marks=pytest.mark.pcsc)])
def test_status_answers_and_card_calls_time_out_while_pcscd_is_stopped(
    make_agent: Callable[..., Agent], pcscd: PcscDaemon
) -> None:
    agent = make_agent(card={"job_timeout_s": JOB_TIMEOUT_S})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert c.get("/v1/pin").status_code == 200
    # Let the owner thread go back to waiting for reader events inside pcscd.
    time.sleep(0.3)

    results: dict[str, httpx.Response] = {}

    def card_call() -> None:
        with agent.client(ORIGIN, token) as c:
            results["pin"] = c.get("/v1/pin")

    with pcscd.frozen():
        # This request makes the loop wake the owner thread: the wake-up must not go
        # through pcscd on the event loop.
        caller = threading.Thread(target=card_call, daemon=True)
        caller.start()
        time.sleep(0.2)
        with httpx.Client(base_url=agent.base_url, timeout=2.0, trust_env=False) as c:
            for _ in range(5):
                started = time.monotonic()
                status = c.get("/v1/status")
                assert status.status_code == 200
                assert time.monotonic() - started < 1.0
                time.sleep(0.2)
        caller.join(JOB_TIMEOUT_S + 5)
        assert not caller.is_alive(), "the card call got no answer while pcscd was stopped"
        assert_error(results["pin"], 504, "timeout")
        # What the systemd watchdog decides from: the owner's health, readable while the
        # owner thread is stuck in pcscd, and stuck once that lasts.
        health = agent.runtime.owner.health()
        assert health.thread_alive
        assert health.stuck(1.0)

    # pcscd continues: the agent recovers without a restart.
    deadline = time.monotonic() + 15
    while True:
        with agent.client(ORIGIN, token) as c:
            r = c.get("/v1/pin")
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert not agent.runtime.owner.health().stuck(5.0)

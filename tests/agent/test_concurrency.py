"""Many callers, one card: everything serialized, excess callers told to come back."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.agent.conftest import ORIGIN, Agent, assert_error, sign_body


def server_timing(response: httpx.Response) -> dict[str, float]:
    """`card;dur=1.234, queue;dur=0.5` -> {"card": 1.234, "queue": 0.5}"""
    out: dict[str, float] = {}
    for metric in response.headers["server-timing"].split(","):
        name, _, params = metric.strip().partition(";")
        key, _, value = params.strip().partition("=")
        assert key == "dur"
        out[name] = float(value)
    return out


def record_card_jobs(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, float, float, int]]:
    """Instrument the card owner: (label, start, end, thread) of every job it runs."""
    jobs: list[tuple[str, float, float, int]] = []
    owner = agent.runtime.owner
    run = owner.run

    async def timed_run(fn: Callable[[Any], Any], *, timeout: float, label: str) -> Any:
        def timed(driver: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(driver)
            finally:
                jobs.append((label, start, time.perf_counter(), threading.get_ident()))

        return await run(timed, timeout=timeout, label=label)

    monkeypatch.setattr(owner, "run", timed_run)
    return jobs


async def sign_concurrently(agent: Agent, token: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with agent.async_client(ORIGIN, token, limits=limits) as c:
        return await asyncio.gather(
            *(
                c.post("/v1/sign", json=sign_body(f"document {i}".encode(), title=f"doc-{i}"))
                for i in range(n)
            )
        )


def test_100_concurrent_signatures_are_serialized_on_the_card(
    make_agent: Callable[..., Agent], monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_agent(card={"queue_size": 128})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
    jobs = record_card_jobs(agent, monkeypatch)
    before = len(agent.audit_records())
    signatures_before = agent.signatures_made()

    started = time.perf_counter()
    responses = asyncio.run(sign_concurrently(agent, token, 100))
    wall_ms = (time.perf_counter() - started) * 1000

    assert [r.status_code for r in responses] == [200] * 100, [
        r.text for r in responses if r.status_code != 200
    ][:3]
    bodies = [r.json() for r in responses]
    assert len({b["signature"] for b in bodies}) == 100
    assert len({b["audit_id"] for b in bodies}) == 100

    # Server-Timing: the card time of each request; serialized, they fit in the wall time.
    timings = [server_timing(r) for r in responses]
    assert all(t["card"] > 0 and t["queue"] >= 0 for t in timings)
    assert sum(t["card"] for t in timings) <= wall_ms
    assert max(t["queue"] for t in timings) > 0  # somebody did wait for the card

    # Instrumented: one thread ran every card job, and no two overlapped.
    signs = sorted(j for j in jobs if j[0] == "sign")
    assert len(signs) == 100
    assert {j[3] for j in jobs} == {agent.runtime.owner.thread_id}
    ordered = sorted(jobs, key=lambda j: j[1])
    for earlier, later in itertools.pairwise(ordered):
        assert later[1] >= earlier[2], f"{later[0]} started before {earlier[0]} ended"

    # The card signed 100 times; over APDUs each signature was one uninterrupted MSE +
    # PSO pair (an SKF signature is one call: nothing to interleave).
    assert agent.signatures_made() - signatures_before == 100
    if agent.skf is None:
        sequence = [a[1] for a in agent.apdus if a[1] in (0x22, 0x2A)]
        assert sequence[-200:] == [0x22, 0x2A] * 100

    new_records = agent.audit_records()[before:]
    outcomes = [r for r in new_records if r["event"] == "sign"]
    requests = {r["id"]: r for r in new_records if r["event"] == "sign_request"}
    assert len(outcomes) == 100
    assert all(r["result"] == "ok" for r in outcomes)
    # The audit id handed out names the request record; its outcome names it too.
    assert {r["request"] for r in outcomes} == {b["audit_id"] for b in bodies} == set(requests)
    assert {r["title"] for r in requests.values()} == {f"doc-{i}" for i in range(100)}


def test_full_queue_answers_503_busy_with_retry_after(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(card={"queue_size": 2, "timing": "realistic"})
    token = agent.pair()
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
    before = len(agent.audit_records())

    responses = asyncio.run(sign_concurrently(agent, token, 12))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    busy = [r for r in responses if r.status_code == 503]
    assert busy, statuses
    # A full queue's worth at least (the running job too, once the owner thread has
    # picked it up: waking it from its PC/SC wait takes a thread hop).
    assert statuses.count(200) >= 2
    for r in busy:
        assert_error(r, 503, "busy")
        assert int(r.headers["retry-after"]) >= 1
        assert "signature" not in r.text
    records = [r for r in agent.audit_records()[before:] if r["event"] == "sign"]
    assert sorted(r.get("error", "ok") for r in records) == sorted(
        ["busy"] * len(busy) + ["ok"] * statuses.count(200)
    )
    # Once the queue drains, the card is there for the next caller.
    with agent.client(ORIGIN, token) as c:
        assert c.post("/v1/sign", json=sign_body()).status_code == 200

"""Slow and idle connections cannot make the agent unreachable (reliability finding 2).

Run as `card-agent serve` under the open-files limit systemd gives a service by default
(1024), the way the adversarial run found it: 1,100 idle connections made a legitimate
request time out and the log filled with "Too many open files" tracebacks; slowloris
connections (headers trickling in) were never closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Origin

from agent.pairing import PairingStore
from tests.ops.conftest import (
    ORIGIN,
    AgentProcess,
    free_port,
    http_status,
    skip_or_fail,
    start_agent,
    write_config,
)

IDLE_CONNECTIONS = 1100


@contextlib.contextmanager
def open_files_limit(at_least: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= at_least:
        yield
        return
    if hard != resource.RLIM_INFINITY and hard < at_least:
        pytest.skip(f"this test needs {at_least} open files (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (at_least, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_idle(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            continue  # the agent may refuse early: that is allowed, hanging is not
        sockets.append(s)
    return sockets


def closed_by_peer(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)
    # A refusal may come with a short error response before the close.
    return data == b"" or data.startswith(b"HTTP/1.1 503")


def test_idle_connections_under_the_default_fd_limit(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        skip_or_fail("prlimit (util-linux) is not installed")
    config = write_config(tmp_path)
    agent = start_agent(agent_process, config, prefix=[prlimit, "--nofile=1024:1024", "--"])
    with open_files_limit(IDLE_CONNECTIONS + 256):
        idle = connect_idle(agent.port, IDLE_CONNECTIONS)
        try:
            time.sleep(1.0)  # let the agent accept (or refuse) them all
            started = time.monotonic()
            status = http_status(agent.port, timeout=5.0)
            assert status is not None, "a legitimate request got no answer"
            assert time.monotonic() - started < 3.0
        finally:
            for s in idle:
                s.close()
    time.sleep(0.5)
    assert http_status(agent.port, timeout=5.0) is not None
    lines = agent.output().splitlines()
    assert len(lines) < 100, f"{len(lines)} log lines; the first: {lines[:20]}"


def test_slow_headers_are_cut_off(tmp_path: Path, agent_process: list[AgentProcess]) -> None:
    config = write_config(tmp_path, server_extra="request_timeout_s = 2")
    agent = start_agent(agent_process, config)
    slow = connect_idle(agent.port, 50)
    try:
        deadline = time.monotonic() + 8.0
        open_ = list(slow)
        while open_ and time.monotonic() < deadline:
            for s in open_:
                with contextlib.suppress(OSError):
                    s.send(b"G")  # a header byte now and then: never a whole request
            time.sleep(0.5)
            open_ = [s for s in open_ if not closed_by_peer(s)]
        assert not open_, f"{len(open_)} of {len(slow)} slow connections still open after 8 s"
        assert http_status(agent.port, timeout=2.0) is not None
    finally:
        for s in slow:
            s.close()


def test_websockets_outlive_the_request_timeout(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    """The request timeout is for connections that have not sent a request; a WebSocket
    sent its upgrade and then may stay quiet for long. Found by the soak run: both the
    events socket and every compat page were cut off `request_timeout_s` after the
    upgrade (the timer was re-armed after the upgrade request had been handed over)."""
    compat_port = free_port()
    page_origin = "http://127.0.0.1:8080"
    config = write_config(
        tmp_path,
        server_extra="request_timeout_s = 1",
        extra=(
            f'[compat]\nenabled = true\nport = {compat_port}\nallowed_origins = ["{page_origin}"]'
        ),
    )
    agent = start_agent(agent_process, config)
    token = pair_local(agent.port, tmp_path / "state" / "pairing.json")

    async def quiet_sockets() -> None:
        async with (
            ws_connect(f"ws://127.0.0.1:{agent.port}/v1/events", origin=Origin(ORIGIN)) as events,
            ws_connect(f"ws://127.0.0.1:{compat_port}/", origin=Origin(page_origin)) as page,
        ):
            await events.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await asyncio.wait_for(events.recv(), 5))["type"] == "hello"
            assert json.loads(await asyncio.wait_for(page.recv(), 5))["_method"] == "open"
            await asyncio.sleep(3.0)  # three request timeouts, nothing sent
            await page.send(
                json.dumps(
                    {"_method": "cus-sec_SpcSHA1DigestAsPEM", "_id": 1, "args": {"szInfo": "x"}}
                )
            )
            reply = json.loads(await asyncio.wait_for(page.recv(), 5))
            assert reply["_args"]["Result"] is True, reply
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(events.recv(), 0.2)  # open, with nothing to say

    asyncio.run(quiet_sockets())
    assert "no complete request" not in agent.output()


def pair_local(port: int, pairing_file: Path) -> str:
    """Pair the extension's origin the real way (ask, approve in the store, claim)."""
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Origin": ORIGIN}, trust_env=False
    ) as c:
        req = c.post("/v1/pair", json={"client_name": "websocket test"}).json()
        PairingStore(pairing_file).approve(req["code"])
        r = c.post("/v1/pair/claim", json={"request_id": req["request_id"]})
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token

"""A Single Window page on the official client's WebSocket protocol (docs/compat.md):
connect, wait for the greeting, sign with `cus-sec_SpcSignDataAsPEM` and `passwd` (the
PIN is verified on every call, as pages do), and load the page again every few
requests (a new connection, a new caller identity).

The protocol returns no audit id, so every request carries a unique `title` (the
protocol extension docs/compat.md describes): the books find its audit record by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Origin

from soak.load import LoadContext
from soak.native import PIN
from soak.recorder import SignAck

COMPAT_ORIGIN = "http://127.0.0.1:8080"  # configured in compat.allowed_origins
REQUESTS_PER_PAGE = 10
REPLY_TIMEOUT_S = 60.0
OPEN_TIMEOUT_S = 10.0
SIGN_METHOD = "cus-sec_SpcSignDataAsPEM"


def _reply_code(reply: Any, method: str, request_id: int) -> str | None:
    """None for a successful signature, else the `Err:` code (or `bad_response`)."""
    if not isinstance(reply, dict) or reply.get("_method") != method:
        return "bad_response"
    if reply.get("_id") != request_id:
        return "bad_response"
    args = reply.get("_args")
    if not isinstance(args, dict):
        return "bad_response"
    if args.get("Result") is True:
        data = args.get("Data")
        ok = isinstance(data, list) and len(data) == 2 and all(isinstance(d, str) for d in data)
        return None if ok else "bad_response"
    error = args.get("Error")
    if isinstance(error, list) and len(error) == 2 and isinstance(error[1], str):
        return str(error[1])
    return "bad_response"


class _PageGone(Exception):
    """The connection dropped (the agent was killed or restarted): load the page again."""


async def _page(ctx: LoadContext, url: str, page: int) -> None:
    started = time.monotonic()
    try:
        async with ws_connect(
            url, origin=Origin(COMPAT_ORIGIN), open_timeout=OPEN_TIMEOUT_S, max_size=None
        ) as ws:
            try:
                greeting = json.loads(await asyncio.wait_for(ws.recv(), OPEN_TIMEOUT_S))
            except (websockets.ConnectionClosed, TimeoutError) as exc:
                ctx.recorder.unanswered("compat_connect", exc)
                return
            ok = isinstance(greeting, dict) and greeting.get("_method") == "open"
            ctx.recorder.answered("compat_connect", started, None if ok else "bad_response")
            for n in range(1, REQUESTS_PER_PAGE + 1):
                if ctx.stopping.is_set():
                    return
                await _sign(ctx, ws, page, n)
                await ctx.sleep(ctx.rng.uniform(0.5, 2.0))
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        ctx.recorder.unanswered("compat_connect", exc)


async def _sign(ctx: LoadContext, ws: ClientConnection, page: int, n: int) -> None:
    title = f"soak compat page {page} doc {n}"
    in_data = f"<soak page='{page}' n='{n}'>" + ctx.rng.randbytes(ctx.rng.randint(100, 1500)).hex()
    request = {
        "_method": SIGN_METHOD,
        "_id": n,
        "args": {"inData": in_data, "passwd": PIN, "title": title, "purpose": "application"},
    }
    started = time.monotonic()
    try:
        await ws.send(json.dumps(request))
    except websockets.ConnectionClosed:
        # Closed while the page was idle: the request never left.
        ctx.recorder.notes["compat_connection_dropped"] += 1
        raise _PageGone() from None
    try:
        text = await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S)
    except (websockets.ConnectionClosed, TimeoutError) as exc:
        ctx.recorder.unanswered("compat_sign", exc)
        raise _PageGone() from None
    try:
        reply = json.loads(text)
    except ValueError:
        reply = None
    code = _reply_code(reply, SIGN_METHOD, n)
    ctx.recorder.answered("compat_sign", started, code)
    if code is None:
        ctx.recorder.ack(SignAck("compat", title, None, time.time()))


async def compat_page(ctx: LoadContext, url: str) -> None:
    page = 0
    while not ctx.stopping.is_set():
        page += 1
        # The context manager's closing handshake can fail on a dead connection too.
        with contextlib.suppress(_PageGone, websockets.ConnectionClosed):
            await _page(ctx, url, page)
        await ctx.sleep(0.5)

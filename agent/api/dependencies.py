"""FastAPI dependencies: the API context, and the caller a bearer token names."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request, WebSocket

from agent.api.context import ApiContext
from agent.errors import AgentError
from agent.service import Caller
from agent.vocabulary import ErrorCode


def _context_of(app_state: object) -> ApiContext:
    context = getattr(app_state, "context", None)
    assert isinstance(context, ApiContext), "create_app sets app.state.context"
    return context


async def api_context(request: Request) -> ApiContext:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
    # request for an attribute read.
    return _context_of(request.app.state)


def ws_context(websocket: WebSocket) -> ApiContext:
    return _context_of(websocket.app.state)


Context = Annotated[ApiContext, Depends(api_context)]


async def authenticated_caller(request: Request, context: Context) -> Caller:
    # async, like every dependency here (a lookup and one os.stat: no thread hop).
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AgentError(ErrorCode.UNAUTHORIZED, 401, "Pair with the kiosk first (missing token).")
    origin = request.headers.get("origin")
    pairing = context.pairing
    client, touch_due = pairing.lookup(token.strip(), origin)
    if client is not None and touch_due:
        # At most once a minute per client: a locked write with fsync, off the loop.
        client = await asyncio.to_thread(pairing.authenticate, token.strip(), origin)
    if client is None:
        raise AgentError(ErrorCode.UNAUTHORIZED, 401, "Unknown, revoked or foreign token.")
    return Caller(client.client_id, origin, client.client_name)


Authenticated = Annotated[Caller, Depends(authenticated_caller)]

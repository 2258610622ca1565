"""`/v1/events`: card and reader events over a WebSocket.

The first message must be `{"type": "auth", "token": "..."}` within 5 s; anything else
(silence, a binary frame, not JSON, a token that is not text or not valid for this
origin) is answered `{"type": "error", "code": "unauthorized"}` and closed with 4401.
Then `{"type": "hello", reader_present, card_present}` and one message per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from agent.api.dependencies import ws_context
from agent.service import CardEvent
from agent.text import is_text

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

AUTH_TIMEOUT_S = 5.0
QUEUE_LIMIT = 64  # a client that stops reading loses events, never the agent's memory


@router.websocket("/v1/events")
async def events(ws: WebSocket) -> None:
    """Card and reader events. First message must be {"type":"auth","token":...}."""
    context = ws_context(ws)
    await ws.accept()
    token = await _first_message_token(ws)
    if (
        token is None
        or await asyncio.to_thread(context.pairing.authenticate, token, ws.headers.get("origin"))
        is None
    ):
        log.info("events: unauthenticated connection closed (4401)")
        with contextlib.suppress(Exception):
            await ws.send_json({"type": "error", "code": "unauthorized"})
            await ws.close(code=4401)
        return
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=QUEUE_LIMIT)

    def on_event(event: CardEvent) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait({"type": event.kind, "reader": event.reader})

    service = context.service
    service.subscribe(on_event)

    async def watch_disconnect() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say after auth; ignore chatter

    watcher = asyncio.create_task(watch_disconnect())
    try:
        state = service.card_state
        await ws.send_json(
            {
                "type": "hello",
                "reader_present": state.reader_present,
                "card_present": state.card_present,
            }
        )
        while not watcher.done():
            getter = asyncio.create_task(queue.get())
            done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                await ws.send_json(getter.result())
            else:
                getter.cancel()
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        watcher.cancel()
        service.unsubscribe(on_event)


async def _first_message_token(ws: WebSocket) -> str | None:
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=AUTH_TIMEOUT_S)
    except (TimeoutError, WebSocketDisconnect):
        return None
    first = message.get("text")
    if not isinstance(first, str) or not first.startswith("{"):
        return None
    try:
        token = json.loads(first).get("token")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) and token and is_text(token) else None

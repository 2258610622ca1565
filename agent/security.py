"""Request checks that run before routing, for HTTP and WebSocket alike.

Pure ASGI middleware, so nothing (no route, no dependency, no exception handler) sees
a request whose Host or Origin is wrong:

- Host must be one of 127.0.0.1:PORT, localhost:PORT, [::1]:PORT — page JavaScript
  cannot set Host, so this defeats DNS rebinding.
- Origin, when present, must be exactly one of the configured origins; `null` and
  anything unlisted are refused, on every request and every WebSocket upgrade.
  Requests without Origin (local tools) pass here and still need a token later.
- CORS answers only listed origins, with that exact origin, never `*`.
- State-changing methods need `Content-Type: application/json`, so no "simple
  request" (form post, sendBeacon) can reach a handler without a preflight.
- Bodies over the limit are refused, whether announced by Content-Length or streamed.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_DEPTH = 16
_STRUCTURAL = re.compile(rb'[\[\]{}"\\]')


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest deeper than `limit`.

    Checked on the raw bytes before any parser recurses: a deeply nested body would
    otherwise cost recursion (and, in some parsers, a crash) before validation runs.
    Only structural characters are visited, so a long base64 string costs one match.
    """
    depth = 0
    in_string = False
    skip_at = -1
    for match in _STRUCTURAL.finditer(body):
        pos = match.start()
        if pos == skip_at:
            continue
        char = body[pos]
        if in_string:
            if char == 0x5C:  # backslash: the next character is escaped
                skip_at = pos + 1
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif char in (0x5D, 0x7D):
            depth -= 1
    return False


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


def allowed_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    """The single value of a header; a repeated Host/Origin is treated as hostile."""
    found: str | None = None
    for key, value in scope.get("headers", ()):
        if key == name:
            if found is not None:
                return "\x00duplicate"
            found = value.decode("latin-1")
    return found


class BodyTooLarge(Exception):
    pass


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int,
        allowed_origins: tuple[str, ...] | frozenset[str],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.hosts = allowed_hosts(port)
        self.origins = frozenset(allowed_origins)
        self.max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host not in self.hosts:
            await self._refuse(
                scope,
                receive,
                send,
                403,
                "host_forbidden",
                "Host not allowed: the agent answers only to loopback names.",
            )
            return
        origin = _header(scope, b"origin")
        if origin is not None and origin not in self.origins:
            await self._refuse(
                scope,
                receive,
                send,
                403,
                "origin_forbidden",
                "This origin is not allowed to use the card agent.",
            )
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        method = scope["method"]
        if method == "OPTIONS":
            await self._preflight(scope, send, origin)
            return
        if method in STATE_CHANGING:
            ctype = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                await self._refuse(
                    scope,
                    receive,
                    send,
                    415,
                    "unsupported_media_type",
                    "Send the request body as application/json.",
                    origin,
                )
                return
        length = _header(scope, b"content-length")
        if length is not None:
            # isdigit() alone also takes "²" or "٣", which int() refuses.
            if not (length.isascii() and length.isdigit()):
                await self._refuse(
                    scope, receive, send, 400, "invalid_input", "Bad Content-Length.", origin
                )
                return
            if int(length) > self.max_body:
                await self._refuse(
                    scope,
                    receive,
                    send,
                    413,
                    "payload_too_large",
                    f"Request body over {self.max_body} bytes.",
                    origin,
                )
                return

        started = False
        replay: list[Message] = []
        if method in STATE_CHANGING:
            # Bodies are small and bounded: read the whole body here, check size and
            # nesting once, then hand it on unchanged.
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    replay.append(message)
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body:
                    await self._respond(
                        send,
                        413,
                        "payload_too_large",
                        f"Request body over {self.max_body} bytes.",
                        origin,
                    )
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            if json_depth_exceeds(body):
                await self._respond(
                    send,
                    400,
                    "invalid_input",
                    f"JSON nested deeper than {MAX_JSON_DEPTH} levels.",
                    origin,
                )
                return
            replay.insert(0, {"type": "http.request", "body": body, "more_body": False})

        async def limited_receive() -> Message:
            if replay:
                return replay.pop(0)
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                raise BodyTooLarge  # a GET with a body: nothing here reads one
            return message

        async def cors_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if origin is not None:
                    headers = list(message.get("headers", []))
                    headers.append((b"access-control-allow-origin", origin.encode("latin-1")))
                    headers.append((b"vary", b"Origin"))
                    message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, limited_receive, cors_send)
        except BodyTooLarge:
            if started:
                raise
            await self._respond(
                send, 413, "payload_too_large", f"Request body over {self.max_body} bytes.", origin
            )

    async def _preflight(self, scope: Scope, send: Send, origin: str | None) -> None:
        if origin is None:
            await self._respond(send, 403, "origin_forbidden", "CORS preflight without Origin.")
            return
        headers = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
            (b"access-control-max-age", b"600"),
            (b"vary", b"Origin"),
        ]
        if _header(scope, b"access-control-request-private-network") == "true":
            # Chromium's private/local network access preflight, for listed origins only.
            headers.append((b"access-control-allow-private-network", b"true"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        code: str,
        message: str,
        origin: str | None = None,
    ) -> None:
        if scope["type"] == "websocket":
            # Refuse the upgrade itself: the page never gets an open socket.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403 if status == 403 else 4400})
            return
        await self._respond(send, status, code, message, origin)

    @staticmethod
    async def _respond(
        send: Send, status: int, code: str, message: str, origin: str | None = None
    ) -> None:
        body = error_body(code, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if origin is not None:
            headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# --- logs -----------------------------------------------------------------------------

_DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie"})


class WebSocketLogRedactor(logging.Filter):
    """The websockets library logs every frame at DEBUG through uvicorn's logger
    ("< TEXT '{"type": "auth", "token": ...}'"): the events socket's first message holds
    the client's bearer token. Data frames are logged as opcode and length only, and
    secret handshake headers as "[redacted]"."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno > logging.DEBUG or not isinstance(args, tuple):
            return True
        if record.msg in ("< %s", "> %s") and len(args) == 1:
            frame = args[0]
            opcode = getattr(getattr(frame, "opcode", None), "name", None)
            data = getattr(frame, "data", None)
            if opcode in _DATA_OPCODES and isinstance(data, bytes | bytearray | memoryview):
                record.args = (f"{opcode} [{len(data)} bytes]",)
        elif (
            record.msg in ("< %s: %s", "> %s: %s")
            and len(args) == 2
            and str(args[0]).lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


WEBSOCKET_LOGGERS = ("uvicorn.error", "websockets.server", "websockets.protocol")


def redact_websocket_logs() -> None:
    """Install `WebSocketLogRedactor` on the loggers WebSocket frames go to (idempotent)."""
    for name in WEBSOCKET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, WebSocketLogRedactor) for f in logger.filters):
            logger.addFilter(WebSocketLogRedactor())

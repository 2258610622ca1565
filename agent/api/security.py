"""Request checks that run before routing, for HTTP and WebSocket alike.

Pure ASGI middleware, so nothing (no route, no dependency, no exception handler) sees
a request that fails one. The checks are small functions in the order they run:

- Host must be one of 127.0.0.1:PORT, localhost:PORT, [::1]:PORT (DNS rebinding);
- Origin, when present, must be exactly one of the configured origins; `null` and
  anything unlisted are refused, on every request and every WebSocket upgrade.
  Requests without Origin (local tools) pass here and still need a token later;
- state-changing methods need `Content-Type: application/json`, so no "simple request"
  (form post, sendBeacon) can reach a handler without a CORS preflight;
- a Content-Length must be a number within the body limit;
- then, for state-changing methods, the body is read (bounded as it streams) and its
  JSON nesting checked.
CORS answers only listed origins, with that exact origin, never `*`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.guards import (
    MAX_JSON_DEPTH,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    allowed_hosts,
    json_depth_exceeds,
    single_header,
)
from agent.vocabulary import ErrorCode

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ALLOWED_METHODS = "GET, POST, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type"


@dataclass(frozen=True)
class Refusal:
    status: int
    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Policy:
    hosts: frozenset[str]
    origins: frozenset[str]
    max_body: int


@dataclass(frozen=True)
class Incoming:
    """What the checks look at, read once from the ASGI scope."""

    kind: str  # "http" or "websocket"
    method: str
    host: str | None
    origin: str | None
    content_type: str
    content_length: str | None

    @classmethod
    def of(cls, scope: Scope) -> Incoming:
        ctype = (single_header(scope, b"content-type") or "").split(";")[0].strip().lower()
        return cls(
            kind=scope["type"],
            method=scope.get("method", "GET"),
            host=single_header(scope, b"host"),
            origin=single_header(scope, b"origin"),
            content_type=ctype,
            content_length=single_header(scope, b"content-length"),
        )


Check = Callable[[Incoming, Policy], Refusal | None]


def host_is_loopback(request: Incoming, policy: Policy) -> Refusal | None:
    if request.host in policy.hosts:
        return None
    return Refusal(
        403,
        ErrorCode.HOST_FORBIDDEN,
        "Host not allowed: the agent answers only to loopback names.",
    )


def origin_is_listed(request: Incoming, policy: Policy) -> Refusal | None:
    if request.origin is None or request.origin in policy.origins:
        return None
    return Refusal(
        403, ErrorCode.ORIGIN_FORBIDDEN, "This origin is not allowed to use the card agent."
    )


def body_is_json(request: Incoming, policy: Policy) -> Refusal | None:
    if request.method not in STATE_CHANGING or request.content_type == "application/json":
        return None
    return Refusal(
        415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, "Send the request body as application/json."
    )


def length_is_valid(request: Incoming, policy: Policy) -> Refusal | None:
    length = request.content_length
    if length is None:
        return None
    if not (length.isascii() and length.isdigit()):  # "²1" is a digit to isdigit()
        return Refusal(400, ErrorCode.INVALID_INPUT, "Bad Content-Length.")
    if int(length) > policy.max_body:
        return _too_large(policy)
    return None


# Checked before the upgrade of a WebSocket, and before anything else of a request.
CONNECTION_CHECKS: Sequence[Check] = (host_is_loopback, origin_is_listed)
# Then, for an HTTP request other than a CORS preflight.
REQUEST_CHECKS: Sequence[Check] = (body_is_json, length_is_valid)


def _too_large(policy: Policy) -> Refusal:
    return Refusal(413, ErrorCode.PAYLOAD_TOO_LARGE, f"Request body over {policy.max_body} bytes.")


def _first_refusal(checks: Sequence[Check], request: Incoming, policy: Policy) -> Refusal | None:
    for check in checks:
        refusal = check(request, policy)
        if refusal is not None:
            return refusal
    return None


class _BodyTooLarge(Exception):
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
        self.policy = Policy(allowed_hosts(port), frozenset(allowed_origins), max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Incoming.of(scope)
        refusal = _first_refusal(CONNECTION_CHECKS, request, self.policy)
        if refusal is not None:
            if request.kind == "websocket":
                await _refuse_upgrade(receive, send, refusal)
            else:
                await respond(send, refusal, None)
            return
        if request.kind == "websocket":
            await self.app(scope, receive, send)
            return
        origin = request.origin
        if request.method == "OPTIONS":
            await _preflight(scope, send, origin)
            return
        refusal = _first_refusal(REQUEST_CHECKS, request, self.policy)
        if refusal is not None:
            await respond(send, refusal, origin)
            return
        replay: list[Message] = []
        if request.method in STATE_CHANGING:
            body, rest = await _read_body(receive, self.policy.max_body)
            if body is None:
                await respond(send, _too_large(self.policy), origin)
                return
            if json_depth_exceeds(body):
                refusal = Refusal(
                    400,
                    ErrorCode.INVALID_INPUT,
                    f"JSON nested deeper than {MAX_JSON_DEPTH} levels.",
                )
                await respond(send, refusal, origin)
                return
            replay = [{"type": "http.request", "body": body, "more_body": False}, *rest]
        await self._forward(scope, receive, send, origin, replay)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, origin: str | None, replay: list[Message]
    ) -> None:
        started = False

        async def bounded_receive() -> Message:
            if replay:
                return replay.pop(0)
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                raise _BodyTooLarge  # a GET with a body: nothing here reads one
            return message

        async def cors_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if origin is not None:
                    message["headers"] = [*message.get("headers", []), *_cors(origin)]
            await send(message)

        try:
            await self.app(scope, bounded_receive, cors_send)
        except _BodyTooLarge:
            if started:
                raise
            await respond(send, _too_large(self.policy), origin)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, list[Message]]:
    """The whole body (bodies are small and bounded), or None once it passes `limit`;
    and any non-body message that arrived (a disconnect), to hand on."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), [message]
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, []
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), []


def _cors(origin: str) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]


async def _preflight(scope: Scope, send: Send, origin: str | None) -> None:
    if origin is None:
        refusal = Refusal(403, ErrorCode.ORIGIN_FORBIDDEN, "CORS preflight without Origin.")
        await respond(send, refusal, None)
        return
    headers = [
        *_cors(origin),
        (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
        (b"access-control-allow-headers", ALLOWED_HEADERS.encode()),
        (b"access-control-max-age", b"600"),
    ]
    if single_header(scope, b"access-control-request-private-network") == "true":
        # Chromium's private/local network access preflight, for listed origins only.
        headers.append((b"access-control-allow-private-network", b"true"))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse_upgrade(receive: Receive, send: Send, refusal: Refusal) -> None:
    # Refuse the upgrade itself: the page never gets an open socket.
    await receive()  # websocket.connect
    await send({"type": "websocket.close", "code": 4403 if refusal.status == 403 else 4400})


def error_body(code: ErrorCode, message: str) -> bytes:
    return json.dumps({"error": {"code": code.value, "message": message}}).encode()


async def respond(send: Send, refusal: Refusal, origin: str | None) -> None:
    body = error_body(refusal.code, refusal.message)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if origin is not None:
        headers += _cors(origin)
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

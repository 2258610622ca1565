"""Fuzz the native API's request handling: the real ASGI app (agent/api.py behind its
SecurityMiddleware) on a simulated card, driven in-process with crafted HTTP requests.

Input: one or more requests separated by a line holding only 0x1E. Each request is
written like HTTP/1.1 on the wire, minus the version:

    POST /v1/sign
    Host: 127.0.0.1:17321
    Origin: chrome-extension://abcdefghijklmnopabcdefghijklmnop
    Authorization: Bearer @TOKEN@
    Content-Type: application/json

    {"purpose":"seal","title":"t","data":"aGk="}

`@TOKEN@` becomes the token of a client paired at start-up. What uvicorn's HTTP parser
would refuse before the app sees it (a method or target with bytes HTTP does not allow,
a header name that is not a token, a body shorter than its Content-Length) is skipped.
Before each input the card's PIN and its counter are reset and signing sessions end,
so one input cannot block the card (or change its PIN) for all that follow.

Properties: the app never raises and never answers 500 / `internal_error`, logs no
error; every answer of 400 or more is the JSON error shape `{"error": {"code",
"message"[, "details"]}}` with a documented code; no answer holds a traceback; every
other answer but 204 is JSON; `/v1/sign` never signs a document longer than
`max_data_bytes`.

    python tests/fuzz/fuzz_api.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures.thread  # noqa: F401  (see make_harness)
import json
import os
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz.harness import OURS, ErrorLogTripwire, main, scratch_dir

with atheris.instrument_imports(include=list(OURS)):
    from agent.config import CardConfig, Config, PathsConfig, SecurityConfig, ServerConfig
    from agent.guards import ASGIApp, Message
    from agent.runtime import build_runtime
    from agent.vocabulary import ErrorCode

PORT = 17321
ORIGIN = "chrome-extension://" + "abcdefghijklmnop" * 2
CARD_PIN = "88888888"  # the simulated card's (legal-person-sm2)
MAX_BODY_BYTES = 16 * 1024
MAX_DATA_BYTES = 48  # small, so that inputs can cross it
REQUEST_SEPARATOR = re.compile(rb"\r?\n\x1e\r?\n")
TOKEN_PLACEHOLDER = b"@TOKEN@"
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")


@dataclass
class Harness:
    app: ASGIApp
    token: bytes
    before_input: Callable[[], None]
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)


def build_app(state_dir: Path) -> tuple[ASGIApp, bytes, Callable[[], None]]:
    """The one adapter between the harness and the agent: the native API app as the
    agent serves it (SecurityMiddleware outermost), a paired client's token, and what
    to reset before each input. Built like tests/agent/conftest.py builds an agent:
    `build_runtime` with a simulated card kept in memory."""
    config = Config(
        server=ServerConfig(host="127.0.0.1", port=PORT),
        security=SecurityConfig(
            allowed_origins=(ORIGIN,),
            max_body_bytes=MAX_BODY_BYTES,
            max_data_bytes=MAX_DATA_BYTES,
        ),
        card=CardConfig(backend="simulated", sim_state_file=""),
        paths=PathsConfig(state_dir=state_dir),
    )
    runtime = build_runtime(config)
    pairing = runtime.pairing
    request = pairing.request(ORIGIN, "fuzz")
    pairing.approve(request.code)
    token = pairing.claim(request.request_id, ORIGIN)
    assert token is not None
    card = runtime.backend.card  # type: ignore[attr-defined]

    def before_input() -> None:
        card.state.pin.set_value(CARD_PIN)  # also after a PIN change; counter back to full
        runtime.service.sessions.end_all()

    return runtime.app, token.encode("ascii"), before_input


async def start_lifespan(app: ASGIApp) -> Callable[[], Awaitable[None]]:
    """Run the app's lifespan startup (card owner thread, service); returns what shuts
    it down."""
    started = asyncio.get_running_loop().create_future()
    stopping = asyncio.Event()
    sent_startup = False

    async def receive() -> Message:
        nonlocal sent_startup
        if not sent_startup:
            sent_startup = True
            return {"type": "lifespan.startup"}
        await stopping.wait()
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set_result(None)
        elif message["type"] == "lifespan.startup.failed":
            started.set_exception(RuntimeError(message.get("message", "startup failed")))

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.3"}, "state": {}}
    task = asyncio.get_running_loop().create_task(app(scope, receive, send))
    await started

    async def shutdown() -> None:
        stopping.set()
        await task

    return shutdown


@dataclass
class HttpRequest:
    method: str
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        values = [v for k, v in self.headers if k == name]
        return values[0] if len(values) == 1 else None


def parse(raw: bytes, token: bytes) -> HttpRequest | None:
    """One request of the input, or None when uvicorn would not let it through."""
    head, _, body = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    lines = [line.rstrip(b"\r") for line in head.split(b"\n")]
    method, _, target = lines[0].partition(b" ")
    target = target.split(b" ", 1)[0]
    if not _TOKEN.match(method) or not _TARGET.match(target):
        return None
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        value = value.strip(b" \t").replace(TOKEN_PLACEHOLDER, token)
        if not sep or not _TOKEN.match(name) or not _VALUE.match(value):
            return None
        headers.append((name.lower(), value))
    request = HttpRequest(method.decode("ascii"), target, headers, body)
    length = request.header(b"content-length")
    if length is not None and length.isdigit():
        if int(length) > len(body):
            return None  # the server would still be waiting for the rest
        request.body = body[: int(length)]
    return request


async def call(app: ASGIApp, request: HttpRequest) -> tuple[int, dict[bytes, bytes], bytes]:
    raw_path, _, query = request.target.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", PORT),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": request.method,
        "root_path": "",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "query_string": query,
        "headers": request.headers,
        "state": {},
    }
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        return {"type": "http.disconnect"}

    messages: list[Message] = []

    async def send(message: Message) -> None:
        messages.append(message)

    await app(scope, receive, send)
    starts = [m for m in messages if m["type"] == "http.response.start"]
    assert len(starts) == 1, [m["type"] for m in messages]
    headers = {k.lower(): v for k, v in starts[0].get("headers", [])}
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return starts[0]["status"], headers, body


def check_response(
    request: HttpRequest, status: int, headers: dict[bytes, bytes], body: bytes
) -> None:
    where = f"{request.method} {request.target!r} -> {status}"
    assert b"Traceback" not in body, where
    assert b'File "' not in body, where
    assert status != 500, f"{where}: {body[:300]!r}"
    if status == 204:
        return
    if status in (307, 308):  # Starlette's trailing-slash redirect: same host, no body
        location = headers.get(b"location", b"")
        assert location.startswith(b"http://" + (request.header(b"host") or b"?") + b"/"), where
        return
    assert headers.get(b"content-type", b"").startswith(b"application/json"), where
    document = json.loads(body)
    if status >= 400:
        assert isinstance(document, dict), where
        assert set(document) == {"error"}, f"{where}: {body[:300]!r}"
        error = document["error"]
        assert set(error) <= {"code", "message", "details"}, where
        assert error["code"] in list(ErrorCode), f"{where}: {error!r}"
        assert error["code"] != "internal_error", f"{where}: {error!r}"
        assert isinstance(error["message"], str), where
        return
    if request.target.startswith(b"/v1/sign") and status == 200:
        sent = json.loads(request.body)
        if isinstance(sent.get("data"), str):
            data = base64.b64decode(sent["data"])
            assert len(data) <= MAX_DATA_BYTES, f"signed {len(data)} bytes > {MAX_DATA_BYTES}"


def make_harness() -> Harness:
    os.environ.pop("NOTIFY_SOCKET", None)  # the systemd notifier stays a no-op
    app, token, before_input = build_app(scratch_dir("api") / "state")
    harness = Harness(app, token, before_input)
    shutdown = harness.loop.run_until_complete(start_lifespan(app))
    # Stop the card owner and the service when the process ends. Registered with
    # threading's own exit hooks, which run before concurrent.futures shuts its executors
    # down (imported above, so its hook is older and runs after ours): the shutdown
    # needs asyncio.to_thread, and plain atexit runs too late for that.
    threading._register_atexit(lambda: harness.loop.run_until_complete(shutdown()))  # type: ignore[attr-defined]
    return harness


HARNESS = make_harness()
TRIPWIRE = ErrorLogTripwire().install()


def test_one_input(data: bytes) -> None:
    HARNESS.before_input()
    TRIPWIRE.clear()
    for raw in REQUEST_SEPARATOR.split(data)[:8]:
        request = parse(raw, HARNESS.token)
        if request is None:
            continue
        status, headers, body = HARNESS.loop.run_until_complete(call(HARNESS.app, request))
        TRIPWIRE.check()
        try:
            check_response(request, status, headers, body)
        except (ValueError, binascii.Error) as exc:  # JSON or base64 that should have been
            raise AssertionError(f"{request.method} {request.target!r}: {exc}") from exc


if __name__ == "__main__":
    main("api", test_one_input, defaults=("-max_len=4096", "-timeout=30"))

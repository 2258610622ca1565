"""The official client's WebSocket endpoint (`ws://127.0.0.1:61232`) as a Component.

It runs its own uvicorn server on its own port, inside the main app's event loop: the
main app's lifespan starts it after the card owner and the service and stops it before
them. Every card operation goes through the CardService (so through the one card owner).

What guards the upgrade, before any greeting is sent (the protocol has no token):
- Host must be a loopback name with this endpoint's port (DNS rebinding);
- Origin must be present and either listed exactly in `compat.allowed_origins` or an
  https Single Window origin (`https://singlewindow.cn` or `https://<sub>.singlewindow.cn`,
  default port) when `compat.allow_singlewindow` is on.
docs/security.md says what this protocol cannot protect.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from agent.config import Config
from agent.guards import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    allowed_hosts,
    json_depth_exceeds,
    single_header,
)
from agent.listener import ListenerLimits, server_config
from agent.service import Caller, CardService

from .methods import ERR_BAD_ARGS, Connection, handle
from .protocol import (
    BLOCK_MAGIC,
    BadRequest,
    BlockAssembler,
    BlockFault,
    UnanswerableRequest,
    greeting,
    next_block,
    parse_request,
    reply,
)

log = logging.getLogger(__name__)

SINGLEWINDOW_DOMAIN = "singlewindow.cn"
_STARTUP_TIMEOUT_S = 10.0
_GRACEFUL_SHUTDOWN_S = 5  # seconds; a card call in progress may need to finish
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


def is_singlewindow_origin(origin: str) -> bool:
    """`https://singlewindow.cn` or `https://<labels>.singlewindow.cn`, default port.

    A suffix match on the registrable domain only, with every label checked: so no
    `https://evilsinglewindow.cn`, `https://singlewindow.cn.evil.example`, ports,
    user-info, upper case (browsers send Origin lower-cased) or plain http.
    """
    scheme, sep, host = origin.partition("://")
    if scheme != "https" or not sep or len(host) > 253:
        return False
    if host != SINGLEWINDOW_DOMAIN and not host.endswith("." + SINGLEWINDOW_DOMAIN):
        return False
    return all(_LABEL.match(label) for label in host.split("."))


@dataclass(frozen=True)
class OriginPolicy:
    exact: frozenset[str]  # from compat.allowed_origins (validated like the native API's)
    singlewindow: bool

    def allows(self, origin: str | None) -> bool:
        if origin is None:  # browsers always send Origin on an upgrade; tools must too
            return False
        return origin in self.exact or (self.singlewindow and is_singlewindow_origin(origin))


@dataclass(frozen=True)
class CompatLimits:
    max_frame_bytes: int  # one WebSocket message (the library sends most calls unchunked)
    max_message_units: int  # a chunked request once reassembled, UTF-16 units
    max_data_bytes: int  # inData / szInfo / random, UTF-8
    # Pages keep one socket each; more than a few at once is not a kiosk browser.
    max_connections: int = 8
    idle_timeout_s: float = 300.0


class CompatGuard:
    """Host and Origin on the upgrade, refused before accept (so before the greeting);
    plain HTTP gets an empty 404: this port serves nothing else."""

    def __init__(self, app: ASGIApp, *, hosts: frozenset[str], policy: OriginPolicy) -> None:
        self.app = app
        self.hosts = hosts
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # The native API's single-value rule: a repeated Host/Origin is hostile.
            host, origin = single_header(scope, b"host"), single_header(scope, b"origin")
            if host in self.hosts and self.policy.allows(origin):
                await self.app(scope, receive, send)
                return
            log.info("compat: upgrade refused (host %.80r, origin %.80r)", host, origin)
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})  # uvicorn answers 403
            return
        if scope["type"] == "http":
            headers = [(b"content-length", b"0"), (b"cache-control", b"no-store")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.app(scope, receive, send)


@dataclass
class _Page:
    """One connected page: idle (waiting for its next request) or busy with one."""

    ws: WebSocket
    busy: bool = False


class _Slots:
    """The endpoint's connection slots, least recently active first.

    A page that arrives when every slot is taken gets the slot of the page idle longest
    (closed with 1001, which ends that page's session); it is refused only when every
    page has a request in progress.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: OrderedDict[int, _Page] = OrderedDict()
        self.evicted = 0

    def oldest_idle(self) -> _Page | None:
        return next((page for page in self.pages.values() if not page.busy), None)

    def touch(self, number: int) -> None:
        self.pages.move_to_end(number)


def create_compat_app(
    service: CardService, *, port: int, policy: OriginPolicy, limits: CompatLimits
) -> ASGIApp:
    connection_ids = itertools.count(1)
    slots = _Slots(limits.max_connections)

    async def endpoint(ws: WebSocket) -> None:
        if len(slots.pages) >= slots.size:
            victim = slots.oldest_idle()
            if victim is None:
                log.info("compat: refusing a page: all %d connections are busy", slots.size)
                await ws.close(code=1013)  # before accept: the upgrade is refused
                return
            slots.evicted += 1
            log.info("compat: a new page takes the slot of the longest-idle one")
            await _close_idle(victim.ws)
        number = next(connection_ids)
        page = _Page(ws)
        slots.pages[number] = page
        origin = ws.headers.get("origin", "")
        # No pairing in this protocol: the identity is the origin, and the session is
        # this connection's own (a PIN verified here signs only here).
        caller = Caller(f"compat:{origin}#{number}", origin, f"compat:{origin}")
        conn = Connection(service, caller, limits.max_data_bytes)
        try:
            await ws.accept()
            await ws.send_text(greeting())
            await _converse(ws, conn, limits, page, lambda: slots.touch(number))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass  # the page went away, possibly while its request was at the card
        finally:
            slots.pages.pop(number, None)
            try:
                await conn.close()
            except Exception as exc:
                log.info("compat: ending the session failed: %s", type(exc).__name__)

    app = Starlette(routes=[WebSocketRoute("/", endpoint)])
    return CompatGuard(app, hosts=allowed_hosts(port), policy=policy)


async def _close_idle(ws: WebSocket) -> None:
    # 1001 "going away": the page library treats the socket as gone and dials again on
    # its next call. The closed page's own receive loop then ends its session.
    with contextlib.suppress(Exception):
        await ws.close(code=1001)


async def _converse(
    ws: WebSocket,
    conn: Connection,
    limits: CompatLimits,
    page: _Page,
    touch: Callable[[], None],
) -> None:
    """One request at a time, in arrival order: the page library routes answers by
    method name, so overlapping calls of one page gain nothing, and the card serialises
    them anyway."""
    assembler = BlockAssembler(max_units=limits.max_message_units, invalid_code=ERR_BAD_ARGS)
    while True:
        page.busy = False
        try:
            message = await asyncio.wait_for(ws.receive(), limits.idle_timeout_s)
        except TimeoutError:
            log.info("compat: closing a page idle for %g s", limits.idle_timeout_s)
            await _close_idle(ws)
            return
        if message["type"] == "websocket.disconnect":
            return
        page.busy = True
        touch()
        text = message.get("text")
        if not isinstance(text, str):
            continue  # the page library sends text frames only
        if text.startswith(BLOCK_MAGIC):
            try:
                outcome = assembler.feed(text)
            except BlockFault:
                continue  # names no group: there is nobody to answer
            await ws.send_text(next_block(outcome.ack))
            failed = outcome.failed
            if failed is not None and outcome.ack.error:
                await ws.send_text(
                    reply(failed.id, failed.method, result=False, error=outcome.ack.error)
                )
            if outcome.message is None:
                continue
            text = outcome.message
        try:
            answer = await _answer(conn, text)
        except UnanswerableRequest:
            log.info("compat: closing a page that sent invalid text in _method")
            await ws.close(code=1007)
            return
        if answer is not None:
            await ws.send_text(answer)


async def _answer(conn: Connection, text: str) -> str | None:
    # Like the page library, only JSON objects count; anything else is dropped.
    if not text.startswith("{") or json_depth_exceeds(text.encode("utf-8")):
        return None
    try:
        request = parse_request(text)
    except UnanswerableRequest:
        raise
    except BadRequest as bad:
        if bad.method is None:
            return None  # no _method: no callback on the page could receive an answer
        return reply(bad.req_id, bad.method, result=False, error=(str(bad), ERR_BAD_ARGS))
    return await handle(conn, request)


class _QuietWebSocketProtocol(WebSocketsSansIOProtocol):
    """Frames carry PINs (`passwd`, `oldPin`, ...) and websockets logs frame contents at
    DEBUG: frame logging stays off on this endpoint whatever the log level."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.debug = False


class _EmbeddedServer(uvicorn.Server):
    """Runs inside the main server's loop: signals belong to the main server, which
    stops this one through the lifespan."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CompatServer:
    """The Component: `start()` binds and serves, `stop()` closes connections (each
    ends its session, clearing the card's verified state) and waits."""

    def __init__(
        self,
        service: CardService,
        *,
        host: str,
        port: int,
        policy: OriginPolicy,
        limits: CompatLimits,
        listener_limits: ListenerLimits | None = None,
    ) -> None:
        self.service = service
        # The upgrade request is plain HTTP: slow or idle sockets are cut off as on the
        # native API's port; a handful of pages never need more connections than this.
        self.listener_limits = listener_limits or ListenerLimits(max_connections=64)
        self.host = host
        self.requested_port = port
        self.policy = policy
        self.limits = limits
        self.port: int | None = None  # the bound port, once started
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config, service: CardService) -> CompatServer:
        compat, sec = config.compat, config.security
        limits = CompatLimits(
            max_frame_bytes=sec.max_body_bytes,
            max_message_units=sec.max_body_bytes,
            max_data_bytes=sec.max_data_bytes,
            max_connections=compat.max_connections,
            idle_timeout_s=compat.idle_timeout_s,
        )
        policy = OriginPolicy(frozenset(compat.allowed_origins), compat.allow_singlewindow)
        listener_limits = ListenerLimits(
            request_timeout_s=config.server.request_timeout_s,
            keepalive_timeout_s=config.server.keepalive_timeout_s,
            max_connections=64,
        )
        return cls(
            service,
            host=compat.host,
            port=compat.port,
            policy=policy,
            limits=limits,
            listener_limits=listener_limits,
        )

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("CompatServer already started")
        # Bind here, not in uvicorn: a taken port is a clean OSError for the lifespan
        # (uvicorn would sys.exit), and port 0 tells us which port to expect in Host.
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.requested_port), family=family)
        try:
            port = sock.getsockname()[1]
            server = self._make_server(port)
        except BaseException:
            sock.close()
            raise
        task = asyncio.create_task(_serve(server, sock), name="compat-endpoint")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _STARTUP_TIMEOUT_S
        while not server.started:
            if task.done() or loop.time() > deadline:
                server.should_exit = True
                await task
                raise RuntimeError(f"official-protocol endpoint did not start on port {port}")
            await asyncio.sleep(0.01)
        self._server, self._task, self.port = server, task, port
        log.info("official-protocol endpoint on ws://%s:%d", self.host, port)

    def _make_server(self, port: int) -> _EmbeddedServer:
        app = create_compat_app(self.service, port=port, policy=self.policy, limits=self.limits)
        return _EmbeddedServer(
            server_config(
                app,
                self.listener_limits,
                lifespan="off",
                log_config=None,  # leave the process's logging alone
                ws=_QuietWebSocketProtocol,
                ws_max_size=self.limits.max_frame_bytes,
                ws_per_message_deflate=False,
                timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_S,
            )
        )

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is None or task is None:
            return
        self._server = self._task = None
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), _GRACEFUL_SHUTDOWN_S + 5)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except SystemExit:
        # uvicorn exits the process when startup fails; here the lifespan reports it.
        log.error("official-protocol endpoint failed to start")
    finally:
        sock.close()

"""An ASGI app on a real uvicorn server in a background thread, as the agent serves it.

`loopback_socket()` binds a free loopback port before the server starts, so the port
the app must know (the Host allowlist) is the one it really listens on, with no race.
The server is configured by `agent.listener.server_config`, so tests run through the
same protocol class, timeouts and connection cap as `card-agent serve`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import uvicorn

from agent.listener import ListenerLimits, server_config

T = TypeVar("T")

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0


def loopback_socket() -> socket.socket:
    # proto=IPPROTO_TCP, as getaddrinfo would give: asyncio sets TCP_NODELAY on accepted
    # sockets only then (with proto 0 every keep-alive response waits ~40 ms for an ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class ServerThread:
    """`with ServerThread(app) as server:` serves `app` until the block ends.

    `sock`: a bound socket (default: a fresh loopback one); `limits`: the listener
    limits (default: the agent's); `config`: more uvicorn.Config arguments (TLS files,
    `lifespan`, ...). Logging is left alone: tests capture it themselves.
    """

    def __init__(
        self,
        app: Any,
        sock: socket.socket | None = None,
        *,
        limits: ListenerLimits | None = None,
        **config: Any,
    ) -> None:
        self.sock = sock or loopback_socket()
        self.port: int = self.sock.getsockname()[1]
        options: dict[str, Any] = {
            "log_config": None,
            "log_level": None,
            "lifespan": "on",
            "timeout_graceful_shutdown": 3,
            **config,
        }
        self.server = uvicorn.Server(server_config(app, limits or ListenerLimits(), **options))
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name=f"server-{self.port}", daemon=True)

    @classmethod
    def on_port(cls, app: Any, port: int, **config: Any) -> ServerThread:
        """Serve on a given loopback port (the caller picked it, e.g. for a config)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return cls(app, sock, **config)

    def _run(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self.sock])

        asyncio.run(serve())

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.sock.close()
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.005)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(STOP_TIMEOUT_S)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"server on port {self.port} did not stop")

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coro` on the server's own event loop (as a component of the app would)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

"""How the agent's listening sockets are served: uvicorn, with limits a local process
cannot exhaust.

uvicorn alone has no request-read timeout (a client trickling header bytes holds its
connection forever) and no connection cap that acts before a request arrives (idle
connections pile up until accept() fails with EMFILE, and asyncio then logs a traceback
for every failed accept, many per second). Both the native API and the official-protocol
endpoint are served through `server_config()`:

- a request must arrive whole within `request_timeout_s` of the connection opening (or
  of its first byte on a kept-alive connection); idle kept-alive connections close after
  `keepalive_timeout_s` (uvicorn's own timer);
- at most `max_connections` connections are open. A new connection over the cap closes
  the connection that has waited longest for a request; when every connection is busy
  with a request (or is a WebSocket), the new one gets `503 busy` and is closed;
- the cap stays below the process's open-files limit (`effective_max_connections`), and
  accept errors are logged at most once per interval with a count
  (`throttle_accept_errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Open files kept free for what is not a client connection: pcscd sockets, the audit
# log, the telemetry outbox, the broker, the compat endpoint's own listener, imports.
FD_RESERVE = 128
MIN_CONNECTIONS = 16
# Raising the soft open-files limit up to the hard one costs nothing; beyond this many
# connections a kiosk is under attack anyway.
OPEN_FILES_TARGET = 8192
ACCEPT_ERROR_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ListenerLimits:
    request_timeout_s: float = 10.0
    keepalive_timeout_s: float = 5.0
    max_connections: int = 512


class RateLimitedLog:
    """One warning per interval for a repeated event, with how many were not logged."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._next_at = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return
        suffix = f" ({self._suppressed} more since the last report)" if self._suppressed else ""
        self._log.warning(message + suffix, *args)
        self._suppressed = 0
        self._next_at = now + self._interval_s


def raise_open_files_limit(target: int = OPEN_FILES_TARGET) -> int:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", wanted, exc)
    return soft


def effective_max_connections(configured: int, open_files_limit: int | None = None) -> int:
    """`configured`, lowered so that connections can never use up the open files."""
    if open_files_limit is None:
        open_files_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files_limit == resource.RLIM_INFINITY:
        return configured
    return max(MIN_CONNECTIONS, min(configured, open_files_limit - FD_RESERVE))


_ACCEPT_ERROR = "socket.accept() out of system resource"


def throttle_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log asyncio's accept failures (EMFILE, ENFILE, ENOBUFS, ENOMEM) once per
    interval instead of a traceback per failed accept."""
    limited = RateLimitedLog(log, ACCEPT_ERROR_LOG_INTERVAL_S)
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == _ACCEPT_ERROR:
            limited.warning("cannot accept connections: %s", context.get("exception"))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _busy_response() -> bytes:
    body = json.dumps(
        {"error": {"code": "busy", "message": "Too many connections. Try again shortly."}}
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "cache-control: no-store\r\n"
        "retry-after: 1\r\n"
        "connection: close\r\n\r\n"
    ).encode()
    return head + body


_BUSY = _busy_response()


class _Waiting:
    """The connections of one server that wait for a request, longest-waiting first."""

    def __init__(self) -> None:
        self.order: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.refusals = RateLimitedLog(log, ACCEPT_ERROR_LOG_INTERVAL_S)
        self.timeouts = RateLimitedLog(log, ACCEPT_ERROR_LOG_INTERVAL_S)
        self.evictions = RateLimitedLog(log, ACCEPT_ERROR_LOG_INTERVAL_S)

    def oldest_except(self, protocol: GuardedH11Protocol) -> GuardedH11Protocol | None:
        return next((p for p in self.order if p is not protocol), None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-read timeout and a connection cap.
    Use `guarded_protocol(limits)`: each server needs its own subclass (its own list of
    waiting connections)."""

    limits: ClassVar[ListenerLimits]
    waiting: ClassVar[_Waiting]
    _request_timer: asyncio.TimerHandle | None = None
    # Upgraded to a WebSocket: the connection is no longer ours to time out (the upgrade
    # request arrives in a data_received call that continues after the upgrade).
    _upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            victim = self.waiting.oldest_except(self)
            if victim is None:
                self.waiting.refusals.warning(
                    "refusing connections: %d open, all busy", len(self.connections)
                )
                transport.write(_BUSY)
                transport.close()
                return
            self.waiting.evictions.warning(
                "over %d connections: closing the longest-idle ones", self.limits.max_connections
            )
            victim._abandon()
        self._start_request_timer()
        self.waiting.order[self] = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._upgraded:
            return
        if self._handling_request():
            self._stop_waiting()
        elif self._request_timer is None:  # the first byte of the next request
            self._start_request_timer()
            self.waiting.order.setdefault(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._handling_request():  # a pipelined request started
            self._stop_waiting()
            return
        # Idle between requests: uvicorn's keep-alive timer runs now.
        self._cancel_request_timer()
        self.waiting.order.pop(self, None)
        self.waiting.order[self] = None

    def handle_websocket_upgrade(self, event: Any) -> None:
        self._upgraded = True
        self._stop_waiting()  # the connection now belongs to the WebSocket protocol
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _handling_request(self) -> bool:
        """A whole request arrived and the app has it."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and not cycle.more_body

    def _start_request_timer(self) -> None:
        self._request_timer = self.loop.call_later(
            self.limits.request_timeout_s, self._request_timed_out
        )

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _stop_waiting(self) -> None:
        self._cancel_request_timer()
        self.waiting.order.pop(self, None)

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._upgraded or self._handling_request():
            return
        self.waiting.timeouts.warning(
            "closing connections that sent no complete request within %g s",
            self.limits.request_timeout_s,
        )
        self._abandon()

    def _abandon(self) -> None:
        self._stop_waiting()
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(limits: ListenerLimits) -> type[GuardedH11Protocol]:
    """The protocol class for one server, enforcing `limits`."""
    return type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "waiting": _Waiting()}
    )


def server_config(
    app: Callable[..., Any],
    limits: ListenerLimits,
    **kwargs: Any,
) -> uvicorn.Config:
    """A uvicorn configuration for one of the agent's listeners, with `limits`."""
    return uvicorn.Config(
        app,
        http=guarded_protocol(limits),
        timeout_keep_alive=max(1, round(limits.keepalive_timeout_s)),
        access_log=False,
        server_header=False,
        proxy_headers=False,
        **kwargs,
    )

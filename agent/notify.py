"""systemd notification protocol (sd_notify) without libsystemd.

`SystemdNotifier` is a `Component` of the running agent:

* `ready()` sends `READY=1` (with a `STATUS=` line). `card-agent serve` calls it once
  uvicorn's listening sockets are bound (never from the lifespan, which runs before
  the bind) and after the card owner thread has gone round its loop once, so
  `systemctl start` returns when the API can answer and `/v1/status` tells the truth.
* With `WatchdogSec=` (systemd passes `$WATCHDOG_USEC`), a task on the event loop sends
  `WATCHDOG=1` every WatchdogSec/2. It stops pinging while `owner.health().stuck(limit)`
  (a card call hung in the driver, the owner thread dead or not looping), and a blocked
  event loop cannot ping at all: either way systemd kills and restarts the service.
* `STATUS=` follows reader and card events; `STOPPING=1` on shutdown.

Protocol: one datagram per message on the AF_UNIX socket named by `$NOTIFY_SOCKET`, an
absolute path or `@name` for the abstract namespace. `$WATCHDOG_PID`, when set, must be
our pid. Without `$NOTIFY_SOCKET` (not run by systemd, or `Type=simple`) everything here
is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from agent.service import CardState, OwnerHealth

log = logging.getLogger(__name__)

READY_WAIT_S = 5.0  # how long ready() waits for the owner thread's first loop round


class _Service(Protocol):
    """What the notifier needs from `agent.service.CardService`."""

    @property
    def card_state(self) -> CardState: ...

    def health(self) -> OwnerHealth: ...

    def subscribe(self, callback: Callable[[Any], None]) -> None: ...

    def unsubscribe(self, callback: Callable[[Any], None]) -> None: ...


def notify_address(value: str | None) -> str | bytes | None:
    """The socket address for `$NOTIFY_SOCKET`, or None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock:... and relative paths are not supported here


def watchdog_interval(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Seconds between pings (half of `$WATCHDOG_USEC`), or None without a watchdog."""
    raw = env.get("WATCHDOG_USEC", "")
    try:
        usec = int(raw)
    except ValueError:
        return None
    if usec <= 0:
        return None
    wd_pid = env.get("WATCHDOG_PID", "")
    if wd_pid and wd_pid != str(os.getpid() if pid is None else pid):
        return None  # meant for another process (e.g. a wrapper that exec'd us not)
    return usec / 2 / 1_000_000


class SystemdNotifier:
    def __init__(
        self,
        service: _Service,
        *,
        stuck_limit_s: float,
        describe: Callable[[], str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        self._service = service
        self._stuck_limit_s = stuck_limit_s
        self._describe = describe
        self._address = notify_address(environ.get("NOTIFY_SOCKET"))
        self.watchdog_interval_s = watchdog_interval(environ) if self._address is not None else None
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._stuck = False
        self._ready = False
        self.pings = 0  # WATCHDOG=1 sent (diagnostics and tests)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    # --- the datagram ------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram. False if not sent (never raises)."""
        if self._address is None or not assignments:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self._address)
        except OSError as exc:
            # systemd gone or restarting: nothing to do but try again next time.
            log.debug("sd_notify %s failed: %s", assignments[0].split("=")[0], exc)
            return False
        return True

    # --- Component ---------------------------------------------------------------

    async def start(self) -> None:
        if self._address is None:
            return
        self._service.subscribe(self._on_card_event)
        if self.watchdog_interval_s is not None:
            self._task = asyncio.create_task(self._watchdog(self.watchdog_interval_s))
            log.info("systemd watchdog: pinging every %.1f s", self.watchdog_interval_s)

    async def stop(self) -> None:
        if self._address is None:
            return
        self.stopping()
        self._service.unsubscribe(self._on_card_event)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # --- what `serve` calls -----------------------------------------------------

    async def ready(self, *, wait_s: float = READY_WAIT_S) -> bool:
        """READY=1 once the owner thread has gone round its loop (reader state known).

        Called with the HTTP sockets already listening. False (and no READY) if the
        owner thread is dead: systemd's start timeout then fails the start.
        """
        if self._address is None:
            return False
        if not await self._reader_side_up(wait_s):
            log.error("card owner thread not running: not telling systemd we are ready")
            return False
        self._ready = True
        return self.notify("READY=1", f"STATUS={self.status_text()}")

    def stopping(self) -> None:
        if self._address is not None:
            self.notify("STOPPING=1", "STATUS=stopping")

    def status_text(self) -> str:
        state = self._service.card_state
        if not state.reader_present:
            card = "no reader"
        elif state.card_present:
            card = "card present"
        else:
            card = "no card"
        prefix = self._describe() if self._describe is not None else "running"
        return f"{prefix}; {card}"

    # --- internals ----------------------------------------------------------------

    async def _reader_side_up(self, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        first: float | None = None
        while True:
            health = self._service.health()
            if health.thread_alive and health.last_loop_at is not None:
                if first is None:
                    first = health.last_loop_at
                if health.last_loop_at != first:
                    # The thread went round again: a poll (and the events it reported)
                    # completed since we first looked, so reader/card state is known.
                    return True
            if time.monotonic() >= deadline:
                # A slow first poll (pcscd starting on demand) is not a failure; a dead
                # thread is.
                return health.thread_alive
            await asyncio.sleep(0.01)

    def _on_card_event(self, _event: Any) -> None:
        if self._ready and not self._stuck:
            self.notify(f"STATUS={self.status_text()}")

    @staticmethod
    def _stuck_reason(health: OwnerHealth) -> str:
        if not health.thread_alive:
            return "card owner thread not running"
        if health.busy_for_s is not None:
            return f"card call {health.job_label or '?'} running for {health.busy_for_s:.1f} s"
        return "card owner thread not looping"

    async def _watchdog(self, interval_s: float) -> None:
        while True:
            health = self._service.health()
            if health.stuck(self._stuck_limit_s):
                if not self._stuck:
                    self._stuck = True
                    what = self._stuck_reason(health)
                    log.error("%s: no more watchdog pings, systemd will restart us", what)
                    self.notify(f"STATUS=stuck: {what}")
            else:
                if self._stuck:
                    self._stuck = False
                    log.warning("card owner thread recovered; watchdog pings resume")
                    self.notify(f"STATUS={self.status_text()}")
                if self.notify("WATCHDOG=1"):
                    self.pings += 1
            await asyncio.sleep(interval_s)

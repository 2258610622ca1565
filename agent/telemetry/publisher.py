"""`TelemetryPublisher`: the MQTT telemetry component (docs/telemetry.md).

Data flow
  `on_event(name, fields)` (a `CardService` listener, called on the event loop) builds
  the payload at once (`payloads`: allowlisted fields, nothing personal) and queues it
  in memory; the *writer* task stores queued messages in the SQLite outbox in batches
  (on the outbox's own thread). The *sender* task, while connected, reads the oldest
  rows, publishes them at QoS 1 in `seq` order (a window of `publish_window` messages in
  flight; aiomqtt's `publish` returns when the broker's PUBACK arrives) and deletes the
  acknowledged prefix. A lost connection leaves the rest in the outbox for the next one.

Connection
  One aiomqtt client per connection attempt, clean session, last will = retained
  `status` {"state": "offline", "reason": "connection_lost"}. On connect: subscribe to
  `cmd`, publish the retained online status, then run the sender, the status updater
  and the command reader until the connection drops (reconnect after an exponential
  back-off with jitter: `reconnect_min_s` doubling up to `reconnect_max_s`, each delay
  drawn from [d/2, d]) or the component stops (retained offline status with reason
  "shutdown", then a clean disconnect, so the will is not sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
import socket
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiomqtt

from agent.config import MqttConfig
from agent.telemetry.commands import CommandHandler, SelftestHook
from agent.telemetry.outbox import OUTBOX_FILE, AsyncOutbox, NewMessage, OutboxStats
from agent.telemetry.payloads import (
    CARD_EVENTS,
    envelope,
    event_payload,
    ident,
    is_critical,
    status_payload,
    topic,
)

log = logging.getLogger(__name__)
_mqtt_log = logging.getLogger(f"{__name__}.mqtt")

DEFAULT_PUBLISH_WINDOW = 64
_WRITE_BATCH = 1000
_STOP_TIMEOUT_S = 5.0


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def backoff_delay(attempt: int, lo: float, hi: float, rng: random.Random) -> float:
    """Exponential back-off with jitter: a delay in [d/2, d], d = min(hi, lo * 2^attempt)."""
    cap = min(hi, lo * (2 ** min(attempt, 30)))
    return rng.uniform(cap / 2, cap)


class _Metrics:
    """Counters since start, sign latencies per interval."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.interval_started = self.started
        self.events: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sign_ms: list[float] = []
        self.connects = 0
        self.disconnects = 0
        self.published = 0

    def observe(self, payload: Mapping[str, Any]) -> None:
        kind = str(payload.get("type"))
        if kind == "pin_verify":
            kind = f"pin_verify_{payload.get('result')}"
        self.events[kind] += 1
        code = payload.get("code")
        if isinstance(code, str):
            self.errors[code] += 1
        duration = payload.get("duration_ms")
        if kind == "signature" and isinstance(duration, int | float):
            self.sign_ms.append(float(duration))

    def take(self, outbox: OutboxStats, *, refused_commands: int) -> dict[str, Any]:
        now = time.monotonic()
        samples = sorted(self.sign_ms)
        self.sign_ms = []
        interval = now - self.interval_started
        self.interval_started = now
        latency: dict[str, Any] = {"count": len(samples)}
        if samples:
            latency.update(
                min=round(samples[0], 1),
                mean=round(sum(samples) / len(samples), 1),
                p50=round(_percentile(samples, 0.50), 1),
                p95=round(_percentile(samples, 0.95), 1),
                max=round(samples[-1], 1),
            )
        return {
            "interval_s": round(interval, 3),
            "uptime_s": round(now - self.started, 3),
            "events": dict(self.events),
            "errors": dict(self.errors),
            "sign_latency_ms": latency,
            "commands_refused": refused_commands,
            "outbox": _outbox_fields(outbox),
            "mqtt": {
                "connects": self.connects,
                "disconnects": self.disconnects,
                "published": self.published,
            },
        }


def _move_aside(path: Path, aside: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))


def _percentile(ordered: list[float], q: float) -> float:
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[index]


def _outbox_fields(stats: OutboxStats) -> dict[str, int]:
    return {
        "pending": stats.pending,
        "dropped_total": stats.dropped_total,
        "dropped_critical": stats.dropped_critical,
    }


class TelemetryPublisher:
    """The telemetry `Component`. Hand `on_event` to `CardService.add_listener`."""

    def __init__(
        self,
        config: MqttConfig,
        *,
        state_dir: Path,
        version: str,
        presence: Callable[[], Mapping[str, Any]] | None = None,
        audit_anchor: Callable[[], tuple[int, str]] | None = None,
        selftest_hook: SelftestHook | None = None,
        publish_window: int = DEFAULT_PUBLISH_WINDOW,
        rng: random.Random | None = None,
    ) -> None:
        if not config.kiosk_id:
            raise ValueError("mqtt.kiosk_id is required")
        self.config = config
        self.kiosk_id = config.kiosk_id
        self.version = version
        self._presence = presence
        self._audit_anchor = audit_anchor
        self._window = max(1, publish_window)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.outbox = AsyncOutbox(state_dir / OUTBOX_FILE, max_rows=config.outbox_max_events)
        self.topics = {
            leaf: topic(self.kiosk_id, leaf)
            for leaf in ("status", "events", "metrics", "cmd", "cmd/response")
        }
        self.commands = CommandHandler(
            self.kiosk_id,
            status=self.status,
            selftest_hook=selftest_hook,
            on_selftest=lambda result: self.on_event("selftest", result),
        )
        self._metrics = _Metrics()
        # Built payloads waiting for the writer (bounded: see _enqueue).
        self._queue: deque[NewMessage] = deque()
        self._queue_limit = max(1000, config.outbox_max_events)
        self.dropped_in_memory = 0
        self._queued = asyncio.Event()  # wakes the writer
        self._stored = asyncio.Event()  # wakes the sender
        self._status_dirty = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._writer_task: asyncio.Task[None] | None = None
        self._command_tasks: set[asyncio.Task[None]] = set()
        self.connected = False

    # --- the selftest hook (set by whoever provides the selftest) --------------------

    @property
    def selftest_hook(self) -> SelftestHook | None:
        return self.commands.selftest_hook

    @selftest_hook.setter
    def selftest_hook(self, hook: SelftestHook | None) -> None:
        self.commands.selftest_hook = hook

    # --- events in -------------------------------------------------------------------

    def on_event(self, name: str, fields: Mapping[str, Any]) -> None:
        """A service event (`CardService.add_listener` callback). Never raises."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # loop closed
                loop.call_soon_threadsafe(self.on_event, name, dict(fields))
            return
        try:
            payload = event_payload(self.kiosk_id, name, fields)
        except Exception:
            log.exception("building the telemetry payload for %s failed", ident(name))
            return
        if payload is None:
            return
        self._metrics.observe(payload)
        if name in CARD_EVENTS:
            self._status_dirty.set()
        self._enqueue(NewMessage(self.topics["events"], payload, is_critical(payload)))

    def _enqueue(self, message: NewMessage) -> None:
        if len(self._queue) >= self._queue_limit:
            # The outbox thread is stuck (disk?): keep memory bounded, critical first.
            self.dropped_in_memory += 1
            if not message.critical:
                return
            self._queue.popleft()
        self._queue.append(message)
        self._queued.set()

    # --- status ----------------------------------------------------------------------

    def status(self, *, online: bool = True, reason: str | None = None) -> dict[str, Any]:
        presence: Mapping[str, Any] | None = None
        if self._presence is not None:
            try:
                presence = self._presence()
            except Exception:
                log.exception("reading reader/card presence failed")
        return status_payload(
            self.kiosk_id,
            online=online,
            version=self.version,
            presence=presence,
            outbox=_outbox_fields(self.outbox.stats()),
            reason=reason,
        )

    def outbox_stats(self) -> OutboxStats:
        return self.outbox.stats()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._open_outbox()
        self._writer_task = asyncio.create_task(self._writer(), name="telemetry-writer")
        self._tasks = [
            asyncio.create_task(self._connection_loop(), name="telemetry-mqtt"),
            asyncio.create_task(self._metrics_loop(), name="telemetry-metrics"),
        ]
        if self._queue:
            self._queued.set()
        log.info(
            "telemetry to %s:%d as %s (tls %s), outbox %s",
            self.config.host,
            self.config.port,
            self.kiosk_id,
            "on" if self.config.use_tls else "off",
            self.outbox.path,
        )

    async def stop(self) -> None:
        self._stopping.set()
        self._stored.set()  # wakes an idle sender, which then sees _stopping
        tasks, self._tasks = self._tasks, []
        connection, others = (tasks[0], tasks[1:]) if tasks else (None, [])
        for task in others:
            task.cancel()
        if connection is not None:
            if not self.connected:
                # Connecting or backing off: nothing to say goodbye on (the broker sends
                # the will, if it ever saw us). A connect attempt is not waited for.
                connection.cancel()
            # Connected: it publishes the offline status and disconnects; bounded time.
            done, _ = await asyncio.wait([connection], timeout=_STOP_TIMEOUT_S)
            if not done:
                connection.cancel()
                await asyncio.wait([connection])
            elif not connection.cancelled() and connection.exception() is not None:
                log.error("telemetry connection loop failed: %r", connection.exception())
        if others:
            await asyncio.wait(others)
        # Store whatever is still queued, then close the outbox.
        self._closing = True
        self._queued.set()
        if self._writer_task is not None:
            await self._writer_task
        await self.outbox.close()

    async def _open_outbox(self) -> None:
        try:
            await self.outbox.open()
        except sqlite3.DatabaseError as exc:
            # A damaged telemetry database must not keep the card agent from starting.
            path = self.outbox.path
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("telemetry outbox %s unreadable (%s); moved to %s", path, exc, aside)
            await self.outbox.close()
            await asyncio.to_thread(_move_aside, path, aside)
            await self.outbox.open()

    # --- writer: memory -> outbox ----------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(_WRITE_BATCH, len(self._queue)))]
                try:
                    await self.outbox.append(batch)
                except Exception:
                    log.exception("storing %d telemetry messages failed; retrying", len(batch))
                    self._queue.extendleft(reversed(batch))
                    if self._closing:
                        return
                    await asyncio.sleep(1.0)
                    continue
                self._stored.set()
            if self._closing:
                return

    # --- metrics -----------------------------------------------------------------------

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.metrics_interval_s)
            self.enqueue_metrics()

    def enqueue_metrics(self) -> None:
        payload = envelope(self.kiosk_id, "metrics")
        payload.update(
            self._metrics.take(self.outbox.stats(), refused_commands=self.commands.refused)
        )
        payload["outbox"]["dropped_in_memory"] = self.dropped_in_memory
        if self._audit_anchor is not None:
            # Kept by the fleet, the newest audit record's seq and hash let
            # `card-agent audit verify --anchor` detect an edited or cut-off tail.
            seq, digest = self._audit_anchor()
            payload["audit"] = {"seq": seq, "sha256": digest}
        self._enqueue(NewMessage(self.topics["metrics"], payload, critical=False))
        self._status_dirty.set()

    # --- the connection ----------------------------------------------------------------

    def _client(self) -> aiomqtt.Client:
        c = self.config
        tls = None
        if c.use_tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(c.tls_ca) if c.tls_ca else None,
                certfile=str(c.tls_cert) if c.tls_cert else None,
                keyfile=str(c.tls_key) if c.tls_key else None,
            )
        will = aiomqtt.Will(
            self.topics["status"],
            encode(
                status_payload(
                    self.kiosk_id,
                    online=False,
                    version=self.version,
                    presence=None,
                    reason="connection_lost",
                )
            ),
            qos=1,
            retain=True,
        )
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=c.password.get_secret_value() if c.password is not None else None,
            identifier=f"card-agent-{self.kiosk_id}",
            clean_session=True,
            keepalive=c.keepalive_s,
            timeout=max(10.0, 2.0 * c.keepalive_s),
            will=will,
            tls_params=tls,
            max_inflight_messages=self._window,
            # Small QoS 1 packets and their PUBACKs: Nagle + delayed ACK would add ~40 ms
            # to every round trip (the broker wants `set_tcp_nodelay true` likewise).
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=_mqtt_log,
        )
        client.pending_calls_threshold = self._window + 16
        return client

    async def _connection_loop(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            client = self._client()
            try:
                async with client:
                    self.connected = True
                    self._metrics.connects += 1
                    attempt = 0
                    log.info("telemetry connected to %s:%d", self.config.host, self.config.port)
                    await self._session(client)
                    await self._say_goodbye(client)
            except aiomqtt.MqttError as exc:
                if self.connected:
                    log.warning("telemetry connection lost: %s", exc)
                elif attempt == 0:
                    log.warning("telemetry cannot connect to the broker: %s", exc)
                else:
                    log.info("telemetry still cannot connect: %s", exc)
            except Exception:
                log.exception("telemetry connection failed")
            finally:
                if self.connected:
                    self._metrics.disconnects += 1
                self.connected = False
                self._cancel_commands()
            if self._stopping.is_set():
                break
            delay = backoff_delay(
                attempt, self.config.reconnect_min_s, self.config.reconnect_max_s, self._rng
            )
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Run until the connection drops (raises MqttError) or the component stops."""
        granted = await client.subscribe(self.topics["cmd"], qos=1)
        if any(getattr(code, "value", code) >= 0x80 for code in granted):
            log.warning("the broker refused the command subscription (ACL?)")
        await self._publish_status(client)
        sender = asyncio.create_task(self._send(client))
        tasks = [
            sender,
            asyncio.create_task(self._read_commands(client)),
            asyncio.create_task(self._update_status(client)),
            asyncio.create_task(self._stopping.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if self._stopping.is_set() and not sender.done():
                # Let the batch in flight get its acknowledgements (and be deleted), so
                # a clean stop does not send it twice; the sender stops after it.
                done |= (await asyncio.wait([sender], timeout=_STOP_TIMEOUT_S / 2))[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and (exc := task.exception()) is not None:
                raise exc

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        """Stopping: retained offline status, so the will (not sent on a clean
        disconnect) is not needed."""
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            payload = encode(self.status(online=False, reason="shutdown"))
            await client.publish(self.topics["status"], payload, qos=1, retain=True, timeout=2.0)

    async def _publish_status(self, client: aiomqtt.Client) -> None:
        self._status_dirty.clear()
        await client.publish(self.topics["status"], encode(self.status()), qos=1, retain=True)

    async def _update_status(self, client: aiomqtt.Client) -> None:
        while True:
            await self._status_dirty.wait()
            await self._publish_status(client)

    async def _send(self, client: aiomqtt.Client) -> None:
        while not self._stopping.is_set():
            self._stored.clear()
            rows = await self.outbox.peek(self._window)
            if not rows:
                await self._stored.wait()
                continue
            results = await asyncio.gather(
                *(client.publish(row.topic, row.payload, qos=1) for row in rows),
                return_exceptions=True,
            )
            # Delete the acknowledged prefix only: whatever follows a failure is sent
            # again (after it, in order); a duplicate is dropped by its id downstream.
            acked: list[int] = []
            failure: BaseException | None = None
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    failure = result
                    break
                acked.append(row.seq)
            if acked:
                await self.outbox.delete(acked)
                self._metrics.published += len(acked)
            if failure is not None:
                raise failure

    async def _read_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if str(message.topic) != self.topics["cmd"]:
                continue
            raw = message.payload if isinstance(message.payload, bytes) else b""
            task = asyncio.create_task(self._answer(client, raw))
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)

    async def _answer(self, client: aiomqtt.Client, raw: bytes) -> None:
        response = await self.commands.handle(raw)
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(self.topics["cmd/response"], encode(response), qos=1)

    def _cancel_commands(self) -> None:
        for task in list(self._command_tasks):
            task.cancel()

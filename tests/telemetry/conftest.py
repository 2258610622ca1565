"""Telemetry tier: a real `mosquitto` on a free loopback port, per test.

`broker` starts mosquitto with a generated configuration (`-c file`: listener
127.0.0.1 PORT, anonymous clients, persistence in the test's directory so persistent
subscriber sessions and retained messages survive `broker.restart()` / `broker.down()`),
waits until it accepts connections and stops it after the test. `make_broker(...)`
builds one with extra configuration (password file, ACL).

`Collector` is a paho client on its own network thread with a persistent session
(QoS 1 subscription, fixed client id): it reconnects by itself after a broker restart
and gets what was published while it was away. Tests poll it with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.config import MqttConfig

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0
DEFAULT_WAIT_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    root: Path
    port: int
    extra_conf: str = ""
    anonymous: bool = True
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf_path(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.root / "mosquitto.log"

    def write_conf(self) -> None:
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
        ]
        if os.getuid() == 0:
            lines.append("user root")  # otherwise it drops to "mosquitto" and cannot read
        self.conf_path.write_text("\n".join(lines) + "\n" + self.extra_conf + "\n")

    def start(self) -> None:
        assert self.proc is None, "already running"
        self.write_conf()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("mosquitto did not accept connections in time")
            time.sleep(0.01)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The broker is stopped inside the block and started again (same port) after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    brokers: list[Broker] = []

    def make(*, extra_conf: str = "", anonymous: bool = True, start: bool = True) -> Broker:
        root = tmp_path / f"broker{len(brokers)}"
        root.mkdir()
        broker = Broker(root, free_port(), extra_conf=extra_conf, anonymous=anonymous)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


@pytest.fixture
def broker(make_broker: Callable[..., Broker]) -> Broker:
    return make_broker()


# --- the subscriber --------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Collector:
    port: int
    topic: str = "card-agent/#"
    username: str | None = None
    password: str | None = None
    client_id: str = "test-collector"
    messages: list[Msg] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        if self.username is not None:
            self._client.username_pw_set(self.username, self.password)
        self._client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _m: Any, codes: Any, _p: Any) -> None:
        if all(not code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Msg(message.topic, bytes(message.payload), bool(message.retain)))

    def start(self) -> Collector:
        self._client.connect_async("127.0.0.1", self.port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(DEFAULT_WAIT_S):
            raise AssertionError("collector did not subscribe")
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def snapshot(self, leaf: str | None = None) -> list[Msg]:
        with self._lock:
            msgs = list(self.messages)
        if leaf is None:
            return msgs
        return [m for m in msgs if m.topic.endswith("/" + leaf)]

    def payloads(self, leaf: str) -> list[Any]:
        return [m.json() for m in self.snapshot(leaf)]

    def events(self, kind: str | None = None) -> list[Any]:
        out = self.payloads("events")
        return out if kind is None else [p for p in out if p.get("type") == kind]

    def unique_events(self, kind: str | None = None) -> list[Any]:
        """Events deduplicated by id (first delivery kept), as a consumer would."""
        seen: set[str] = set()
        out = []
        for payload in self.events(kind):
            if payload["id"] not in seen:
                seen.add(payload["id"])
                out.append(payload)
        return out

    def last_status(self) -> Any:
        statuses = self.payloads("status")
        return statuses[-1] if statuses else None


@pytest.fixture
def collect() -> Iterator[Callable[..., Collector]]:
    collectors: list[Collector] = []

    def make(port: int, **kwargs: Any) -> Collector:
        kwargs.setdefault("client_id", f"test-collector-{len(collectors)}")
        collector = Collector(port, **kwargs).start()
        collectors.append(collector)
        return collector

    yield make
    for collector in collectors:
        collector.stop()


# --- polling with deadlines --------------------------------------------------------


async def until(predicate: Callable[[], Any], what: str, timeout: float = DEFAULT_WAIT_S) -> Any:
    """Poll `predicate` on the running loop until it is truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_sync(predicate: Callable[[], Any], what: str, timeout: float = DEFAULT_WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def mqtt_config(port: int, kiosk_id: str = "kiosk-1", **overrides: Any) -> MqttConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "host": "127.0.0.1",
        "port": port,
        "kiosk_id": kiosk_id,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.25,
        "keepalive_s": 5,
        "metrics_interval_s": 3600,
    }
    values.update(overrides)
    return MqttConfig(**values)

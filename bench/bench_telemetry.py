"""Telemetry benchmark: the durable outbox to a real mosquitto on loopback.

Measures, with the real `TelemetryPublisher` (SQLite outbox in WAL with
synchronous=FULL, QoS 1, aiomqtt), a mosquitto started by this script on a free
loopback port, and a subscriber (paho, own thread, QoS 1, persistent session) that
counts what the broker delivers:

1. store rate: events/s into the outbox alone (broker down: nothing is sent);
2. throughput: N events offered as fast as the loop takes them while connected; events/s
   from the first event until the subscriber has all N (and the outbox is empty);
3. backlog drain: the broker is stopped, B events (default 10,000) are made and stored,
   the broker is started again on the same port (persistence: the subscriber's session
   survives); the time from "broker accepting connections" until the outbox is empty
   (every event PUBACKed and deleted) and until the subscriber has them all. This
   includes the publisher's reconnect back-off (reconnect_min_s 0.05 s here; the
   default 1 s would add up to 1 s).

Each is run for the publish windows given (`--windows 1,64,256`: 1 = one QoS 1 message
in flight at a time, i.e. a round trip per event; 64 = the default). The broker runs
with `set_tcp_nodelay true`, as examples/mosquitto/mosquitto.conf recommends.

Usage:
    .venv/bin/python bench/bench_telemetry.py [--events 20000] [--backlog 10000]
        [--windows 1,64,256] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import MqttConfig
from agent.telemetry import TelemetryPublisher

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
KIOSK = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        conf = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {root}/",
            "autosave_interval 0",
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "log_dest none",
            "set_tcp_nodelay true",
        ]
        if os.getuid() == 0:
            conf.append("user root")
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            time.sleep(0.005)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Counter:
    """Subscriber: counts distinct event seqs delivered on the events topic."""

    def __init__(self, port: int) -> None:
        self.seqs: set[int] = set()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-counter", clean_session=False
        )
        self.client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]
        self.client.max_inflight_messages_set(1000)
        self.client.on_connect = lambda c, *_: c.subscribe(f"card-agent/v1/{KIOSK}/events", 1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("subscriber did not subscribe")

    def _on_message(self, _c: Any, _u: Any, message: paho.MQTTMessage) -> None:
        seq = json.loads(message.payload)["seq"]
        with self.lock:
            self.seqs.add(seq)

    def count(self) -> int:
        with self.lock:
            return len(self.seqs)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(predicate: Callable[[], bool], timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish in time")
        await asyncio.sleep(0.002)
    return time.perf_counter()


def offer(publisher: TelemetryPublisher, start: int, n: int) -> None:
    for i in range(start, start + n):
        publisher.on_event(
            "sign",
            {
                "ok": True,
                "purpose": "agreement",
                "algorithm": "SM2-SM3",
                "duration_ms": 120.5,
                "audit_id": f"a-{i:012x}",
            },
        )


async def offer_all(publisher: TelemetryPublisher, n: int, chunk: int = 500) -> None:
    """Offer n events, yielding to the loop every `chunk` (as a busy agent would)."""
    for start in range(0, n, chunk):
        offer(publisher, start, min(chunk, n - start))
        await asyncio.sleep(0)


async def run_window(root: Path, window: int, events: int, backlog: int) -> dict[str, Any]:
    broker = Broker(root)
    broker.start()
    counter = Counter(broker.port)
    config = MqttConfig(
        enabled=True,
        host="127.0.0.1",
        port=broker.port,
        kiosk_id=KIOSK,
        reconnect_min_s=0.05,
        reconnect_max_s=0.25,
        metrics_interval_s=3600,
        outbox_max_events=max(events, backlog) * 2,
    )
    publisher = TelemetryPublisher(
        config, state_dir=root / "state", version="bench", publish_window=window
    )
    result: dict[str, Any] = {"window": window}
    try:
        # 1. store rate, broker down.
        broker.stop()
        await publisher.start()
        t0 = time.perf_counter()
        await offer_all(publisher, events)
        t1 = await until(lambda: publisher.outbox_stats().stored_total >= events)
        result["store_events_per_s"] = round(events / (t1 - t0))
        db_bytes = sum(f.stat().st_size for f in (root / "state").glob("telemetry-outbox*"))
        result["outbox_bytes_per_event"] = round(db_bytes / events)
        # Send them (not measured), so the outbox is empty for the next step.
        broker.start()
        await until(lambda: publisher.outbox_stats().pending == 0 and counter.count() >= events)

        # 2. throughput while connected.
        base = counter.count()
        stored = publisher.outbox_stats().stored_total
        t0 = time.perf_counter()
        await offer_all(publisher, events)
        t_stored = await until(lambda: publisher.outbox_stats().stored_total >= stored + events)
        t1 = await until(
            lambda: counter.count() >= base + events and publisher.outbox_stats().pending == 0
        )
        result["throughput_events_per_s"] = round(events / (t1 - t0))
        result["throughput_offer_to_stored_s"] = round(t_stored - t0, 3)

        # 3. backlog after an outage.
        base = counter.count()
        stored = publisher.outbox_stats().stored_total
        await asyncio.to_thread(broker.stop)
        await until(lambda: not publisher.connected)
        await offer_all(publisher, backlog)
        await until(lambda: publisher.outbox_stats().stored_total >= stored + backlog)
        assert publisher.outbox_stats().pending == backlog
        await asyncio.to_thread(broker.start)
        t0 = time.perf_counter()
        t_conn = await until(lambda: publisher.connected)
        t_empty = await until(lambda: publisher.outbox_stats().pending == 0)
        t_all = await until(lambda: counter.count() >= base + backlog)
        result["backlog_events"] = backlog
        result["backlog_reconnect_s"] = round(t_conn - t0, 3)
        result["backlog_drain_s"] = round(t_empty - t0, 3)
        result["backlog_delivered_s"] = round(t_all - t0, 3)
        result["backlog_events_per_s"] = round(backlog / (t_empty - t_conn))
        result["delivered_distinct"] = counter.count()
    finally:
        await publisher.stop()
        counter.stop()
        broker.stop()
    return result


def environment() -> dict[str, Any]:
    version = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    return {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "mosquitto": version.splitlines()[0] if version else "?",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--backlog", type=int, default=10000)
    parser.add_argument("--windows", default="1,64,256")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    env = environment()
    print(json.dumps(env))
    results = []
    for window in (int(w) for w in args.windows.split(",")):
        with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as tmp:
            result = asyncio.run(run_window(Path(tmp), window, args.events, args.backlog))
        print(json.dumps(result))
        results.append(result)
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": results}, indent=2))


if __name__ == "__main__":
    main()

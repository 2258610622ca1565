"""The fleet back end's side of telemetry: a QoS 1 subscriber with a persistent session
(fixed client id, clean_session off), as docs/telemetry.md tells consumers to be. It
reconnects by itself after a broker outage and then gets what was queued for it.

Messages are kept as received (duplicates included); `books` dedupes them by `seq` and
checks that one `seq` never carries two different message ids.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

SUBSCRIBE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Received:
    leaf: str  # "events", "metrics", "status", ...
    payload: dict[str, Any]


class Collector:
    def __init__(self, port: int, kiosk_id: str) -> None:
        self._prefix = f"card-agent/v1/{kiosk_id}/"
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self.undecodable = 0
        self.connects = 0
        self._subscribed = threading.Event()
        self._port = port
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"soak-fleet-{os.getpid()}",
            clean_session=False,
        )
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if not rc.is_failure:
            self.connects += 1
            client.subscribe(self._prefix + "#", qos=1)

    def _on_subscribe(self, _c: paho.Client, _u: Any, _m: Any, codes: Any, _p: Any) -> None:
        if all(not code.is_failure for code in codes):
            self._subscribed.set()

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        leaf = message.topic.removeprefix(self._prefix)
        try:
            payload = json.loads(message.payload)
        except ValueError:
            payload = None
        with self._lock:
            if isinstance(payload, dict):
                self._messages.append(Received(leaf, payload))
            else:
                self.undecodable += 1

    def start(self) -> None:
        self._client.connect_async("127.0.0.1", self._port, keepalive=10)
        self._client.loop_start()
        if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            raise RuntimeError("the telemetry collector could not subscribe")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    def seqs(self) -> set[int]:
        """`seq` of every outbox message (events and metrics) received so far."""
        return {
            int(m.payload["seq"])
            for m in self.snapshot()
            if m.leaf in ("events", "metrics") and isinstance(m.payload.get("seq"), int)
        }

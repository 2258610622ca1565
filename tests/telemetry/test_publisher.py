"""The telemetry component against a real mosquitto: delivery, outages, overflow,
remote commands."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.telemetry import TelemetryPublisher
from tests.telemetry.conftest import Broker, Collector, mqtt_config, until

KIOSK = "kiosk-1"
PRESENCE = {"reader_present": True, "card_present": False}


def make_publisher(broker: Broker, root: Path, **overrides: Any) -> TelemetryPublisher:
    return TelemetryPublisher(
        mqtt_config(broker.port, KIOSK, **overrides),
        state_dir=root,
        version="9.9.9",
        presence=lambda: PRESENCE,
    )


def sign_event(p: TelemetryPublisher, n: int) -> None:
    p.on_event(
        "sign",
        {
            "ok": True,
            "purpose": "seal",
            "algorithm": "SM2_SM3",
            "duration_ms": float(n),
            "audit_id": f"a-{n:012x}",
        },
    )


def audit_numbers(events: list[Any]) -> list[int]:
    return [int(e["audit_id"][2:], 16) for e in events if e["type"] == "signature"]


def test_events_status_metrics_arrive(
    broker: Broker, collect: Callable[..., Collector], tmp_path: Path
) -> None:
    sub = collect(broker.port)

    async def main() -> None:
        p = make_publisher(broker, tmp_path)
        await p.start()
        await until(lambda: (sub.last_status() or {}).get("state") == "online", "online status")
        status = sub.last_status()
        assert status["version"] == "9.9.9"
        assert status["kiosk"] == KIOSK
        assert status["reader_present"] is True
        assert status["card_present"] is False
        assert status["outbox"]["dropped_total"] == 0

        p.on_event("card_inserted", {})
        p.on_event("pin_verify", {"ok": False, "code": "pin_incorrect"})
        p.on_event("pin_verify", {"ok": True})
        for n in range(20):
            sign_event(p, n)
        p.on_event("sign", {"ok": False, "code": "card_changed", "purpose": "seal"})
        p.on_event("card_removed", {})
        await until(lambda: len(sub.events()) == 25, "25 events")
        events = sub.events()
        assert [e["type"] for e in events[:3]] == ["card_inserted", "pin_verify", "pin_verify"]
        assert audit_numbers(events) == list(range(20))
        assert [e["type"] for e in events[-2:]] == ["error", "card_removed"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs)
        assert len(set(seqs)) == 25
        assert len({e["id"] for e in events}) == 25
        assert all(m.topic == f"card-agent/v1/{KIOSK}/events" for m in sub.snapshot("events"))

        p.enqueue_metrics()
        metrics = (await until(lambda: sub.payloads("metrics"), "metrics"))[0]
        assert metrics["events"]["signature"] == 20
        assert metrics["events"]["pin_verify_ok"] == 1
        assert metrics["events"]["pin_verify_failed"] == 1
        assert metrics["errors"] == {"pin_incorrect": 1, "card_changed": 1}
        assert metrics["sign_latency_ms"]["count"] == 20
        assert metrics["sign_latency_ms"]["max"] == 19.0
        assert metrics["mqtt"]["connects"] == 1

        await p.stop()
        status = sub.last_status()
        assert status["state"] == "offline"
        assert status["reason"] == "shutdown"
        assert p.outbox_stats().pending == 0

    asyncio.run(main())
    # The retained status is what a console connecting later sees.
    late = collect(broker.port, topic=f"card-agent/v1/{KIOSK}/status")
    msg = wait_retained(late)
    assert msg["state"] == "offline"


def wait_retained(collector: Collector) -> Any:
    async def main() -> Any:
        msgs = await until(lambda: [m for m in collector.snapshot() if m.retain], "retained")
        return msgs[-1].json()

    return asyncio.run(main())


def test_broker_outages_lose_nothing_and_keep_order(
    broker: Broker, collect: Callable[..., Collector], tmp_path: Path
) -> None:
    sub = collect(broker.port)

    async def main() -> None:
        p = make_publisher(broker, tmp_path)
        await p.start()
        n = 0
        for _ in range(5):
            sign_event(p, n)
            n += 1
        await until(lambda: len(sub.unique_events()) == 5, "first events")

        # Outage 1: events made while the broker is down are stored, then all arrive.
        await asyncio.to_thread(broker.stop)
        await until(lambda: not p.connected, "publisher notices the outage")
        for _ in range(1500):
            sign_event(p, n)
            n += 1
        await until(lambda: p.outbox_stats().pending == 1500, "backlog stored")
        await asyncio.to_thread(broker.start)
        # Outage 2, while the backlog drains (if it has not drained already).
        await until(lambda: len(sub.unique_events()) > 5, "drain started", timeout=15)
        await asyncio.to_thread(broker.stop)
        for _ in range(100):
            sign_event(p, n)
            n += 1
        await asyncio.to_thread(broker.start)
        await until(lambda: len(sub.unique_events()) == n, f"all {n} events", timeout=20)
        assert audit_numbers(sub.unique_events()) == list(range(n))  # none lost, in order
        await until(lambda: p.outbox_stats().pending == 0, "outbox drained")
        assert p._metrics.connects >= 3
        await p.stop()

    asyncio.run(main())


def test_outbox_overflow_policy(
    broker: Broker, collect: Callable[..., Collector], tmp_path: Path
) -> None:
    sub = collect(broker.port)
    broker.stop()  # the collector's persistent session waits on the broker

    async def main() -> None:
        p = make_publisher(broker, tmp_path, outbox_max_events=20)
        await p.start()
        # 5 critical (signatures) among 30 non-critical card events: 35 > 20.
        for i in range(35):
            if i % 7 == 3:
                sign_event(p, i)
            else:
                p.on_event("card_inserted" if i % 2 else "card_removed", {})
        await until(lambda: p.outbox_stats().stored_total == 35, "stored")
        stats = p.outbox_stats()
        assert (stats.pending, stats.dropped_total, stats.dropped_critical) == (20, 15, 0)

        await asyncio.to_thread(broker.start)
        await until(lambda: len(sub.unique_events()) == 20, "the 20 kept")
        kept = sub.unique_events()
        assert audit_numbers(kept) == [3, 10, 17, 24, 31]  # every critical one
        # ... and the newest 15 of the 30 non-critical ones (seq = i + 1).
        non_critical = [i + 1 for i in range(35) if i % 7 != 3]
        assert [e["seq"] for e in kept if e["type"] != "signature"] == non_critical[-15:]
        # The drop counter is published (metrics and status).
        p.enqueue_metrics()
        metrics = (await until(lambda: sub.payloads("metrics"), "metrics"))[-1]
        assert metrics["outbox"]["dropped_total"] == 15
        assert metrics["outbox"]["dropped_critical"] == 0
        await until(
            lambda: (sub.last_status() or {}).get("outbox", {}).get("dropped_total") == 15,
            "status with the drop counter",
        )
        await p.stop()

    asyncio.run(main())


def test_remote_commands(
    broker: Broker,
    collect: Callable[..., Collector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    sub = collect(broker.port)
    cmd_topic = f"card-agent/v1/{KIOSK}/cmd"

    def send(request: dict[str, Any]) -> None:
        sub._client.publish(cmd_topic, json.dumps(request), qos=1)

    def response(request_id: str) -> Any:
        found = [r for r in sub.payloads("response") if r.get("id") == request_id]
        return found[0] if found else None

    async def main() -> None:
        p = make_publisher(broker, tmp_path)
        await p.start()
        await until(lambda: sub.last_status(), "online")

        send({"id": "s1", "command": "status"})
        r = await until(lambda: response("s1"), "status response")
        assert r["ok"] is True
        assert r["result"]["state"] == "online"
        assert r["result"]["reader_present"] is True

        send({"id": "t1", "command": "selftest"})
        r = await until(lambda: response("t1"), "selftest response")
        assert r["ok"] is False
        assert r["message"] == "selftest not available"

        async def selftest() -> dict[str, Any]:
            return {"ok": True, "checks": [{"name": "reader", "ok": True}]}

        p.selftest_hook = selftest
        send({"id": "t2", "command": "selftest"})
        r = await until(lambda: response("t2"), "selftest response")
        assert r["ok"] is True
        assert r["result"]["checks"] == [{"name": "reader", "ok": True}]
        event = (await until(lambda: sub.events("selftest"), "selftest event"))[0]
        assert event["result"]["ok"] is True

        for rid, request in (
            ("x1", {"command": "verify_pin", "pin": "246813"}),
            ("x2", {"command": "sign", "data": "c2VjcmV0LWRvYw=="}),
            ("x3", {"command": "change_pin", "old": "246813", "new": "975310"}),
            ("x4", {"command": "reboot"}),
        ):
            send({"id": rid, **request})
            r = await until(lambda rid=rid: response(rid), f"response {rid}")
            assert r["ok"] is False
            assert r["error"] == "command_refused"
        await p.stop()

    asyncio.run(main())
    refused = [r for r in caplog.records if "refused remote command" in r.getMessage()]
    assert len(refused) == 4
    logged = caplog.text
    responses = b"".join(m.payload for m in sub.snapshot("response"))
    for secret in ("246813", "975310", "c2VjcmV0LWRvYw=="):
        assert secret not in logged
        assert secret.encode() not in responses


def test_unreadable_outbox_is_moved_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from agent.telemetry.outbox import OUTBOX_FILE
    from tests.telemetry.conftest import free_port

    (tmp_path / OUTBOX_FILE).write_bytes(b"this is not a database" * 100)

    async def main() -> None:
        p = TelemetryPublisher(
            mqtt_config(free_port(), KIOSK), state_dir=tmp_path, version="1"
        )  # nothing listens on that port
        await p.start()
        p.on_event("card_inserted", {})
        await until(lambda: p.outbox_stats().pending == 1, "stored in a fresh outbox")
        await p.stop()

    asyncio.run(main())
    assert "unreadable" in caplog.text
    assert list(tmp_path.glob(f"{OUTBOX_FILE}.corrupt-*"))

"""A stand-in agent for the SIGKILL test: the telemetry component fed by a fake event
source. `python -m tests.telemetry.child --port P --state DIR --run N --events K`
publishes K signature events (audit ids encode run and index), prints "stored K" once
they are all in the outbox, then runs until it is killed."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from agent.config import MqttConfig
from agent.telemetry import TelemetryPublisher


async def main(args: argparse.Namespace) -> None:
    config = MqttConfig(
        enabled=True,
        host="127.0.0.1",
        port=args.port,
        kiosk_id=args.kiosk,
        reconnect_min_s=0.05,
        reconnect_max_s=0.25,
        keepalive_s=5,
        metrics_interval_s=3600,
    )
    publisher = TelemetryPublisher(
        config,
        state_dir=Path(args.state),
        version="0.0.0-child",
        presence=lambda: {"reader_present": True, "card_present": True},
    )
    await publisher.start()
    print("started", flush=True)
    for i in range(args.events):
        publisher.on_event(
            "sign",
            {
                "ok": True,
                "purpose": "seal",
                "algorithm": "SM2_SM3",
                "duration_ms": 1.0,
                "audit_id": f"a-{args.run:04x}{i:08x}",
            },
        )
    while publisher.outbox_stats().stored_total < args.events:
        await asyncio.sleep(0.005)
    print(f"stored {args.events}", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--kiosk", default="kiosk-kill")
    parser.add_argument("--run", type=int, default=0)
    parser.add_argument("--events", type=int, default=0)
    asyncio.run(main(parser.parse_args()))

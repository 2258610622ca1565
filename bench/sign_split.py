"""Where a signature's time goes outside the card, one client at a time.

Starts `card-agent serve` (simulated card, instant or realistic timing) with
bench/sign_split/ on its PYTHONPATH: a sitecustomize that wraps the ASGI app and logs,
per request, the moment the answer started and ended. One keep-alive client sends
`POST /v1/sign` (a 32-byte digest) in a closed loop, then `GET /v1/status`; the medians
split the client's latency into: the card, the wait for the card owner thread (queue),
the sign handler's own work (Server-Timing app - card - queue), the rest of the ASGI
stack before the answer starts (middleware, body, dependencies, response model), sending
the answer, and what lies outside the app (kernel, h11, the client).

    .venv/bin/python bench/sign_split.py [--seconds 10] [--timing instant|realistic]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_agent import (  # noqa: E402
    RawClient,
    RawConnection,
    Server,
    encode_request,
    pair_and_verify,
    verify_pin,
)


def server_timing(value: str) -> dict[str, float]:
    out = {}
    for part in value.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


async def closed_loop(port: int, request: bytes, seconds: float) -> list[float]:
    conn = await RawConnection.open(port)
    latencies = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            sent = time.perf_counter()
            reply = await conn.send(request)
            latencies.append((time.perf_counter() - sent) * 1000)
            if reply.status != 200:
                raise RuntimeError(f"{reply.status} {reply.body[:200]!r}")
    finally:
        await conn.close()
    return latencies


def split(log: Path, path: str, skip: int) -> dict[str, float]:
    rows = []
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if fields[0] == path:
            rows.append((float(fields[2]), float(fields[3]), server_timing(fields[4])))
    rows = rows[skip:]
    med = statistics.median
    result = {"asgi": med(r[1] for r in rows), "n": len(rows)}
    if rows and rows[0][2]:
        result |= {
            "card": med(r[2]["card"] for r in rows),
            "queue": med(r[2]["queue"] for r in rows),
            "handler": med(r[2]["app"] - r[2]["card"] - r[2]["queue"] for r in rows),
            "around": med(r[0] - r[2]["app"] for r in rows),
            "send": med(r[1] - r[0] for r in rows),
        }
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per request kind")
    parser.add_argument("--timing", choices=["instant", "realistic"], default="instant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "split.log"
        os.environ["BENCH_SIGN_SPLIT_LOG"] = str(log)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "bench" / "sign_split"), os.environ.get("PYTHONPATH", "")]
        )
        state = Path(tmp) / "state"
        state.mkdir()
        server = Server(args.timing, state)
        server.start()
        try:
            client = RawClient(server.port)
            await server.wait_ready(client)
            token = await pair_and_verify(server, client)
            await verify_pin(client, token)
            digest = base64.b64encode(bytes(range(32))).decode()
            body = {"digest": digest, "purpose": "other", "title": "bench"}
            sign = encode_request(server.port, "POST", "/v1/sign", body, token)
            status = encode_request(server.port, "GET", "/v1/status", None, None)
            warm = 1.0
            await closed_loop(server.port, sign, warm)
            skip = sum(1 for line in log.read_text().splitlines() if line.startswith("/v1/sign"))
            sign_lat = await closed_loop(server.port, sign, args.seconds)
            status_lat = await closed_loop(server.port, status, args.seconds)
        finally:
            server.stop()
        s = split(log, "/v1/sign", skip)
        n = split(log, "/v1/status", 0)
    med = statistics.median
    lat = med(sign_lat)
    rows = [
        ("card (Server-Timing card)", s["card"]),
        ("waiting for the card owner thread (queue)", s["queue"]),
        ("the sign handler's own work (app - card - queue)", s["handler"]),
        ("ASGI stack before the answer (start - app)", s["around"]),
        ("sending the answer (end - start)", s["send"]),
        ("outside the app: kernel, h11, client (latency - end)", lat - s["asgi"]),
        ("overhead = latency - card - queue", lat - s["card"] - s["queue"]),
    ]
    print(f"card-agent serve, simulated card ({args.timing}), 1 client, medians in ms")
    print(f"POST /v1/sign ({s['n']:.0f} requests): client latency {lat:.3f}")
    for name, value in rows:
        print(f"  {name:<56}{value:8.3f}")
    print(f"GET /v1/status ({n['n']:.0f} requests): client latency {med(status_lat):.3f}")
    print(f"  {'the whole ASGI app':<56}{n['asgi']:8.3f}")


if __name__ == "__main__":
    asyncio.run(main())

"""End-to-end load benchmark of `card-agent serve` on the simulated card.

For each timing model of the simulated card (`instant`, then `realistic`) this script

1. starts `card-agent serve` as a subprocess: a fresh temporary state directory, a free
   loopback port, the card in memory only, a queue big enough that 32 clients never
   get `busy`;
2. pairs a client through the real flow (POST /v1/pair, the `card-agent pair approve
   CODE` command in a subprocess, POST /v1/pair/claim) and verifies the PIN;
3. runs a closed-loop load generator (N clients, each sends its next request as soon as
   the previous answer arrived, one keep-alive connection each) at 1, 8 and 32 clients:
   POST /v1/sign with a 32-byte digest, then GET /v1/status as the "null" baseline (the
   HTTP stack alone: uvicorn, middleware, routing, JSON, the load generator itself);
4. reads the server's RSS (VmRSS) after start-up and after the load.

Per request it records the client-measured latency and the server's
`Server-Timing: card;dur=X, queue;dur=Y, app;dur=Z`, and reports

    overhead = latency - card - queue

i.e. the time the agent (plus the HTTP stack and the load generator) adds outside the
card job and outside waiting for the card owner thread.

The load generator is raw HTTP/1.1 over asyncio streams by default: httpx.AsyncClient
costs about ten times more client CPU per request (~1-1.4 ms against ~0.12-0.15 ms
measured here), and on a 2-core machine the client competes with the server for the
CPU, which shows up as "agent overhead" (`--client httpx` to compare; the client CPU
per request is printed either way). Realistic sign phases last 3 x --duration: that
card answers ~6 times a second.

Two backends: `simulated` (the software card in the agent's process, as in the test
tiers) and `pcsc` (the same card in its own process behind a private pcscd + vpcd, as
on a kiosk: the agent's CPU then excludes the card's own computation, and includes the
PC/SC client's). The server-CPU target is judged on `pcsc`.

Targets (issue 14), each a figure of this run: overhead p50 <= 1 ms and p99 <= 2 ms at
32 clients with the realistic card; server CPU per signature <= 4 x a status request.

Usage:
    .venv/bin/python bench/bench_agent.py [--quick] [--json FILE] [--client raw|httpx]
        [--backends simulated pcsc] [--models instant realistic]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PIN = "88888888"
HOST = "127.0.0.1"
CONCURRENCY = (1, 8, 32)
MODELS = ("instant", "realistic")
START_TIMEOUT_S = 30.0
MAX_REQUESTS_PER_PHASE = 500_000  # a hard bound whatever the duration
REQUEST_TIMEOUT_S = 30.0  # httpx client timeout
PHASE_SLACK_S = 90.0  # first round + drain: 32 x a slow card, plus margin
TARGET_OVERHEAD_P50_MS = 1.0
TARGET_OVERHEAD_P99_MS = 2.0
TARGET_CPU_RATIO = 4.0  # server CPU per signature / per status request
BACKENDS = ("simulated", "pcsc")
REALISTIC_SIGN_FACTOR = 3  # realistic sign phases last 3 x --duration
TARGET_RSS_MB = 80.0


# --- small helpers ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100), at least 1
    return ordered[int(rank) - 1]


def rate(done_at: list[float], window_s: float) -> float:
    """Answers per second. At a few per second, counting answers in a window is off by up
    to one answer per window; the mean interval between the first and the last is not."""
    if len(done_at) >= 10:
        done_at = sorted(done_at)
        return (len(done_at) - 1) / (done_at[-1] - done_at[0])
    return len(done_at) / window_s


def proc_status(pid: int) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def rss_mb(pid: int) -> float:
    kb = int(proc_status(pid)["VmRSS"].split()[0])
    return kb / 1024


def descendants(pid: int) -> list[int]:
    """All processes below `pid` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def server_stats(pid: int) -> dict[str, Any]:
    st = proc_status(pid)
    return {
        "rss_mb": round(rss_mb(pid), 1),
        "threads": int(st["Threads"]),
        "child_processes": len(descendants(pid)),
    }


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def system_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all CPUs), in seconds."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def parse_server_timing(value: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in value.split(","):
        name, _, params = metric.strip().partition(";")
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key == "dur":
                out[name.strip()] = float(val)
    return out


# --- HTTP clients ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def send(self, request: bytes) -> Reply:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        return Reply(status, headers, body)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def encode_request(
    port: int, method: str, path: str, body: Any = None, token: str | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    payload = b""
    if body is not None:
        payload = json.dumps(body, separators=(",", ":")).encode()
        lines.append("Content-Type: application/json")
    if body is not None or method == "POST":
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


class RawClient:
    """A tiny client for the set-up calls and the factory of load connections."""

    name = "raw"

    def __init__(self, port: int) -> None:
        self.port = port

    async def call(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> Reply:
        conn = await RawConnection.open(self.port)
        try:
            return await conn.send(encode_request(self.port, method, path, body, token))
        finally:
            await conn.close()

    async def worker(
        self, method: str, path: str, body: Any, token: str | None
    ) -> tuple[Callable[[], Awaitable[Reply]], Callable[[], Awaitable[None]]]:
        conn = await RawConnection.open(self.port)
        request = encode_request(self.port, method, path, body, token)

        async def send() -> Reply:
            return await conn.send(request)

        return send, conn.close


class HttpxClient(RawClient):
    """httpx.AsyncClient with keep-alive: one client (one connection) per worker."""

    name = "httpx"

    async def worker(
        self, method: str, path: str, body: Any, token: str | None
    ) -> tuple[Callable[[], Awaitable[Reply]], Callable[[], Awaitable[None]]]:
        import httpx

        client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{self.port}",
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=REQUEST_TIMEOUT_S,
        )
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        content = json.dumps(body, separators=(",", ":")).encode() if body is not None else None
        if content is not None:
            headers["Content-Type"] = "application/json"

        async def send() -> Reply:
            r = await client.request(method, path, content=content, headers=headers)
            return Reply(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)

        return send, client.aclose


# --- the server under test ----------------------------------------------------------


class PcscCard:
    """A private pcscd with vpcd readers, and `card-sim vpcd` holding the card."""

    READER = "Virtual PCD 00 00"

    def __init__(self, timing: str, workdir: Path) -> None:
        from simulator.pcscd import (
            free_port_pair,
            pcscd_command,
            unshare_prefix,
            vpcd_driver,
            write_vpcd_conf,
        )

        driver, prefix = vpcd_driver(), unshare_prefix(probe=False)
        if driver is None or prefix is None:
            raise SystemExit("the pcsc backend needs pcscd, vsmartcard-vpcd and unshare")
        self.port = free_port_pair()
        (workdir / "sock").mkdir()
        write_vpcd_conf(workdir / "conf", self.port, driver)
        self.socket = str(workdir / "sock" / "pcscd.comm")
        self.workdir = workdir
        self.pcscd_cmd = pcscd_command(workdir / "conf", workdir / "sock", prefix)
        bindir = Path(sys.executable).parent
        self.card_cmd = [
            str(bindir / "card-sim"),
            "vpcd",
            "legal-person-sm2",
            "--port",
            str(self.port),
            "--timing",
            timing,
        ]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for name, cmd in (("pcscd", self.pcscd_cmd), ("card", self.card_cmd)):
            log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - the child's
            try:
                self.procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.PIPE if name == "card" else subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, "PCSCLITE_CSOCK_NAME": self.socket},
                    )
                )
            finally:
                log.close()
            time.sleep(0.5)  # pcscd first: vpcd's port must listen before the card dials

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


class Server:
    def __init__(self, timing: str, state_dir: Path, pcsc: PcscCard | None = None) -> None:
        self.timing = timing
        self.state_dir = state_dir
        self.port = free_port()
        bindir = Path(sys.executable).parent
        self.exe = shutil.which("card-agent", path=str(bindir)) or str(bindir / "card-agent")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARD_AGENT_")}
        env.update(
            {
                "CARD_AGENT_SERVER__HOST": HOST,
                "CARD_AGENT_SERVER__PORT": str(self.port),
                "CARD_AGENT_PATHS__STATE_DIR": str(state_dir),
                "CARD_AGENT_CARD__BACKEND": "simulated",
                "CARD_AGENT_CARD__SIM_STATE_FILE": "",  # the card lives in memory only
                "CARD_AGENT_CARD__TIMING": timing,
                "CARD_AGENT_CARD__QUEUE_SIZE": "64",  # 32 clients never see `busy`
                "PYTHONUNBUFFERED": "1",
            }
        )
        if pcsc is not None:
            env.update(
                {
                    "CARD_AGENT_CARD__BACKEND": "pcsc",
                    "CARD_AGENT_CARD__READER": PcscCard.READER,
                    "PCSCLITE_CSOCK_NAME": pcsc.socket,
                }
            )
        self.env = env
        self.log_path = state_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the child
        try:
            self.proc = subprocess.Popen(
                [self.exe, "serve", "--log-level", "warning"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C does not reach it; stop() does
            )
        finally:
            log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def wait_ready(self, client: RawClient) -> float:
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT_S:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"card-agent exited with {self.proc.returncode}: {self.tail()}")
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                reply = await client.call("GET", "/v1/status")
                if reply.status == 200 and reply.json().get("card_present"):
                    return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"card-agent not ready after {START_TIMEOUT_S} s: {self.tail()}")

    def approve(self, code: str) -> None:
        done = subprocess.run(
            [self.exe, "pair", "approve", code],
            env=self.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"pair approve failed: {done.stderr.decode(errors='replace')}")

    def tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


async def pair_and_verify(server: Server, client: RawClient) -> str:
    reply = await client.call("POST", "/v1/pair", {"client_name": "bench_agent"})
    if reply.status != 201:
        raise RuntimeError(f"POST /v1/pair: {reply.status} {reply.body[:200]!r}")
    req = reply.json()
    await asyncio.to_thread(server.approve, req["code"])
    reply = await client.call("POST", "/v1/pair/claim", {"request_id": req["request_id"]})
    if reply.status != 200:
        raise RuntimeError(f"POST /v1/pair/claim: {reply.status} {reply.body[:200]!r}")
    token = str(reply.json()["token"])
    await verify_pin(client, token)
    return token


async def verify_pin(client: RawClient, token: str) -> None:
    """Also renews the signing session (idle 180 s, TTL 600 s) before every phase."""
    reply = await client.call("POST", "/v1/pin/verify", {"pin": PIN}, token)
    if reply.status != 200:
        raise RuntimeError(f"POST /v1/pin/verify: {reply.status} {reply.body[:200]!r}")


# --- the load generator -------------------------------------------------------------


@dataclass
class Sample:
    latency_ms: float
    card_ms: float | None
    queue_ms: float | None
    app_ms: float | None = None  # the sign handler's own time (Server-Timing `app`)


@dataclass
class PhaseResult:
    model: str
    kind: str  # "sign" or "null"
    clients: int
    duration_s: float
    requests: int
    errors: dict[str, int]
    rps: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    card_p50_ms: float | None = None
    card_p99_ms: float | None = None
    queue_p50_ms: float | None = None
    queue_p99_ms: float | None = None
    overhead_p50_ms: float | None = None
    overhead_p99_ms: float | None = None
    # app - card - queue: what the sign handler itself added, without the HTTP stack,
    # the network and the wake-ups of sleeping threads and processes.
    handler_overhead_p50_ms: float | None = None
    handler_overhead_p99_ms: float | None = None
    card_mean_ms: float | None = None
    client_cpu_us_per_req: float | None = None
    server_cpu_us_per_req: float | None = None
    server_cpu_util: float | None = None  # CPU seconds per wall second (2 = both cores)
    client_cpu_util: float | None = None
    background_cpu_util: float | None = None  # everything else on the machine
    card_util: float | None = None  # sign/s x mean card time: 1.0 = the card never rests


async def run_phase(
    client: RawClient,
    *,
    model: str,
    kind: str,
    clients: int,
    method: str,
    path: str,
    body_for: Callable[[int], Any],
    token: str | None,
    warmup_s: float,
    duration_s: float,
    server_pid: int,
) -> PhaseResult:
    workers = [await client.worker(method, path, body_for(i), token) for i in range(clients)]
    samples: list[Sample] = []
    errors: dict[str, int] = {}
    done_at: list[float] = []  # completion times of the counted answers
    # The window opens after the warm-up AND after every client got its first answer (in
    # a closed loop that is when the queue reaches its steady state: with the realistic
    # card and 32 clients the first round alone takes 32 card times); it closes
    # `duration_s` later. Counted: the answers that arrive inside the window, except each
    # client's first. Requests in flight at the close are awaited, not counted.
    window: list[float] = []  # [open, close] once known
    stop = False
    first_done = 0
    all_first = asyncio.Event()
    issued = 0
    marks: dict[str, float] = {}

    def in_window(t: float) -> bool:
        return bool(window) and window[0] <= t and (len(window) == 1 or t <= window[1])

    async def one(send: Callable[[], Awaitable[Reply]]) -> None:
        nonlocal issued, first_done
        perf = time.perf_counter
        first = True
        while not stop and issued < MAX_REQUESTS_PER_PHASE:
            issued += 1
            t0 = perf()
            try:
                reply = await send()
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            t1 = perf()
            if first:
                first = False
                first_done += 1
                if first_done == clients:
                    all_first.set()
                continue
            if not in_window(t1):
                continue
            if reply.status != 200:
                key = f"http_{reply.status}"
                errors[key] = errors.get(key, 0) + 1
                continue
            timing = reply.headers.get("server-timing")
            st = parse_server_timing(timing) if timing else {}
            samples.append(Sample((t1 - t0) * 1000, st.get("card"), st.get("queue"), st.get("app")))
            done_at.append(t1)

    async def control() -> None:
        nonlocal stop
        await asyncio.sleep(warmup_s)
        await all_first.wait()
        marks["cpu_client"] = time.process_time()
        marks["cpu_server"] = cpu_seconds(server_pid)
        marks["cpu_all"] = system_busy_seconds()
        window.append(time.perf_counter())
        await asyncio.sleep(duration_s)
        window.append(time.perf_counter())
        marks["cpu_client"] = time.process_time() - marks["cpu_client"]
        marks["cpu_server"] = cpu_seconds(server_pid) - marks["cpu_server"]
        marks["cpu_all"] = system_busy_seconds() - marks["cpu_all"]
        stop = True

    tasks = [asyncio.ensure_future(one(send)) for send, _ in workers]
    controller = asyncio.ensure_future(control())
    everything = asyncio.gather(controller, *tasks)
    # Interrupted: the result is nobody's business, say so (no "never retrieved" noise).
    everything.add_done_callback(lambda f: f.cancelled() or f.exception())
    try:
        # Bounded: a worker that dies ends its loop; the controller always finishes.
        await asyncio.wait_for(everything, warmup_s + duration_s + PHASE_SLACK_S)
    finally:
        for task in (controller, *tasks):
            task.cancel()
        await asyncio.gather(controller, *tasks, return_exceptions=True)
        for _, close in workers:
            await close()
    wall = window[1] - window[0]
    cpu_client, cpu_server = marks["cpu_client"], marks["cpu_server"]
    cpu_other = max(0.0, marks["cpu_all"] - cpu_client - cpu_server)

    n = len(samples)
    lat = [s.latency_ms for s in samples]
    result = PhaseResult(
        model=model,
        kind=kind,
        clients=clients,
        duration_s=duration_s,
        requests=n,
        errors=errors,
        rps=rate(done_at, wall),
        latency_p50_ms=pct(lat, 50),
        latency_p99_ms=pct(lat, 99),
        # The window includes in-flight tails, so per-request CPU is approximate.
        client_cpu_us_per_req=cpu_client / n * 1e6 if n else None,
        server_cpu_us_per_req=cpu_server / n * 1e6 if n else None,
        server_cpu_util=cpu_server / wall,
        client_cpu_util=cpu_client / wall,
        background_cpu_util=cpu_other / wall,
    )
    timed = [s for s in samples if s.card_ms is not None and s.queue_ms is not None]
    if timed:
        card = [s.card_ms for s in timed if s.card_ms is not None]
        queue = [s.queue_ms for s in timed if s.queue_ms is not None]
        overhead = [s.latency_ms - (s.card_ms or 0) - (s.queue_ms or 0) for s in timed]
        result.card_p50_ms, result.card_p99_ms = pct(card, 50), pct(card, 99)
        result.card_mean_ms = statistics.fmean(card)
        result.card_util = result.rps * result.card_mean_ms / 1000
        result.queue_p50_ms, result.queue_p99_ms = pct(queue, 50), pct(queue, 99)
        result.overhead_p50_ms, result.overhead_p99_ms = pct(overhead, 50), pct(overhead, 99)
        handler = [
            s.app_ms - (s.card_ms or 0) - (s.queue_ms or 0) for s in timed if s.app_ms is not None
        ]
        if handler:
            result.handler_overhead_p50_ms = pct(handler, 50)
            result.handler_overhead_p99_ms = pct(handler, 99)
    return result


# --- one server, all phases ---------------------------------------------------------


def phase_duration(args: argparse.Namespace, model: str, kind: str) -> float:
    """The realistic card signs ~6 times a second: its sign phases run longer, so that
    the percentiles rest on more than a handful of samples."""
    if model == "realistic" and kind == "sign":
        return float(args.duration * REALISTIC_SIGN_FACTOR)
    return float(args.duration)


@dataclass
class ModelRun:
    model: str
    backend: str = "simulated"
    startup_s: float = 0.0
    idle_after_start: dict[str, Any] = field(default_factory=dict)
    after_load: dict[str, Any] = field(default_factory=dict)
    phases: list[PhaseResult] = field(default_factory=list)


async def bench_model(model: str, backend: str, args: argparse.Namespace, tmp: Path) -> ModelRun:
    state_dir = tmp / f"{backend}-{model}"
    state_dir.mkdir()
    pcsc = PcscCard(model, state_dir) if backend == "pcsc" else None
    server = Server(model, state_dir, pcsc)
    client = (HttpxClient if args.client == "httpx" else RawClient)(server.port)
    run = ModelRun(model, backend)
    if pcsc is not None:
        pcsc.start()
    server.start()
    try:
        run.startup_s = round(await server.wait_ready(client), 2)
        await asyncio.sleep(1.0)  # let start-up settle before reading the idle RSS
        run.idle_after_start = server_stats(server.pid)
        token = await pair_and_verify(server, client)
        digests = [secrets.token_bytes(32) for _ in range(max(CONCURRENCY))]

        def sign_body(i: int) -> dict[str, str]:
            return {
                "purpose": "other",
                "title": f"bench {i}",
                "digest": base64.b64encode(digests[i]).decode(),
            }

        for clients in args.concurrency:
            await verify_pin(client, token)  # fresh session: idle/TTL never end it mid-run
            for kind, method, path, body_for, tok in (
                ("sign", "POST", "/v1/sign", sign_body, token),
                ("null", "GET", "/v1/status", lambda _: None, None),
            ):
                result = await run_phase(
                    client,
                    model=model,
                    kind=kind,
                    clients=clients,
                    method=method,
                    path=path,
                    body_for=body_for,
                    token=tok,
                    warmup_s=args.warmup,
                    duration_s=phase_duration(args, model, kind),
                    server_pid=server.pid,
                )
                run.phases.append(result)
                print(
                    f"  {backend:9} {model:9} {kind:4} x{clients:<3} {result.rps:8.1f} req/s",
                    flush=True,
                )
        await asyncio.sleep(1.0)
        run.after_load = server_stats(server.pid)
    except Exception:
        print(f"--- card-agent log (tail):\n{server.tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
        if pcsc is not None:
            pcsc.stop()
    return run


# --- report -------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _row(cells: list[tuple[str, int]]) -> str:
    return " ".join(
        text.rjust(width) if i else text.ljust(width) for i, (text, width) in enumerate(cells)
    )


def label(run: ModelRun) -> str:
    return f"{run.backend}/{run.model}"


def report(runs: list[ModelRun], args: argparse.Namespace) -> str:
    out: list[str] = [
        f"card-agent load benchmark: client={args.client}, {args.duration:g} s per phase "
        f"({args.duration * REALISTIC_SIGN_FACTOR:g} s for realistic sign), warm-up >= "
        f"{args.warmup:g} s, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "All times in ms. overhead = client latency - card - queue (Server-Timing). "
        "card% = sign/s x mean card time.",
        "",
    ]
    w = [18, 3, 8, 6, 8, 8, 8, 8, 8, 8, 8, 8, 6, 4]
    head = [
        "model",
        "cl",
        "sign/s",
        "card%",
        "lat p50",
        "p99",
        "card p50",
        "p99",
        "queue p50",
        "p99",
        "ovh p50",
        "p99",
        "n",
        "err",
    ]
    line = _row(list(zip(head, w, strict=True)))
    out += [
        "POST /v1/sign (closed loop, one keep-alive connection per client)",
        line,
        "-" * len(line),
    ]
    for run in runs:
        for p in run.phases:
            if p.kind != "sign":
                continue
            cells = [
                label(run),
                str(p.clients),
                fmt(p.rps, ".1f"),
                fmt(None if p.card_util is None else p.card_util * 100, ".1f"),
                fmt(p.latency_p50_ms),
                fmt(p.latency_p99_ms),
                fmt(p.card_p50_ms),
                fmt(p.card_p99_ms),
                fmt(p.queue_p50_ms),
                fmt(p.queue_p99_ms),
                fmt(p.overhead_p50_ms),
                fmt(p.overhead_p99_ms),
                str(p.requests),
                str(sum(p.errors.values())),
            ]
            out.append(_row(list(zip(cells, w, strict=True))))

    w = [18, 3, 8, 8, 8, 9, 9, 8, 8, 8, 7, 7, 7]
    head = [
        "model",
        "cl",
        "null/s",
        "null p50",
        "p99",
        "ovh/null",
        "ovh/null",
        "cli us",
        "srv us",
        "srv us",
        "srv",
        "cli",
        "other",
    ]
    head2 = ["", "", "", "", "", "p50", "p99", "/sign", "/sign", "/null", "CPU", "CPU", "CPU"]
    line = _row(list(zip(head, w, strict=True)))
    out += [
        "",
        "GET /v1/status = null baseline (the HTTP stack and the load generator alone), "
        "same clients; CPU use during the sign phase",
        line,
        _row(list(zip(head2, w, strict=True))),
        "-" * len(line),
    ]
    for run in runs:
        by = {(p.kind, p.clients): p for p in run.phases}
        for clients in args.concurrency:
            sp, npz = by.get(("sign", clients)), by.get(("null", clients))
            if sp is None or npz is None:
                continue
            r50 = r99 = None
            if sp.overhead_p50_ms is not None and npz.latency_p50_ms:
                r50 = sp.overhead_p50_ms / npz.latency_p50_ms
            if sp.overhead_p99_ms is not None and npz.latency_p99_ms:
                r99 = sp.overhead_p99_ms / npz.latency_p99_ms
            cells = [
                label(run),
                str(clients),
                fmt(npz.rps, ".0f"),
                fmt(npz.latency_p50_ms),
                fmt(npz.latency_p99_ms),
                fmt(r50, ".1f") + "x",
                fmt(r99, ".1f") + "x",
                fmt(sp.client_cpu_us_per_req, ".0f"),
                fmt(sp.server_cpu_us_per_req, ".0f"),
                fmt(npz.server_cpu_us_per_req, ".0f"),
                fmt(sp.server_cpu_util),
                fmt(sp.client_cpu_util),
                fmt(sp.background_cpu_util),
            ]
            out.append(_row(list(zip(cells, w, strict=True))))
    busy = [
        p.background_cpu_util for r in runs for p in r.phases if p.background_cpu_util is not None
    ]
    if busy and max(busy) > 0.25:
        out.append(
            f"WARNING: other processes used up to {max(busy):.2f} CPU during the phases "
            "(column 'other'): expect noisy tails; re-run on a quiet machine."
        )

    out += ["", "Targets (figures of this run):"]
    top = max(args.concurrency)
    for run in runs:
        by = {(p.kind, p.clients): p for p in run.phases}
        sp, npz = by.get(("sign", top)), by.get(("null", top))
        name = label(run)
        if run.model == "realistic" and sp is not None:
            for what, value, target in (
                ("p50", sp.overhead_p50_ms, TARGET_OVERHEAD_P50_MS),
                ("p99", sp.overhead_p99_ms, TARGET_OVERHEAD_P99_MS),
            ):
                if value is not None:
                    ok = "OK  " if value <= target else "MISS"
                    out.append(
                        f"  [{ok}] {name}: overhead {what} at {top} clients "
                        f"{value:.2f} ms (target <= {target:g} ms)"
                    )
            if sp.handler_overhead_p50_ms is not None and sp.handler_overhead_p99_ms is not None:
                out.append(
                    f"  [info] {name}: of which the sign handler itself (Server-Timing app - "
                    f"card - queue): p50 {sp.handler_overhead_p50_ms:.2f} ms, "
                    f"p99 {sp.handler_overhead_p99_ms:.2f} ms"
                )
        if (
            sp is not None
            and npz is not None
            and sp.server_cpu_us_per_req
            and (npz.server_cpu_us_per_req)
        ):
            ratio = sp.server_cpu_us_per_req / npz.server_cpu_us_per_req
            # Judged where the card runs in its own process and answers at once: with
            # the realistic card (6 signatures/s) the agent's idle work (reader polls,
            # timers, 32 idle connections) is divided by few signatures.
            judged = run.backend == "pcsc" and run.model == "instant"
            ok = ("OK  " if ratio <= TARGET_CPU_RATIO else "MISS") if judged else "info"
            note = (
                "the card in its own process"
                if run.backend == "pcsc"
                else "includes the simulated card's own computation"
            )
            out.append(
                f"  [{ok}] {name}: server CPU per signature {sp.server_cpu_us_per_req:.0f} us "
                f"= {ratio:.1f} x a status request ({npz.server_cpu_us_per_req:.0f} us) at "
                f"{top} clients (target <= {TARGET_CPU_RATIO:g} x; {note})"
            )
        if run.model == "realistic" and sp is not None and sp.card_util is not None:
            ok = "OK  " if sp.card_util >= 0.95 else "MISS"
            ceiling = 1000 / (sp.card_mean_ms or 1)
            out.append(
                f"  [{ok}] {name}: {sp.rps:.2f} sign/s at {top} clients, 1 / mean card time "
                f"= {ceiling:.2f}/s: card busy {sp.card_util:.1%} -> the card is "
                + ("the bottleneck" if sp.card_util >= 0.95 else "NOT the bottleneck")
            )
        for when, st in (
            ("idle after start-up", run.idle_after_start),
            ("after the load", run.after_load),
        ):
            if st:
                ok = "OK  " if st["rss_mb"] <= TARGET_RSS_MB else "MISS"
                out.append(
                    f"  [{ok}] {name}: RSS {when} {st['rss_mb']:.1f} MB "
                    f"(target <= {TARGET_RSS_MB:g} MB); {st['threads']} threads, "
                    f"{st['child_processes']} child processes"
                )
        out.append(f"         {name}: start-up to a ready /v1/status: {run.startup_s} s")
    return "\n".join(out)


# --- main ---------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM to the benchmark unwinds normally, so the server is stopped too."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def main_async(args: argparse.Namespace) -> list[ModelRun]:
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        for backend in args.backends:
            for model in args.models:
                print(f"card-agent serve, {backend} backend, timing {model} ...", flush=True)
                runs.append(await bench_model(model, backend, args, Path(tmp)))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1.5 s phases, 0.5 s warm-up")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument("--duration", type=float, help="seconds per phase (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up (default 1)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument(
        "--concurrency", nargs="+", type=int, default=list(CONCURRENCY), metavar="N"
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 1.5 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 0.5 if args.quick else 1.0
    if not 0 < args.duration <= 120 or not 0 <= args.warmup <= 30:
        parser.error("--duration must be in (0, 120] and --warmup in [0, 30]")
    if any(not 1 <= c <= 32 for c in args.concurrency):
        parser.error("--concurrency values must be 1..32 (the server queue holds 64)")

    try:
        with sigterm_as_exit():
            runs = asyncio.run(main_async(args))
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        return 130
    except SystemExit as exc:
        print("terminated; the server was stopped", file=sys.stderr)
        return int(exc.code or 1)
    text = report(runs, args)
    print()
    print(text)
    if args.json:
        doc = {
            "client": args.client,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One soak run, start to end: children up, agent supervised, load and faults for the
duration, a quiet drain, a clean stop, then the books.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.audit import AuditLog
from soak import load
from soak.books import audit_books, read_outbox, telemetry_books
from soak.children import (
    READER,
    Mosquitto,
    PrivatePcscd,
    SetupError,
    SoftCard,
    free_port,
    venv_tool,
)
from soak.collector import Collector
from soak.compat_page import COMPAT_ORIGIN, compat_page
from soak.faults import FaultInjector, FaultRecord
from soak.native import ORIGIN, Api
from soak.plan import FaultKind, Holds, plan_faults
from soak.recorder import Recorder, SignAck
from soak.report import checks
from soak.supervisor import AgentSupervisor

log = logging.getLogger("soak")

KIOSK_ID = "soak-kiosk"
JOB_TIMEOUT_S = 15.0  # the agent's default card.job_timeout_s
METRICS_INTERVAL_S = 15.0
READY_TIMEOUT_S = 60.0
WORKERS_STOP_TIMEOUT_S = JOB_TIMEOUT_S + 30.0
DRAIN_TIMEOUT_S = 120.0
DELIVERY_TIMEOUT_S = 30.0


@dataclass
class SoakOptions:
    minutes: float = 10.0
    holds: Holds = field(default_factory=Holds)
    skip_faults: frozenset[FaultKind] = frozenset()
    signers: int = 2
    seed: int | None = None
    workdir: Path | None = None  # kept; default: a temporary directory
    keep: bool = False
    json_path: Path | None = None
    quiet: bool = False
    sample_interval_s: float = 2.0
    progress_interval_s: float = 30.0
    wrong_pin_interval_s: float = 90.0
    pairing_interval_s: float = 15.0


def agent_config(state_dir: Path, api_port: int, compat_port: int, mqtt_port: int) -> str:
    """The agent's TOML: PC/SC backend on the vpcd reader, compat and MQTT on."""
    return "\n".join(
        [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {api_port}",
            "[security]",
            f'allowed_origins = ["{ORIGIN}"]',
            "[card]",
            'backend = "pcsc"',
            f'reader = "{READER}"',
            f"job_timeout_s = {JOB_TIMEOUT_S:g}",
            "demo = true",
            "[paths]",
            f'state_dir = "{state_dir}"',
            "[mqtt]",
            "enabled = true",
            'host = "127.0.0.1"',
            f"port = {mqtt_port}",
            f'kiosk_id = "{KIOSK_ID}"',
            "keepalive_s = 5",
            f"metrics_interval_s = {METRICS_INTERVAL_S:g}",
            "reconnect_min_s = 0.5",
            "reconnect_max_s = 5",
            "[compat]",
            "enabled = true",
            'host = "127.0.0.1"',
            f"port = {compat_port}",
            f'allowed_origins = ["{COMPAT_ORIGIN}"]',
            "",
        ]
    )


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def _loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        self.duration_s = options.minutes * 60.0
        self.plan = plan_faults(self.duration_s, options.holds, options.skip_faults)
        self.rng = random.Random(options.seed)
        self._own_workdir = options.workdir is None
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="card-agent-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.workdir / "state"
        self.recorder = Recorder()
        self.stopping = asyncio.Event()
        self.pcscd: PrivatePcscd | None = None
        self.card: SoftCard | None = None
        self.broker: Mosquitto | None = None
        self.collector: Collector | None = None
        self.agent: AgentSupervisor | None = None
        self.injector: FaultInjector | None = None
        self.machine: dict[str, Any] = {}

    # --- set-up ---------------------------------------------------------------------

    async def _start_children(self) -> tuple[int, int]:
        self.pcscd = PrivatePcscd(self.workdir)
        await asyncio.to_thread(self.pcscd.start)
        self.card = SoftCard(self.workdir, self.pcscd.card_port)
        self.card.start()
        self.broker = Mosquitto(self.workdir)
        await asyncio.to_thread(self.broker.start)
        self.collector = Collector(self.broker.port, KIOSK_ID)
        await asyncio.to_thread(self.collector.start)
        api_port, compat_port = _two_free_ports()
        config = self.workdir / "card-agent.toml"
        config.write_text(agent_config(self.state_dir, api_port, compat_port, self.broker.port))
        # Nothing of ours leaks in: no CARD_AGENT_* override, no other pcscd's socket.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CARD_AGENT_") and k != "PCSCLITE_CSOCK_NAME"
        }
        env.update(self.pcscd.client_env)
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [venv_tool("card-agent"), "serve", "--config", str(config), "--log-level", "info"]
        self.agent = AgentSupervisor(cmd, env, self.workdir / "agent.log")
        return api_port, compat_port

    async def _wait_ready(self, base_url: str) -> None:
        """The first agent answers and sees the card."""
        assert self.agent is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=base_url, timeout=2, trust_env=False) as http:
            while True:
                if not self.agent.running:
                    raise SetupError(f"the agent did not start; see {self.agent.log_path}")
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = await http.get("/v1/status")
                    if r.status_code == 200 and r.json().get("card_present"):
                        return
                if time.monotonic() > deadline:
                    raise SetupError(
                        f"the agent did not see the card in {READY_TIMEOUT_S:g} s; "
                        f"see {self.agent.log_path}"
                    )
                await asyncio.sleep(0.2)

    # --- the run --------------------------------------------------------------------

    def _workers(self, api: Api, api_port: int, compat_port: int) -> list[asyncio.Task[None]]:
        ctx = load.LoadContext(
            api=api,
            recorder=self.recorder,
            events_url=f"ws://127.0.0.1:{api_port}/v1/events",
            stopping=self.stopping,
            rng=self.rng,
        )
        o = self.options
        coros = [
            load.status_poller(ctx),
            load.card_reader(ctx),
            load.events_listener(ctx),
            load.pairing_churn(ctx, o.pairing_interval_s),
            load.wrong_pin(ctx, min(o.wrong_pin_interval_s, max(5.0, self.duration_s / 3))),
            compat_page(ctx, f"ws://127.0.0.1:{compat_port}/"),
            *(load.signer(ctx, n) for n in range(1, o.signers + 1)),
        ]
        return [asyncio.create_task(c) for c in coros]

    async def _progress(self, load_started: float) -> None:
        while True:
            await asyncio.sleep(self.options.progress_interval_s)
            assert self.agent is not None
            assert self.injector is not None
            totals = self.recorder.totals()
            pid = self.agent.pid
            lifetime = self.agent.lifetimes[-1] if self.agent.lifetimes else None
            last = lifetime.samples[-1] if lifetime and lifetime.samples else None
            res = f"rss {last.rss_kb / 1024:.1f} MB fds {last.fds}" if last else "no sample"
            print(
                f"[{time.monotonic() - load_started:6.0f} s] answered {totals['answered']} "
                f"(errors {totals['errors']}), no answer {totals['unanswered']}, "
                f"signatures {len(self.recorder.acks)}, faults "
                f"{len(self.injector.records)}/{len(self.plan.faults)}, agent pid {pid} {res}",
                file=sys.stderr,
                flush=True,
            )

    async def _stop_workers(self, workers: list[asyncio.Task[None]]) -> None:
        """Let each worker finish the request it is in (so its answer is counted)."""
        self.stopping.set()
        _, pending = await asyncio.wait(workers, timeout=WORKERS_STOP_TIMEOUT_S)
        for task in pending:
            task.cancel()
        results = await asyncio.gather(*workers, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.error("a load worker failed: %r", result)
                self.recorder.notes[f"worker_crashed:{type(result).__name__}"] += 1

    async def _drain_outbox(self) -> bool:
        """Wait (with the agent running) until the outbox is empty."""
        path = self.state_dir / "telemetry-outbox.sqlite3"
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                facts = await asyncio.to_thread(read_outbox, path)
                if not facts.pending:
                    return True
            await asyncio.sleep(0.5)
        return False

    async def _wait_delivered(self, expected: set[int]) -> None:
        assert self.collector is not None
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while not expected <= self.collector.seqs() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.machine = {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pcscd": _first_line(
                [shutil.which("pcscd", path="/usr/sbin:/sbin") or "pcscd", "--version"]
            ),
            "mosquitto": _first_line(
                [shutil.which("mosquitto", path="/usr/sbin") or "mosquitto", "-h"]
            ),
            "loadavg_start": _loadavg(),
            "reader": READER,
        }
        try:
            api_port, compat_port = await self._start_children()
            assert self.agent is not None
            assert self.pcscd is not None
            assert self.card is not None
            assert self.broker is not None
            self.agent.start()
            sampler = asyncio.create_task(self.agent.sample(self.options.sample_interval_s))
            base_url = f"http://127.0.0.1:{api_port}"
            await self._wait_ready(base_url)
            api = Api(base_url, self.recorder, self.state_dir / "pairing.json")
            self.injector = FaultInjector(
                self.plan, pcscd=self.pcscd, card=self.card, broker=self.broker, agent=self.agent
            )
            load_started = time.monotonic()
            workers = self._workers(api, api_port, compat_port)
            faults = asyncio.create_task(self.injector.run(load_started, self.stopping))
            progress = None
            if not self.options.quiet:
                progress = asyncio.create_task(self._progress(load_started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(faults), self.duration_s)
            await asyncio.sleep(max(0.0, load_started + self.duration_s - time.monotonic()))
            await self._stop_workers(workers)
            await faults  # a fault in progress ends (card back in, pcscd continued, ...)
            if progress is not None:
                progress.cancel()
            drained = await self._drain_outbox()
            agent_end = await self.agent.stop()
            sampler.cancel()
            return await self._balance(started, drained, agent_end)
        finally:
            self.stopping.set()  # on an error too: the workers stop with the children
            await self._stop_children()

    async def _stop_children(self) -> None:
        if self.agent is not None and self.agent.running:
            await self.agent.stop()
        for stop in (
            self.collector.stop if self.collector else None,
            self.card.stop if self.card else None,
            self.pcscd.stop if self.pcscd else None,
            self.broker.stop if self.broker else None,
        ):
            if stop is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(stop)

    # --- the books ------------------------------------------------------------------

    async def _audit_verify(self) -> dict[str, Any]:
        """`card-agent audit verify`; a torn last line (a kill mid-write, with no start
        after it) is recovered as the next start would, and verified again."""
        path = self.state_dir / "audit.log"
        cmd = [venv_tool("card-agent"), "audit", "verify", "--path", str(path), "--json"]
        done = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=300, check=False
        )
        result: dict[str, Any] = json.loads(done.stdout)
        if not result.get("ok") and result.get("torn_tail"):
            await asyncio.to_thread(lambda: AuditLog(path).close())
            again = await asyncio.to_thread(
                subprocess.run, cmd, capture_output=True, text=True, timeout=300, check=False
            )
            result = {**json.loads(again.stdout), "recovered_torn_tail_at_end": True}
        return result

    async def _balance(
        self, started: float, drained: bool, agent_end: str | None
    ) -> dict[str, Any]:
        assert self.agent is not None
        assert self.injector is not None
        assert self.collector is not None
        outbox = await asyncio.to_thread(read_outbox, self.state_dir / "telemetry-outbox.sqlite3")
        await self._wait_delivered(set(range(1, outbox.last_seq + 1)) - set(outbox.pending))
        verify = await self._audit_verify()
        lines = (self.state_dir / "audit.log").read_bytes().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        kills = self.injector.agent_kill_times()
        acks = self.recorder.acks
        self.machine["loadavg_end"] = _loadavg()
        # CPU of the load generator itself, and of the agent (its last samples).
        me = resource.getrusage(resource.RUSAGE_SELF)
        self.machine["soak_cpu_s"] = round(me.ru_utime + me.ru_stime, 1)
        self.machine["agent_cpu_s"] = round(
            sum(lt.samples[-1].cpu_s for lt in self.agent.lifetimes if lt.samples), 1
        )
        faults = [
            {**r.to_json(), "recovered_after_s": _recovery(r, acks)} for r in self.injector.records
        ]
        injected = {r.kind for r in self.injector.records}
        result: dict[str, Any] = {
            "minutes": self.options.minutes,
            "elapsed_s": round(time.monotonic() - started, 1),
            "seed": self.options.seed,
            "workdir": str(self.workdir),
            "machine": self.machine,
            "faults": {
                "planned": [f.to_json() for f in self.plan.faults],
                "injected": faults,
                "skipped": sorted(self.options.skip_faults),
                "kinds_missing": sorted(self.plan.kinds - injected),
            },
            "clients": {
                "totals": self.recorder.totals(),
                "by_kind": self.recorder.by_kind(),
                "errors_by_code": self.recorder.errors_by_code(),
                "unexpected": self.recorder.unexpected(),
                "notes": dict(self.recorder.notes),
                "events_seen": dict(self.recorder.events_seen),
            },
            "agent": {
                "lifetimes": [lt.to_json() for lt in self.agent.lifetimes],
                "unexpected_exits": self.agent.unexpected_exits,
                "gave_up": self.agent.gave_up,
                "final_stop": agent_end,
                "outbox_drained_before_stop": drained,
            },
            "audit": audit_books(records, verify, acks, kills, job_timeout_s=JOB_TIMEOUT_S),
            "telemetry": telemetry_books(outbox, self.collector.snapshot(), records, acks, kills),
        }
        result["checks"] = checks(result)
        return result

    def cleanup(self, passed: bool) -> None:
        """A temporary workdir goes, unless asked to keep it or the run failed."""
        if self._own_workdir and passed and not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _recovery(record: FaultRecord, acks: list[SignAck]) -> float | None:
    """Seconds from the end of a fault to the next signature a client received."""
    end = record.ended_wall
    if end is None:
        return None
    after = [a.wall for a in acks if a.wall >= end]
    return round(min(after) - end, 1) if after else None

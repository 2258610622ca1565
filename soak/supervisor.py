"""Runs `card-agent serve` and restarts it the way the systemd unit does.

systemd/card-agent.service has Restart=on-failure, RestartSec=2s and a start limit of
10 starts in 300 s. The supervisor does the same: a process that dies of a signal or
exits non-zero is started again after the delay; a clean exit (status 0) is not
restarted; past the start limit it gives up. Every process lifetime is kept with its
resource samples, why it ended, and whether the soak killed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soak.resources import Sample, growth, read_sample

log = logging.getLogger("soak.supervisor")

RESTART_DELAY_S = 2.0  # RestartSec=2s
START_LIMIT = (10, 300.0)  # StartLimitBurst=10, StartLimitIntervalSec=300
STOP_TIMEOUT_S = 20.0


@dataclass
class Lifetime:
    index: int
    pid: int
    started_wall: float
    started_mono: float
    ended_mono: float | None = None
    ended_wall: float | None = None
    exit: str | None = None  # "status 0", "signal SIGKILL", ...
    killed_by_soak: bool = False
    stopped_by_soak: bool = False
    samples: list[Sample] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        end = self.ended_mono if self.ended_mono is not None else time.monotonic()
        return {
            "index": self.index,
            "pid": self.pid,
            "seconds": round(end - self.started_mono, 1),
            "exit": self.exit,
            "killed_by_soak": self.killed_by_soak,
            "stopped_by_soak": self.stopped_by_soak,
            "resources": growth(self.samples),
            # [seconds since start, RSS kB, open fds, threads, CPU s]: to plot or re-fit
            "samples": [
                [round(s.t_s, 1), s.rss_kb, s.fds, s.threads, round(s.cpu_s, 2)]
                for s in self.samples
            ],
        }


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


class AgentSupervisor:
    def __init__(
        self,
        cmd: list[str],
        env: dict[str, str],
        log_path: Path,
        *,
        restart_delay_s: float = RESTART_DELAY_S,
    ) -> None:
        self._cmd = cmd
        self._env = env
        self.log_path = log_path
        self._restart_delay_s = restart_delay_s
        self.lifetimes: list[Lifetime] = []
        self.unexpected_exits: list[str] = []  # ended without the soak killing it
        self.gave_up: str | None = None
        self._current: tuple[subprocess.Popen[bytes], Lifetime] | None = None
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        current = self._current
        return None if current is None else current[0].pid

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="agent-supervisor")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Lifetime]:
        index = len(self.lifetimes) + 1
        with self.log_path.open("ab") as logf:
            logf.write(f"\n===== soak: agent start #{index} at {time.ctime()} =====\n".encode())
            logf.flush()
            proc = subprocess.Popen(
                self._cmd,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our Ctrl-C does not reach it; stop() does
            )
        lifetime = Lifetime(index, proc.pid, time.time(), time.monotonic())
        self.lifetimes.append(lifetime)
        return proc, lifetime

    async def _supervise(self) -> None:
        while not self._stopping:
            proc, lifetime = self._spawn()
            self._current = (proc, lifetime)
            returncode = await asyncio.to_thread(proc.wait)
            lifetime.ended_mono, lifetime.ended_wall = time.monotonic(), time.time()
            lifetime.exit = describe_exit(returncode)
            self._current = None
            if self._stopping:
                return
            if not lifetime.killed_by_soak:
                self.unexpected_exits.append(f"#{lifetime.index}: {lifetime.exit}")
                log.error("the agent (pid %d) ended on its own: %s", proc.pid, lifetime.exit)
            if returncode == 0:
                self.gave_up = "clean exit (Restart=on-failure does not restart it)"
                return
            burst, window = START_LIMIT
            now = time.monotonic()
            if sum(1 for lt in self.lifetimes if now - lt.started_mono < window) >= burst:
                self.gave_up = f"start limit: {burst} starts in {window:g} s"
                log.error("the agent keeps dying: %s", self.gave_up)
                return
            await asyncio.sleep(self._restart_delay_s)

    def kill(self) -> int | None:
        """SIGKILL the running agent (the supervisor restarts it). Its pid, or None."""
        current = self._current
        if current is None:
            return None
        proc, lifetime = current
        lifetime.killed_by_soak = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        return proc.pid

    async def stop(self) -> str | None:
        """Stop the agent cleanly (SIGTERM, like `systemctl stop`); how it ended."""
        self._stopping = True
        current = self._current
        if current is not None:
            proc, lifetime = current
            lifetime.stopped_by_soak = True
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        task = self._task
        if task is not None:
            done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
            if not done and current is not None:
                log.error("the agent did not stop in %g s: SIGKILL", STOP_TIMEOUT_S)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(current[0].pid, signal.SIGKILL)
                await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
        return None if current is None else current[1].exit

    async def sample(self, interval_s: float) -> None:
        """Sample RSS and open fds of whichever agent process runs, forever."""
        while True:
            current = self._current
            if current is not None:
                proc, lifetime = current
                sample = read_sample(proc.pid, time.monotonic() - lifetime.started_mono)
                if sample is not None and self._current is current:
                    lifetime.samples.append(sample)
            await asyncio.sleep(interval_s)

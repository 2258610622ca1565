"""Carries out the fault plan, one fault at a time, and records when each happened.

A fault always ends the way it began: the card goes back in, the broker and pcscd are
started again, a stopped pcscd continues; the agent is restarted by its supervisor.
Blocking process control (start, wait until listening) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from soak.children import Mosquitto, PrivatePcscd, SoftCard
from soak.plan import FaultKind, FaultPlan, PlannedFault
from soak.supervisor import AgentSupervisor

log = logging.getLogger("soak.faults")


@dataclass
class FaultRecord:
    kind: FaultKind
    planned_at_s: float
    at_s: float  # seconds after the load started
    hold_s: float
    started_wall: float
    ended_wall: float | None = None
    detail: str = ""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["at_s"] = round(self.at_s, 1)
        return out


class FaultInjector:
    def __init__(
        self,
        plan: FaultPlan,
        *,
        pcscd: PrivatePcscd,
        card: SoftCard,
        broker: Mosquitto,
        agent: AgentSupervisor,
    ) -> None:
        self.plan = plan
        self._pcscd = pcscd
        self._card = card
        self._broker = broker
        self._agent = agent
        self.records: list[FaultRecord] = []

    def agent_kill_times(self) -> list[float]:
        return [r.started_wall for r in self.records if r.kind == "agent_kill" and not r.error]

    async def run(self, load_started: float, stopping: asyncio.Event) -> None:
        """Each planned fault at its time after `load_started` (time.monotonic())."""
        for planned in self.plan.faults:
            delay = load_started + planned.at_s - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), delay)
            if stopping.is_set():
                return
            await self._inject(planned, load_started)

    async def _inject(self, planned: PlannedFault, load_started: float) -> None:
        record = FaultRecord(
            planned.kind,
            planned.at_s,
            time.monotonic() - load_started,
            planned.hold_s,
            time.time(),
        )
        self.records.append(record)
        log.info("fault: %s (hold %.1f s)", planned.kind, planned.hold_s)
        try:
            record.detail = await getattr(self, f"_{planned.kind}")(planned.hold_s)
        except Exception as exc:
            record.error = f"{type(exc).__name__}: {exc}"
            log.error("fault %s failed: %s", planned.kind, record.error)
        record.ended_wall = time.time()

    async def _card_pull(self, hold_s: float) -> str:
        self._card.pull()
        try:
            await asyncio.sleep(hold_s)
        finally:
            self._card.insert()
        return f"card out for {hold_s:g} s"

    async def _broker_outage(self, hold_s: float) -> str:
        await asyncio.to_thread(self._broker.stop)
        try:
            await asyncio.sleep(hold_s)
        finally:
            await asyncio.to_thread(self._broker.start)
        return f"mosquitto stopped (SIGTERM) for {hold_s:g} s"

    async def _pcscd_kill(self, hold_s: float) -> str:
        await asyncio.to_thread(self._pcscd.kill)
        try:
            await asyncio.sleep(hold_s)
        finally:
            await asyncio.to_thread(self._pcscd.start)
        return f"pcscd SIGKILL, restarted after {hold_s:g} s"

    async def _pcscd_stop(self, hold_s: float) -> str:
        self._pcscd.freeze()
        try:
            await asyncio.sleep(hold_s)
        finally:
            self._pcscd.thaw()
        return f"pcscd SIGSTOP for {hold_s:g} s, then SIGCONT"

    async def _agent_kill(self, hold_s: float) -> str:
        pid = self._agent.kill()
        if pid is None:
            raise RuntimeError("no agent process was running")
        return f"agent pid {pid} SIGKILL"

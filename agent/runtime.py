"""Builds the running agent from its configuration: backend, owner, service, app."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from agent.api import create_app
from agent.audit import AuditLog
from agent.backend import CardBackend, PcscBackend, SimulatedBackend
from agent.component import Component
from agent.config import Config
from agent.notify import SystemdNotifier
from agent.owner import CardOwner
from agent.pairing import PairingStore
from agent.service import CardService


@dataclass
class Runtime:
    config: Config
    backend: CardBackend
    owner: CardOwner
    service: CardService
    pairing: PairingStore
    audit: AuditLog
    app: FastAPI
    # Started by the app's lifespan in this order; build_runtime fills it from the
    # configuration (the list is shared with the app, so appending here still counts).
    components: list[Component]


def state_dir(config: Config) -> Path:
    path = config.paths.state_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def audit_path(config: Config) -> Path:
    return config.paths.state_dir / "audit.log"


def pairing_path(config: Config) -> Path:
    return config.paths.state_dir / "pairing.json"


def build_backend(config: Config) -> CardBackend:
    card = config.card
    if card.backend == "pcsc":
        return PcscBackend(card.reader)
    from simulator.card_os import SimulatedCard
    from simulator.knobs import CardKnobs, TimingModel

    timing = TimingModel.REALISTIC if card.timing == "realistic" else TimingModel.INSTANT
    state_file = state_dir(config) / card.sim_state_file if card.sim_state_file else None
    sim = SimulatedCard.create(card.profile, knobs=CardKnobs(timing=timing), state_path=state_file)
    return SimulatedBackend(sim)


def build_runtime(config: Config) -> Runtime:
    os.umask(0o077)  # state files (audit, tokens, card state) are private to the agent
    state_dir(config)
    backend = build_backend(config)
    owner = CardOwner(backend, queue_size=config.card.queue_size)
    audit = AuditLog(audit_path(config))
    pairing = PairingStore(pairing_path(config))
    sec = config.security
    service = CardService(
        owner,
        audit,
        pin_floor=sec.pin_floor,
        session_ttl_s=sec.session_ttl_s,
        session_idle_s=sec.session_idle_s,
        job_timeout_s=config.card.job_timeout_s,
    )
    components: list[Component] = []
    # systemd Type=notify + watchdog (a no-op outside systemd). `card-agent serve` sends
    # READY=1 once the sockets listen; a card call hung for twice its timeout (or a dead
    # owner thread, or a blocked event loop) stops the WATCHDOG=1 pings.
    components.append(
        SystemdNotifier(
            owner,
            stuck_limit_s=max(30.0, 2 * config.card.job_timeout_s),
            describe=lambda: f"serving http://{config.server.host}:{config.server.port}",
        )
    )
    app = create_app(
        service=service,
        pairing=pairing,
        port=config.server.port,
        allowed_origins=sec.allowed_origins,
        max_body_bytes=sec.max_body_bytes,
        max_data_bytes=sec.max_data_bytes,
        backend_name=config.card.backend,
        components=components,
    )
    if config.mqtt.enabled:
        # Fleet telemetry (docs/telemetry.md). The service forwards the owner's card and
        # reader events to its listeners, so this one listener sees both. The remote
        # `selftest` command runs the real selftest through this runtime's card owner.
        from agent import __version__
        from agent.telemetry import TelemetryPublisher

        telemetry = TelemetryPublisher(
            config.mqtt,
            state_dir=state_dir(config),
            version=__version__,
            presence=service.status,
            audit_anchor=lambda: audit.anchor,
            selftest_hook=None,
        )
        service.add_listener(telemetry.on_event)
        components.append(telemetry)
    if config.compat.enabled:
        # The official client's WebSocket protocol on its own port (docs/compat.md).
        from agent.compat.server import CompatServer

        components.append(CompatServer.from_config(config, service))
    runtime = Runtime(config, backend, owner, service, pairing, audit, app, components)
    if config.mqtt.enabled:
        from agent.selftest import run_selftest

        async def remote_selftest() -> dict[str, Any]:
            return await run_selftest(config, runtime)

        telemetry.selftest_hook = remote_selftest
    return runtime

"""The one place that wires the agent together: configuration -> card backend -> card
owner -> CardService -> front ends (native API, official-protocol endpoint, telemetry,
systemd notifier).

Front ends know the service, never the owner or a backend; nothing below this module
knows the configuration file. `build_runtime` makes the serving agent; `local_service`
makes the same service for a command that uses the card while no agent runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.audit import AuditLog
from agent.backends import CardBackend
from agent.component import Component
from agent.config import SIMULATED_CA_FILE, Config, ConfigError, load_driver_registry
from agent.owner import CardOwner
from agent.pairing import PairingStore
from agent.service import CardService

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)


def state_dir(config: Config) -> Path:
    path = config.paths.state_dir
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def audit_path(config: Config) -> Path:
    return config.paths.state_dir / "audit.log"


def pairing_path(config: Config) -> Path:
    return config.paths.state_dir / "pairing.json"


def simulated_ca_path(config: Config) -> Path:
    """The simulated card's test CA certificates (PEM), written when its backend is
    built: the selftest's chain check reads them as it would `card.ca_bundle`."""
    return config.paths.state_dir / SIMULATED_CA_FILE


def build_backend(config: Config) -> CardBackend:
    """The configured backend. Raises ConfigError when the driver registry cannot be
    used, or (SKF) names no library, several, or one that does not load."""
    card = config.card
    registry = load_driver_registry(card)
    if card.backend == "pcsc":
        from agent.backends.pcsc import PcscBackend

        return PcscBackend(card.reader_pattern(), registry=registry)
    if card.backend == "skf":
        from agent.backends.skf import SkfBackend
        from card.registry import RegistryError
        from card.skf.binding import SkfLibraryUnavailable

        try:
            return SkfBackend.from_registry(registry)
        except (RegistryError, SkfLibraryUnavailable) as exc:
            raise ConfigError(f"card.backend = skf: {exc}") from None
    from agent.backends.simulated import SimulatedBackend
    from simulator.card_os import SimulatedCard
    from simulator.knobs import CardKnobs, TimingModel

    timing = TimingModel.REALISTIC if card.timing == "realistic" else TimingModel.INSTANT
    state_file = state_dir(config) / card.sim_state_file if card.sim_state_file else None
    sim = SimulatedCard.create(card.profile, knobs=CardKnobs(timing=timing), state_path=state_file)
    _write_private(simulated_ca_path(config), sim.state.ca_bundle_pem())
    return SimulatedBackend(sim, registry=registry)


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="ascii")
    tmp.chmod(0o600)
    tmp.replace(path)


def build_service(config: Config, backend: CardBackend, audit: AuditLog) -> CardService:
    owner = CardOwner(backend, queue_size=config.card.queue_size)
    sec = config.security
    return CardService(
        owner,
        audit,
        pin_floor=sec.pin_floor,
        session_ttl_s=sec.session_ttl_s,
        session_idle_s=sec.session_idle_s,
        job_timeout_s=config.card.job_timeout_s,
    )


@dataclass
class Runtime:
    """The serving agent. `lifespan()` starts the card service, then the components in
    order; it stops them in reverse. The API app runs it as its own lifespan."""

    config: Config
    backend: CardBackend
    service: CardService
    pairing: PairingStore
    audit: AuditLog
    app: FastAPI = field(init=False)
    components: list[Component] = field(default_factory=list)

    @property
    def owner(self) -> CardOwner:
        """For diagnostics and tests: the front ends go through `service`."""
        return self.service.owner

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self.service.start()
        started: list[Component] = []
        try:
            for component in self.components:
                await component.start()
                started.append(component)
            yield
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("stopping %s failed", type(component).__name__)
            await self.service.stop()


def build_runtime(config: Config) -> Runtime:
    from agent.api import ApiSettings, create_app
    from agent.notify import SystemdNotifier

    os.umask(0o077)  # state files (audit, tokens, card state) are private to the agent
    state_dir(config)
    backend = build_backend(config)
    audit = AuditLog(audit_path(config))
    service = build_service(config, backend, audit)
    runtime = Runtime(config, backend, service, PairingStore(pairing_path(config)), audit)
    # systemd Type=notify + watchdog (a no-op outside systemd). `card-agent serve` sends
    # READY=1 once the sockets listen; a card call hung for twice its timeout (or a dead
    # owner thread, or a blocked event loop) stops the WATCHDOG=1 pings.
    runtime.components.append(
        SystemdNotifier(
            service,
            stuck_limit_s=max(30.0, 2 * config.card.job_timeout_s),
            describe=lambda: f"serving http://{config.server.host}:{config.server.port}",
        )
    )
    if config.mqtt.enabled:
        runtime.components.append(_telemetry(runtime))
    if config.compat.enabled:
        # The official client's WebSocket protocol on its own port (docs/compat.md).
        from agent.compat.server import CompatServer

        runtime.components.append(CompatServer.from_config(config, service))
    sec = config.security
    runtime.app = create_app(
        service=service,
        pairing=runtime.pairing,
        settings=ApiSettings(
            port=config.server.port,
            allowed_origins=sec.allowed_origins,
            max_body_bytes=sec.max_body_bytes,
            max_data_bytes=sec.max_data_bytes,
            backend_name=config.card.backend,
        ),
        lifespan=runtime.lifespan,
    )
    return runtime


def _telemetry(runtime: Runtime) -> Component:
    """Fleet telemetry (docs/telemetry.md). The service forwards card and reader events
    to its listeners, so this one listener sees both. The remote `selftest` command runs
    the selftest through this runtime's own card service."""
    from agent import __version__
    from agent.telemetry import TelemetryPublisher

    config, service = runtime.config, runtime.service

    async def remote_selftest() -> dict[str, Any]:
        from agent.access.service import ServiceAccess
        from agent.selftest import run_selftest

        return await run_selftest(config, ServiceAccess.remote(service))

    def presence() -> dict[str, bool]:
        state = service.card_state
        return {"reader_present": state.reader_present, "card_present": state.card_present}

    telemetry = TelemetryPublisher(
        config.mqtt,
        state_dir=state_dir(config),
        version=__version__,
        presence=presence,
        audit_anchor=lambda: runtime.audit.anchor,
        selftest_hook=remote_selftest,
    )
    service.add_listener(telemetry.on_event)
    return telemetry


@contextlib.asynccontextmanager
async def local_service(config: Config) -> AsyncIterator[CardService]:
    """A card service of this process, for a command run while no agent serves: the
    same owner thread, PIN floor, sessions, signature check and audit log as the agent.
    Yields once the owner thread has looked at the reader."""
    os.umask(0o077)
    state_dir(config)
    audit = AuditLog(audit_path(config))
    try:
        service = build_service(config, build_backend(config), audit)
        await service.start()
        try:
            await service.first_look()
            yield service
        finally:
            await service.stop()
    finally:
        audit.close()

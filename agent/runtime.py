"""Builds the running agent from its configuration: backend, owner, service, app."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from agent.api import create_app
from agent.audit import AuditLog
from agent.backend import CardBackend, PcscBackend, SimulatedBackend
from agent.config import Config
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
    app = create_app(
        service=service,
        pairing=pairing,
        port=config.server.port,
        allowed_origins=sec.allowed_origins,
        max_body_bytes=sec.max_body_bytes,
        max_data_bytes=sec.max_data_bytes,
        backend_name=config.card.backend,
    )
    return Runtime(config, backend, owner, service, pairing, audit, app)

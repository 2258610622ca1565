"""What the routes work with, set once when the app is built (`app.state.context`)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.pairing import PairingStore
from agent.service import CardService


@dataclass(frozen=True)
class ApiSettings:
    port: int
    allowed_origins: tuple[str, ...]
    max_body_bytes: int
    max_data_bytes: int
    backend_name: str


@dataclass(frozen=True)
class ApiContext:
    service: CardService
    pairing: PairingStore
    settings: ApiSettings

"""How a tool on the kiosk (the CLI, the selftest) reaches the card.

Two ways, one interface (`CardAccess`), the same dataclasses and one failure exception
(`CardCommandError`, carrying the API's stable error code):

- `ServiceAccess` (agent.access.service): a `CardService` of this process — the running
  agent's own (the remote selftest), or a local one built by
  `agent.runtime.local_service` when no agent runs. The PIN floor, sessions, signature
  check and audit are the service's: the tool gets no rules of its own.
- through a running agent's API, with the CLI's local-tool token (agent.access.agent_api).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.errors import wire_error
from card.crypto.certs import CertificateInfo
from card.eport.driver import CardInfo, CertSlot, PinStatus, Signature
from card.identify import DriverInfo

__all__ = ["CardAccess", "CardCommandError", "ReaderView", "SignTest"]

SELFTEST_TITLE = "card-agent selftest"


class CardCommandError(Exception):
    """A card command failed; `code` is the API's stable error code."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def from_exception(cls, exc: BaseException) -> CardCommandError:
        if isinstance(exc, CardCommandError):
            return exc
        wire = wire_error(exc)
        return cls(wire.code.value, wire.message, dict(wire.details))


@dataclass(frozen=True)
class ReaderView:
    name: str | None  # None: not visible (the agent's simulated reader through the API)
    card_present: bool
    atr: bytes | None = None


@dataclass(frozen=True)
class SignTest:
    """What a test signature gives: the signature, the signing certificate, the audit
    id of the request and the driver that made it."""

    signature: Signature
    certificate: CertificateInfo
    audit_id: str
    extra: dict[str, Any] = field(default_factory=dict)


class CardAccess(Protocol):
    # "agent" (through the API), "direct" (a local service), "in-agent" (the agent's own)
    mode: str

    async def reader(self) -> ReaderView | None: ...

    async def card_atr(self) -> bytes | None:
        """Opens the card (selects the application); the ATR when visible."""
        ...

    async def card_info(self) -> CardInfo: ...

    async def certificates(self) -> dict[CertSlot, CertificateInfo]: ...

    async def pin_status(self) -> PinStatus: ...

    async def driver_info(self) -> DriverInfo:
        """Which driver serves the card (opens it if need be)."""
        ...

    async def identify(self) -> dict[str, Any]:
        """The card's identify report (card.identify), JSON-ready: the same document
        as `GET /v1/card/identify`."""
        ...

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None: ...

    async def sign_test(self, pin: str, message: bytes, *, confirm_final_try: bool) -> SignTest:
        """Verify the PIN, sign `message`, end the session (and the card's verified
        state), as any client of the agent would."""
        ...


def local_user() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.geteuid())
    return f"{user}@{socket.gethostname()}"

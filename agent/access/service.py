"""`CardAccess` over a `CardService` of this process, as a local caller."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.access import (
    SELFTEST_TITLE,
    CardAccess,
    CardCommandError,
    ReaderView,
    SignTest,
    local_user,
)
from agent.service import Caller, CardService
from agent.vocabulary import Purpose
from card.crypto.certs import CertificateInfo
from card.eport.driver import CardInfo, CertSlot, PinStatus
from card.identify import DriverInfo

T = TypeVar("T")


class ServiceAccess(CardAccess):
    """The card through `service`, as `caller` (a local tool: no origin, no token)."""

    def __init__(self, service: CardService, caller: Caller, *, mode: str) -> None:
        self.service = service
        self.caller = caller
        self.mode = mode

    @classmethod
    def local(cls, service: CardService, tool: str = "card-agent CLI") -> ServiceAccess:
        """A command run on the kiosk while no agent serves."""
        return cls(service, Caller("local:cli", None, f"{tool} ({local_user()})"), mode="direct")

    @classmethod
    def remote(cls, service: CardService) -> ServiceAccess:
        """The fleet's remote selftest, inside the running agent."""
        caller = Caller("local:remote-selftest", None, "selftest (MQTT command)")
        return cls(service, caller, mode="in-agent")

    async def _call(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await fn()
        except CardCommandError:
            raise
        except Exception as exc:
            raise CardCommandError.from_exception(exc) from exc

    async def reader(self) -> ReaderView | None:
        state = self.service.card_state
        if not state.reader_present:
            return None
        return ReaderView(state.reader, state.card_present, state.atr)

    async def card_atr(self) -> bytes | None:
        return await self._call(self.service.card_atr)

    async def card_info(self) -> CardInfo:
        return await self._call(self.service.card_info)

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        return await self._call(self.service.certificates)

    async def pin_status(self) -> PinStatus:
        return await self._call(self.service.pin_status)

    async def driver_info(self) -> DriverInfo:
        return await self._call(self.service.driver_info)

    async def identify(self) -> dict[str, Any]:
        return (await self._call(self.service.identify)).to_json()

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None:
        await self._call(
            lambda: self.service.change_pin(
                self.caller, old_pin, new_pin, confirm_final_try=confirm_final_try
            )
        )

    async def sign_test(self, pin: str, message: bytes, *, confirm_final_try: bool) -> SignTest:
        service, caller = self.service, self.caller
        await self._call(
            lambda: service.verify_pin(caller, pin, confirm_final_try=confirm_final_try)
        )
        try:
            outcome = await self._call(
                lambda: service.sign(
                    caller, purpose=Purpose.OTHER, title=SELFTEST_TITLE, data=message
                )
            )
        finally:
            with contextlib.suppress(Exception):
                await service.end_session(caller)
        return SignTest(outcome.signature, outcome.certificate, outcome.audit_id)

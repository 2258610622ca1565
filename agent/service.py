"""The card service: every card operation the front ends offer, with the policy.

Protocol front ends (the native HTTP API, the official-protocol WebSocket, telemetry
commands) call this; none of them talks to the card owner directly. Policy lives here
once: the PIN floor, sessions bound to client and card, signature verification before
anything leaves, audit records, clearing the card's security state when a session ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.audit import AuditLog
from agent.errors import AgentError, wire_error
from agent.owner import CardOwner
from agent.sessions import SessionManager, SigningSession
from card import errors as ce
from card.crypto.certs import CertificateInfo, parse_certificate
from card.crypto.rsa import rsa_verify_digest
from card.crypto.sm2 import sm2_verify_digest
from card.eport.driver import (
    CardDriver,
    CardInfo,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
    mask_card_number,
)

log = logging.getLogger("card_agent.service")
T = TypeVar("T")

PURPOSES = ("seal", "agreement", "data_authorisation", "application", "receipt", "login", "other")


@dataclass(frozen=True)
class Caller:
    """Who asks: the paired client and the origin the request came from."""

    client_id: str
    origin: str | None
    name: str = ""


@dataclass(frozen=True)
class SignOutcome:
    signature: Signature
    certificate: CertificateInfo
    card: CardInfo
    audit_id: str
    card_ms: float  # time spent in the card job (queue wait excluded)
    queue_ms: float  # time the job waited for the card owner thread


@dataclass(frozen=True)
class VerifyOutcome:
    card: CardInfo
    session: SigningSession
    expires_in_s: float


class CardService:
    def __init__(
        self,
        owner: CardOwner,
        audit: AuditLog,
        *,
        pin_floor: int,
        session_ttl_s: float,
        session_idle_s: float,
        job_timeout_s: float,
    ) -> None:
        self.owner = owner
        self.audit = audit
        self.pin_floor = pin_floor
        self.job_timeout_s = job_timeout_s
        self.sessions = SessionManager(ttl_s=session_ttl_s, idle_s=session_idle_s)
        self._certs: dict[bytes, CertificateInfo] = {}
        self._expiry_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.owner.subscribe(self._on_card_event)
        self._expiry_task = asyncio.create_task(self._expire_sessions())

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        self.owner.unsubscribe(self._on_card_event)

    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> None:
        """Service-level events (for telemetry): name, non-personal fields."""
        self._listeners.append(listener)

    def _emit(self, name: str, **fields: Any) -> None:
        for listener in self._listeners:
            try:
                listener(name, fields)
            except Exception:
                log.exception("event listener failed")

    def _on_card_event(self, event: Any) -> None:
        kind = getattr(event, "kind", "")
        if kind in ("card_removed", "card_reset", "reader_removed", "card_inserted"):
            # The card's verified state is gone with it (or belongs to someone else now).
            ended = self.sessions.end_all()
            if ended:
                log.info("card event %s ended %d session(s)", kind, len(ended))
        self._emit(kind)

    async def _expire_sessions(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            await self._expire_now()

    async def _expire_now(self) -> None:
        """End the sessions past their TTL or idle time; log the card out once no
        session relies on its verified state any more."""
        if self.sessions.expire() and len(self.sessions) == 0:
            await self._logout_quietly("session expired")

    async def _logout_quietly(self, why: str) -> None:
        try:
            await self.run(lambda d: d.logout(), label="logout")
        except Exception as exc:
            # No card, card gone: its security state is gone too. Nothing to clear.
            log.info("logout after %s: %s", why, wire_error(exc).code)

    # --- plumbing ----------------------------------------------------------------------

    async def run(self, fn: Callable[[CardDriver], T], *, label: str) -> T:
        return await self.owner.run(fn, timeout=self.job_timeout_s, label=label)

    def certificate_info(self, der: bytes) -> CertificateInfo:
        info = self._certs.get(der)
        if info is None:
            info = parse_certificate(der)
            if len(self._certs) > 16:
                self._certs.clear()
            self._certs[der] = info
        return info

    async def _audit(self, event: str, **fields: Any) -> str:
        record = await asyncio.to_thread(self.audit.append, event, **fields)
        return str(record.id)

    # --- read-only operations ---------------------------------------------------------

    def status(self) -> dict[str, Any]:
        state = self.owner.state
        return {
            "reader_present": state.reader_present,
            "card_present": state.card_present,
        }

    async def card_info(self) -> CardInfo:
        return await self.run(lambda d: d.card_info(), label="card_info")

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        def job(driver: CardDriver) -> dict[CertSlot, bytes]:
            return {slot: driver.certificate(slot) for slot in CertSlot}

        ders = await self.run(job, label="certificates")
        return {slot: self.certificate_info(der) for slot, der in ders.items()}

    async def pin_status(self) -> PinStatus:
        return await self.run(lambda d: d.pin_status(), label="pin_status")

    # --- PIN -----------------------------------------------------------------------------

    async def verify_pin(
        self, caller: Caller, pin: str, *, confirm_final_try: bool
    ) -> VerifyOutcome:
        floor = self.pin_floor

        def job(driver: CardDriver) -> tuple[CardInfo, int]:
            self._check_floor(driver.pin_status(), floor, confirm_final_try)
            driver.verify_pin(pin)
            return driver.card_info(), self.owner.state.generation

        try:
            info, generation = await self.run(job, label="verify_pin")
        except Exception as exc:
            wire = wire_error(exc)
            await self._audit(
                "pin_verify",
                client=caller.client_id,
                origin=caller.origin,
                result="failed",
                error=wire.code,
            )
            self._emit("pin_verify", ok=False, code=wire.code)
            raise
        session = self.sessions.open(caller.client_id, info.card_number, generation)
        await self._audit(
            "pin_verify",
            client=caller.client_id,
            origin=caller.origin,
            card=info.masked_card_number,
            result="ok",
        )
        self._emit("pin_verify", ok=True)
        return VerifyOutcome(info, session, self.sessions.remaining_s(session))

    async def change_pin(
        self, caller: Caller, old_pin: str, new_pin: str, *, confirm_final_try: bool = False
    ) -> None:
        floor = self.pin_floor

        def job(driver: CardDriver) -> None:
            # A wrong old PIN costs a try like VERIFY does: the same floor applies.
            self._check_floor(driver.pin_status(), floor, confirm_final_try)
            driver.change_pin(old_pin, new_pin)

        try:
            await self.run(job, label="change_pin")
        except Exception as exc:
            await self._audit(
                "pin_change",
                client=caller.client_id,
                origin=caller.origin,
                result="failed",
                error=wire_error(exc).code,
            )
            raise
        await self._audit("pin_change", client=caller.client_id, origin=caller.origin, result="ok")

    @staticmethod
    def _check_floor(status: PinStatus, floor: int, confirmed: bool) -> None:
        """Runs inside the card job, on a status read that spent no try."""
        if status.blocked:
            raise ce.PinBlockedError()
        if status.tries_left is not None and status.tries_left <= floor and not confirmed:
            raise AgentError(
                "pin_tries_low",
                409,
                f"Only {status.tries_left} PIN tries left. Confirm to use one.",
                {"tries_left": status.tries_left},
            )

    async def end_session(self, caller: Caller) -> bool:
        ended = self.sessions.end(caller.client_id) is not None
        self.sessions.expire()
        # The card has one verified state for every open session: clear it unless another
        # client's session still relies on it (a paired client without a session must not
        # log out someone else's). With no session left it is always cleared.
        if len(self.sessions) == 0:
            await self._logout_quietly("end of session")
        return ended

    def session_for(self, caller: Caller) -> SigningSession:
        session = self.sessions.get(caller.client_id)
        if session is None:
            raise AgentError("session_required", 401, "Verify the PIN first.")
        if session.generation != self.owner.state.generation:
            self.sessions.end(caller.client_id)
            raise AgentError("session_required", 401, "The card changed. Verify the PIN again.")
        return session

    # --- signing -------------------------------------------------------------------------

    async def _sign_failed(
        self, exc: BaseException, common: dict[str, Any], session: SigningSession, purpose: str
    ) -> None:
        wire = wire_error(exc)
        await self._audit(
            "sign", **common, card=session_card(session), result="failed", error=wire.code
        )
        self._emit("sign", ok=False, code=wire.code, purpose=purpose)

    async def sign(
        self,
        caller: Caller,
        *,
        purpose: str,
        title: str,
        data: bytes | None = None,
        digest: bytes | None = None,
        algorithm: SignAlgorithm | None = None,
    ) -> SignOutcome:
        if (data is None) == (digest is None):
            raise AgentError("invalid_input", 422, "Give exactly one of data or digest.")
        # A request may be first to see an expired session: log the card out now, not
        # at the expiry loop's next tick (the card must not stay verified meanwhile).
        await self._expire_now()
        session = self.session_for(caller)
        self.sessions.touch(session)
        data_sha256 = hashlib.sha256(data).hexdigest() if data is not None else None
        loop = asyncio.get_running_loop()

        submitted = loop.time()
        job_started = submitted

        def job(driver: CardDriver) -> tuple[Signature, bytes, CardInfo, float]:
            nonlocal job_started
            started = job_started = loop.time()
            info = driver.card_info()
            if info.card_number != session.card_number:
                raise AgentError("card_changed", 409, "A different card is in the reader.")
            if data is not None:
                signature = driver.sign(data, algorithm=algorithm)
            else:
                assert digest is not None
                signature = driver.sign_digest(digest, algorithm=algorithm)
            cert = driver.certificate(CertSlot.SIGN)
            return signature, cert, info, (loop.time() - started) * 1000

        common: dict[str, Any] = {
            "client": caller.client_id,
            "origin": caller.origin,
            "purpose": purpose,
            "title": title,
            "data_sha256": data_sha256,
            "digest": digest.hex() if digest is not None else None,
        }
        try:
            signature, cert_der, info, card_ms = await self.run(job, label="sign")
        except Exception as exc:
            await self._sign_failed(exc, common, session, purpose)
            raise

        def check_and_record() -> tuple[CertificateInfo, str]:
            # One worker-thread hop for the two costly steps after the card: the SM2 check
            # (~0.3 ms of CPU; Tongsuo releases the GIL) and the fsynced audit record (up
            # to several ms on a slow disk). Neither may stall the event loop.
            cert = self.certificate_info(cert_der)
            if not verify_signature(cert, signature):
                raise AgentError(
                    "signature_invalid",
                    502,
                    "The card produced a signature that does not verify. Nothing was signed.",
                )
            record = self.audit.append(
                "sign",
                **common,
                algorithm=signature.algorithm.value,
                cert_number=cert.serial_hex,
                card=info.masked_card_number,
                result="ok",
            )
            return cert, str(record.id)

        try:
            cert, audit_id = await asyncio.to_thread(check_and_record)
        except AgentError as exc:
            await self._sign_failed(exc, common, session, purpose)
            raise
        self._emit(
            "sign",
            ok=True,
            purpose=purpose,
            algorithm=signature.algorithm.value,
            duration_ms=round(card_ms, 1),
            audit_id=audit_id,
        )
        queue_ms = (job_started - submitted) * 1000
        return SignOutcome(signature, cert, info, audit_id, card_ms, queue_ms)


def session_card(session: SigningSession) -> str:
    return mask_card_number(session.card_number)


def verify_signature(cert: CertificateInfo, signature: Signature) -> bool:
    """Check a card's signature against its own certificate before handing it out."""
    if signature.algorithm is SignAlgorithm.SM2_SM3:
        return cert.sm2_point is not None and sm2_verify_digest(
            cert.sm2_point, signature.digest, signature.value
        )
    if cert.rsa_public_key is None:
        return False
    name = "sha1" if signature.algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
    return rsa_verify_digest(cert.rsa_public_key, signature.value, signature.digest, name)

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

from agent.audit import AuditLog, AuditRecord
from agent.errors import AgentError, wire_error
from agent.owner import Busy, CardOwner, CardState, JobTimeout, OwnerHealth, OwnerStopped
from agent.owner import OwnerEvent as CardEvent
from agent.sessions import SessionManager, SigningSession
from agent.text import is_text
from agent.vocabulary import ErrorCode, Purpose
from card import errors as ce
from card.crypto.certs import CertificateInfo, parse_certificate
from card.crypto.verify import verify_digest
from card.eport.driver import (
    CardDriver,
    CardInfo,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
    mask_card_number,
)
from card.identify import DriverInfo, IdentifyReport

__all__ = [
    "PURPOSES",
    "Caller",
    "CardEvent",
    "CardService",
    "CardState",
    "OwnerHealth",
    "SignOutcome",
    "VerifyOutcome",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

_MAX_ENDED_REMEMBERED = 64

PURPOSES = frozenset(Purpose)


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
        # PIN operations one at a time: a session opened by one verification is never
        # ended by the outcome of another that was already at the card.
        self._pin_lock = asyncio.Lock()
        # client -> who ended its session by clearing the card's verified state (told to
        # the client once, on its next request that needs the session).
        self._ended_by: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start the card owner thread, then the service's own work."""
        await self.owner.start()
        self.owner.subscribe(self._on_card_event)
        self._expiry_task = asyncio.create_task(self._expire_sessions())

    async def stop(self) -> None:
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
        self.owner.unsubscribe(self._on_card_event)
        await self.owner.stop()

    # --- what front ends may watch (never the owner itself) -----------------------------

    def subscribe(self, callback: Callable[[CardEvent], None]) -> None:
        """`callback(event)` on the event loop for every reader and card event."""
        self.owner.subscribe(callback)

    def unsubscribe(self, callback: Callable[[CardEvent], None]) -> None:
        self.owner.unsubscribe(callback)

    @property
    def card_state(self) -> CardState:
        """Reader and card as the owner thread last saw them (never touches the card)."""
        return self.owner.state

    def health(self) -> OwnerHealth:
        return self.owner.health()

    async def first_look(self, timeout_s: float = 3.0) -> None:
        """Until the owner thread's first poll has reported the reader and card (a fresh
        service knows nothing of them before): one loop round after the first, or a
        card seen, or `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        first: float | None = None
        while loop.time() < deadline:
            seen = self.owner.health().last_loop_at
            if seen is not None:
                first = seen if first is None else first
                if seen != first or self.owner.state.card_present:
                    return
            await asyncio.sleep(0.005)

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
            else:
                log.debug("card event %s", kind)
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
        """Write a record and wait until it is on disk (the audit writer thread's group
        commit: no worker thread and no fsync on the event loop)."""
        record = await asyncio.wrap_future(self.audit.submit(event, **fields))
        return record.id

    # --- read-only operations ---------------------------------------------------------

    async def card_atr(self) -> bytes:
        """Opens the card (the driver selects its application); its ATR."""
        return await self.run(lambda d: d.atr, label="card_atr")

    async def card_info(self) -> CardInfo:
        return await self.run(lambda d: d.card_info(), label="card_info")

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        def job(driver: CardDriver) -> dict[CertSlot, bytes]:
            return {slot: driver.certificate(slot) for slot in CertSlot}

        ders = await self.run(job, label="certificates")
        return {slot: self.certificate_info(der) for slot, der in ders.items()}

    async def pin_status(self) -> PinStatus:
        return await self.run(lambda d: d.pin_status(), label="pin_status")

    async def driver_info(self) -> DriverInfo:
        """Which driver serves the card in the reader, and why (opens it if need be)."""
        return await self.owner.run_backend(
            lambda backend: backend.driver_info(),
            timeout=self.job_timeout_s,
            label="driver_info",
            open_driver=True,
        )

    async def identify(self) -> IdentifyReport:
        """What the card in the reader is, for a support request (card.identify): no
        PIN, nothing read or written. The driver is released for it and opened anew
        by the next job, which clears the card's verified state: the sessions that
        relied on it end here, visibly (audit and telemetry say so)."""
        try:
            report = await self.owner.run_backend(
                lambda backend: backend.identify(),
                timeout=self.job_timeout_s,
                label="identify",
                release_driver=True,
            )
        except (Busy, OwnerStopped):
            raise  # never reached the card
        except JobTimeout as exc:
            if exc.started:
                await self._sessions_ended_by_identify()
            raise
        except Exception:
            await self._sessions_ended_by_identify()  # the driver was released all the same
            raise
        await self._sessions_ended_by_identify()
        return report

    async def _sessions_ended_by_identify(self) -> None:
        ended = self.sessions.end_all()
        if not ended:
            return
        log.info("card identify ended %d session(s)", len(ended))
        await self._audit(
            "session_end", reason="card_identify", clients=sorted(s.client_id for s in ended)
        )
        self._emit("session_end", reason="card_identify", count=len(ended))
        # Opening the driver again starts it "not verified": do it now, not whenever
        # the next request comes.
        await self._logout_quietly("card identify")

    # --- PIN -----------------------------------------------------------------------------

    async def verify_pin(
        self, caller: Caller, pin: str, *, confirm_final_try: bool
    ) -> VerifyOutcome:
        floor = self.pin_floor

        def job(driver: CardDriver) -> tuple[CardInfo, int]:
            self._check_floor(driver.pin_status(), floor, confirm_final_try)
            driver.verify_pin(pin)
            return driver.card_info(), self.owner.state.generation

        async with self._pin_lock:
            try:
                info, generation = await self.run(job, label="verify_pin")
            except Exception as exc:
                await self._verified_state_lost(caller, exc)
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
            self._ended_by.pop(caller.client_id, None)
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

        async with self._pin_lock:
            try:
                await self.run(job, label="change_pin")
            except Exception as exc:
                await self._verified_state_lost(caller, exc)
                await self._audit(
                    "pin_change",
                    client=caller.client_id,
                    origin=caller.origin,
                    result="failed",
                    error=wire_error(exc).code,
                )
                raise
        await self._audit("pin_change", client=caller.client_id, origin=caller.origin, result="ok")

    async def _verified_state_lost(self, caller: Caller, exc: BaseException) -> None:
        """After a failed PIN operation: did it clear the card's verified state?

        The card has one verified state, shared by every open session. A PIN the card
        refused (wrong, blocked, or a failed change) clears it, whoever sent it: every
        session that relied on it ends, visibly (their next request is told why, the
        audit log and the telemetry say so), so that the agent's view and the card's
        state agree. A PIN refused before the card (format, floor) changes nothing.
        """
        if not isinstance(exc, ce.CardError) or isinstance(exc, ce.InvalidPinFormat):
            return
        ended = self.sessions.end_all()
        if not ended:
            return
        for session in ended:
            self._ended_by[session.client_id] = caller.client_id
        while len(self._ended_by) > _MAX_ENDED_REMEMBERED:  # clients that never came back
            del self._ended_by[next(iter(self._ended_by))]
        others = sum(1 for s in ended if s.client_id != caller.client_id)
        log.info(
            "a refused PIN cleared the card's verified state: %d session(s) ended "
            "(%d of other clients)",
            len(ended),
            others,
        )
        await self._audit(
            "session_end",
            reason="card_verification_lost",
            by=caller.client_id,
            clients=sorted(s.client_id for s in ended),
        )
        self._emit("session_end", reason="card_verification_lost", count=len(ended))

    @staticmethod
    def _check_floor(status: PinStatus, floor: int, confirmed: bool) -> None:
        """Runs inside the card job, on a status read that spent no try."""
        if status.blocked:
            raise ce.PinBlockedError()
        if status.tries_left is not None and status.tries_left <= floor and not confirmed:
            raise AgentError(
                ErrorCode.PIN_TRIES_LOW,
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
            by = self._ended_by.pop(caller.client_id, None)
            if by is not None:
                raise AgentError(
                    ErrorCode.SESSION_REQUIRED,
                    401,
                    "A refused PIN cleared the card's verified state"
                    + (" (another client's)" if by != caller.client_id else "")
                    + ". Verify the PIN again.",
                    {"reason": "card_verification_lost"},
                )
            raise AgentError(ErrorCode.SESSION_REQUIRED, 401, "Verify the PIN first.")
        if session.generation != self.owner.state.generation:
            self.sessions.end(caller.client_id)
            raise AgentError(
                ErrorCode.SESSION_REQUIRED, 401, "The card changed. Verify the PIN again."
            )
        return session

    # --- signing -------------------------------------------------------------------------

    async def sign(
        self,
        caller: Caller,
        *,
        purpose: Purpose,
        title: str,
        data: bytes | None = None,
        digest: bytes | None = None,
        algorithm: SignAlgorithm | None = None,
    ) -> SignOutcome:
        """Sign `data` (or a precomputed `digest`) for the caller's session.

        The audit record of the request is written and fsynced while the card signs
        (the card takes ~150 ms, the fsync a few ms), so no signature leaves the agent
        unless a durable record names the request it answers; the outcome record
        follows by group commit (`AuditLog.append_later`). The card's signature is
        checked against its certificate on the card owner thread, right after the card
        answered, before anything leaves.
        """
        self._check_sign_request(purpose, title, data, digest)
        # A request may be first to see an expired session: log the card out now, not
        # at the expiry loop's next tick (the card must not stay verified meanwhile).
        await self._expire_now()
        session = self.session_for(caller)
        self.sessions.touch(session)
        request: dict[str, Any] = {
            "client": caller.client_id,
            "origin": caller.origin,
            "purpose": purpose,
            "title": title,
            "data_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "digest": digest.hex() if digest is not None else None,
            "card": session_card(session),
        }
        loop = asyncio.get_running_loop()
        submitted = loop.time()
        job_started = submitted
        certificate_info = self.certificate_info

        def job(driver: CardDriver) -> tuple[Signature, CertificateInfo, CardInfo, float]:
            nonlocal job_started
            started = job_started = loop.time()
            info = driver.card_info()
            if info.card_number != session.card_number:
                raise AgentError(ErrorCode.CARD_CHANGED, 409, "A different card is in the reader.")
            if data is not None:
                signature = driver.sign(data, algorithm=algorithm)
            else:
                assert digest is not None
                signature = driver.sign_digest(digest, algorithm=algorithm)
            card_ms = (loop.time() - started) * 1000
            cert = certificate_info(driver.certificate(CertSlot.SIGN))
            if not verify_digest(cert, signature.algorithm, signature.digest, signature.value):
                raise AgentError(
                    ErrorCode.SIGNATURE_INVALID,
                    502,
                    "The card produced a signature that does not verify. Nothing was signed.",
                )
            return signature, cert, info, card_ms

        # Written and fsynced by the audit writer while the card signs.
        recorded = asyncio.wrap_future(self.audit.submit("sign_request", **request))
        try:
            signature, cert, info, card_ms = await self.run(job, label="sign")
        except BaseException as exc:
            if isinstance(exc, ce.SecurityStatusNotSatisfied):
                # The card is not verified after all (reset by something else): the
                # agent's view follows the card's.
                self.sessions.end(caller.client_id)
            request_id = await self._request_recorded(recorded)
            if request_id is not None:
                self._outcome_later(request_id, result="failed", error=wire_error(exc).code)
            self._emit("sign", ok=False, code=wire_error(exc).code, purpose=purpose)
            raise
        request_id = await self._request_recorded(recorded)
        if request_id is None:
            self._emit("sign", ok=False, code="audit_unavailable", purpose=purpose)
            raise AgentError(
                ErrorCode.AUDIT_UNAVAILABLE,
                503,
                "The audit log cannot be written: the signature was withheld.",
            )
        if not self._outcome_later(
            request_id,
            result="ok",
            algorithm=signature.algorithm.value,
            cert_number=cert.serial_hex,
            signature_sha256=hashlib.sha256(signature.value).hexdigest(),
        ):
            self._emit("sign", ok=False, code="audit_unavailable", purpose=purpose)
            raise AgentError(
                ErrorCode.AUDIT_UNAVAILABLE,
                503,
                "The audit log cannot be written: the signature was withheld.",
            )
        self._emit(
            "sign",
            ok=True,
            purpose=purpose,
            algorithm=signature.algorithm.value,
            duration_ms=round(card_ms, 1),
            audit_id=request_id,
        )
        queue_ms = (job_started - submitted) * 1000
        return SignOutcome(signature, cert, info, request_id, card_ms, queue_ms)

    @staticmethod
    def _check_sign_request(
        purpose: Purpose, title: str, data: bytes | None, digest: bytes | None
    ) -> None:
        """Everything about a request that can be refused is refused before the card."""
        if (data is None) == (digest is None):
            raise AgentError(ErrorCode.INVALID_INPUT, 422, "Give exactly one of data or digest.")
        if data is not None and not data:
            # A signature over nothing attests nothing, and no Single Window step signs
            # an empty document: an empty one is a caller's bug.
            raise AgentError(ErrorCode.INVALID_INPUT, 422, "The document is empty.")
        if purpose not in PURPOSES:
            raise AgentError(ErrorCode.INVALID_INPUT, 422, "Unknown purpose.")
        if not title or not is_text(title) or any(ord(c) < 0x20 or c == "\x7f" for c in title):
            raise AgentError(ErrorCode.INVALID_INPUT, 422, "The title must be printable text.")

    async def _request_recorded(self, recorded: asyncio.Future[AuditRecord]) -> str | None:
        """The request record's id once it is durable; None if it could not be written."""
        try:
            return (await asyncio.shield(recorded)).id
        except Exception as exc:
            log.error("audit: the signature request could not be recorded: %s", exc)
            return None

    def _outcome_later(self, request_id: str, **fields: Any) -> bool:
        try:
            self.audit.append_later("sign", request=request_id, **fields)
        except Exception as exc:
            log.error("audit: the signature outcome could not be recorded: %s", exc)
            return False
        return True


def session_card(session: SigningSession) -> str:
    return mask_card_number(session.card_number)

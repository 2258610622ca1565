"""How the CLI (and the selftest) reach the card: through the running agent, or directly.

The agent owns the reader exclusively, so when it answers on its port every card command
goes through its API, with a local-tool token the CLI pairs for itself: request, approve
and claim happen directly in the pairing store (the CLI runs on the kiosk with write
access to the state directory); the token is kept in `cli-token.<uid>.json` there, mode
0600. When the agent does not answer, the CLI opens the card itself through the
configured backend, with its own `CardOwner` thread, exactly as the agent would.

Inside the running agent (the MQTT remote selftest) `OwnerCard` wraps the agent's own
owner: nothing opens the reader a second time.

Every way in gives the same dataclasses (`CardInfo`, `PinStatus`, `CertificateInfo`,
`Signature`) and the same `CardCommandError(code, message)` with the API's error codes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import http.client
import json
import os
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.config import Config
from agent.errors import wire_error
from agent.owner import CardOwner
from card.crypto.certs import CertificateInfo, certificate_from_pem, parse_certificate
from card.eport.driver import (
    CardDriver,
    CardInfo,
    CardType,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
)

T = TypeVar("T")

PROBE_TIMEOUT_S = 0.5
REQUEST_TIMEOUT_S = 30.0
CLI_CLIENT_NAME = "card-agent CLI"
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
        return cls(wire.code, wire.message, dict(wire.details))


# --- HTTP to the agent ----------------------------------------------------------------


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def error_code(self) -> str | None:
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            code = data["error"].get("code")
            return code if isinstance(code, str) else None
        return None


class AgentUnreachable(Exception):
    """Nothing answers on the agent's port (connection refused, timeout)."""


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AgentClient:
    """A small blocking HTTP/1.1 client for the agent's loopback API (`http.client`)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, config: Config, **kwargs: Any) -> AgentClient:
        return cls(config.server.host, config.server.port, **kwargs)

    @property
    def url(self) -> str:
        return f"http://{_host_header(self.host, self.port)}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        host_header: str | None = None,
        origin: str | None = None,
        timeout_s: float | None = None,
    ) -> HttpResponse:
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=self.timeout_s if timeout_s is None else timeout_s
        )
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", host_header or _host_header(self.host, self.port))
            conn.putheader("Accept", "application/json")
            conn.putheader("Connection", "close")
            if origin is not None:
                conn.putheader("Origin", origin)
            if token is not None:
                conn.putheader("Authorization", f"Bearer {token}")
            data = b""
            if body is not None or method == "POST":
                data = json.dumps({} if body is None else body).encode()
                conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data or None)
            response = conn.getresponse()
            payload = response.read()
            headers = {k.lower(): v for k, v in response.getheaders()}
            return HttpResponse(response.status, headers, payload)
        except (ConnectionRefusedError, TimeoutError) as exc:
            raise AgentUnreachable(f"{self.url}: {exc}") from None
        except OSError as exc:
            raise AgentUnreachable(f"{self.url}: {exc}") from None
        finally:
            conn.close()

    def probe(self, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any] | None:
        """`/v1/status` of the agent on this port, or None when nothing answers.

        Raises CardCommandError when something else answers there.
        """
        try:
            response = self.request("GET", "/v1/status", timeout_s=timeout_s)
        except AgentUnreachable:
            return None
        data = response.json()
        if response.status != 200 or not isinstance(data, dict) or data.get("api") != "v1":
            raise CardCommandError(
                "agent_unexpected",
                f"something that is not card-agent answers on {self.url} (HTTP {response.status})",
            )
        return data


# --- the CLI's own token --------------------------------------------------------------


def token_path(config: Config) -> Path:
    return config.paths.state_dir / f"cli-token.{os.geteuid()}.json"


def client_name() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.geteuid())
    return f"{CLI_CLIENT_NAME} ({user}@{socket.gethostname()})"[:64]


def load_token(config: Config) -> str | None:
    try:
        data = json.loads(token_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    token = data.get("token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None


def _write_private(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def self_pair(config: Config, name: str | None = None) -> tuple[str, str]:
    """Pair a local-tool client (no Origin) for the CLI; store its token (0600).

    Request, approve and claim all happen in the pairing store: the agent re-reads it on
    the next request. An earlier CLI client of the same name is revoked (its token file
    is being replaced). Returns (client_id, token).
    """
    from agent.pairing import PairingStore
    from agent.runtime import pairing_path, state_dir

    state_dir(config)
    store = PairingStore(pairing_path(config))
    name = name or client_name()
    before = {c.client_id for c in store.list_clients() if c.client_name == name}
    request = store.request(None, name)
    store.approve(request.code)
    token = store.claim(request.request_id, None)
    if token is None:  # pragma: no cover - approved just above
        raise CardCommandError("pairing_error", "self-pairing did not complete")
    client_id = next(
        c.client_id
        for c in store.list_clients()
        if c.client_name == name and c.client_id not in before
    )
    for old in before:
        store.revoke(old)
    _write_private(
        token_path(config),
        json.dumps({"client_id": client_id, "client_name": name, "token": token}),
    )
    return client_id, token


# --- one interface to the card ----------------------------------------------------------


@dataclass(frozen=True)
class ReaderView:
    name: str | None  # None: not visible (the agent's simulated reader through the API)
    card_present: bool
    atr: bytes | None = None


class CardAccess(Protocol):
    mode: str  # "agent" (through the API), "direct", "in-agent" (the agent's own owner)

    async def reader(self) -> ReaderView | None: ...

    async def card_atr(self) -> bytes | None:
        """Opens the card (selects the application); the ATR when visible."""
        ...

    async def card_info(self) -> CardInfo: ...

    async def certificates(self) -> dict[CertSlot, CertificateInfo]: ...

    async def pin_status(self) -> PinStatus: ...

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None: ...

    async def sign_test(
        self, pin: str, message: bytes, *, confirm_final_try: bool
    ) -> tuple[Signature, CertificateInfo]:
        """Verify the PIN, sign `message`, end the verified state."""
        ...


def check_pin_floor(status: PinStatus, floor: int, *, confirm_final_try: bool) -> None:
    """The agent's rule: never spend the last tries without an explicit confirmation."""
    if status.blocked:
        raise CardCommandError("pin_blocked", "The PIN is blocked. Contact the card issuer.")
    if status.tries_left is not None and status.tries_left <= floor and not confirm_final_try:
        raise CardCommandError(
            "pin_tries_low",
            f"Only {status.tries_left} PIN tries left; confirm to use one.",
            {"tries_left": status.tries_left},
        )


class ApiCard:
    """The card through the running agent's API, with the CLI's local-tool token."""

    mode = "agent"

    def __init__(self, config: Config, client: AgentClient, status: dict[str, Any]) -> None:
        self.config = config
        self.client = client
        self.status = status
        self._token: str | None = None
        self._sign_cert: CertificateInfo | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self._call_sync, method, path, body)

    def _pair(self) -> str:
        from agent.pairing import PairingError

        try:
            return self_pair(self.config)[1]
        except PermissionError as exc:
            where = exc.filename or self.config.paths.state_dir
            raise CardCommandError(
                "permission_denied",
                f"{where}: permission denied; run as root or as the card-agent user",
            ) from None
        except PairingError as exc:
            raise CardCommandError("pairing_error", f"self-pairing failed: {exc}") from None

    def _call_sync(self, method: str, path: str, body: Any) -> Any:
        if self._token is None:
            self._token = load_token(self.config) or self._pair()
        try:
            response = self.client.request(method, path, body, token=self._token)
            if response.status == 401 and response.error_code == "unauthorized":
                # Revoked (or the store was reset): pair again once.
                self._token = self._pair()
                response = self.client.request(method, path, body, token=self._token)
        except AgentUnreachable as exc:
            raise CardCommandError(
                "agent_unreachable", f"the agent stopped answering: {exc}"
            ) from None
        data = response.json()
        if response.status >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            if isinstance(error, dict):
                raise CardCommandError(
                    str(error.get("code", "internal_error")),
                    str(error.get("message", "")),
                    error.get("details") if isinstance(error.get("details"), dict) else None,
                )
            raise CardCommandError("internal_error", f"HTTP {response.status} from the agent")
        return data

    async def reader(self) -> ReaderView | None:
        status = await asyncio.to_thread(self.client.probe, 5.0)
        if status is None:
            raise CardCommandError("agent_unreachable", "the agent stopped answering")
        if not status.get("reader_present"):
            return None
        return ReaderView(None, bool(status.get("card_present")))

    async def card_atr(self) -> bytes | None:
        await self._call("GET", "/v1/pin")  # the agent opens the card; no try spent
        return None

    async def card_info(self) -> CardInfo:
        data = await self._call("GET", "/v1/card")
        return CardInfo(
            data["card_number"],
            data["holder_name"],
            data["company_name"],
            data["uscc"],
            CardType(data["card_type"]),
            data.get("enterprise_code"),
        )

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        data = await self._call("GET", "/v1/card/certificates")
        return {
            CertSlot(slot): parse_certificate(certificate_from_pem(item["pem"]))
            for slot, item in data.items()
        }

    async def pin_status(self) -> PinStatus:
        data = await self._call("GET", "/v1/pin")
        return PinStatus(data["tries_left"], bool(data["blocked"]), bool(data["verified"]))

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None:
        status = await self.pin_status()
        check_pin_floor(status, self.config.security.pin_floor, confirm_final_try=confirm_final_try)
        await self._call("POST", "/v1/pin/change", {"old_pin": old_pin, "new_pin": new_pin})

    async def sign_test(
        self, pin: str, message: bytes, *, confirm_final_try: bool
    ) -> tuple[Signature, CertificateInfo]:
        certs = await self.certificates()
        await self._call(
            "POST", "/v1/pin/verify", {"pin": pin, "confirm_final_try": confirm_final_try}
        )
        try:
            data = await self._call(
                "POST",
                "/v1/sign",
                {
                    "purpose": "other",
                    "title": SELFTEST_TITLE,
                    "data": base64.b64encode(message).decode(),
                    "signature_format": "raw",
                },
            )
        finally:
            with contextlib.suppress(CardCommandError):
                await self._call("POST", "/v1/session/end")
        signature = Signature(
            SignAlgorithm(data["algorithm"]),
            base64.b64decode(data["signature"]),
            base64.b64decode(data["digest"]),
        )
        return signature, certs[CertSlot.SIGN]


AuditHook = Callable[..., None]


class OwnerCard:
    """The card through a `CardOwner`: the agent's own (in-agent) or one of our own."""

    def __init__(
        self,
        owner: CardOwner,
        *,
        pin_floor: int,
        job_timeout_s: float,
        mode: str,
        audit: AuditHook | None = None,
    ) -> None:
        self.owner = owner
        self.pin_floor = pin_floor
        self.job_timeout_s = job_timeout_s
        self.mode = mode
        self._audit = audit

    async def run(self, fn: Callable[[CardDriver], T], label: str) -> T:
        try:
            return await self.owner.run(fn, timeout=self.job_timeout_s, label=label)
        except CardCommandError:
            raise
        except Exception as exc:
            raise CardCommandError.from_exception(exc) from exc

    async def audit(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            await asyncio.to_thread(self._audit, event, **fields)

    async def reader(self) -> ReaderView | None:
        state = self.owner.state
        if not state.reader_present:
            return None
        return ReaderView(state.reader, state.card_present, state.atr)

    async def card_atr(self) -> bytes | None:
        return await self.run(lambda d: d.atr, "selftest_atr")

    async def card_info(self) -> CardInfo:
        return await self.run(lambda d: d.card_info(), "card_info")

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        ders = await self.run(
            lambda d: {slot: d.certificate(slot) for slot in CertSlot}, "certificates"
        )
        return {slot: parse_certificate(der) for slot, der in ders.items()}

    async def pin_status(self) -> PinStatus:
        return await self.run(lambda d: d.pin_status(), "pin_status")

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None:
        floor = self.pin_floor

        def job(driver: CardDriver) -> None:
            check_pin_floor(driver.pin_status(), floor, confirm_final_try=confirm_final_try)
            driver.change_pin(old_pin, new_pin)

        try:
            await self.run(job, "change_pin")
        except CardCommandError as exc:
            await self.audit("pin_change", client="cli", result="failed", error=exc.code)
            raise
        await self.audit("pin_change", client="cli", result="ok")

    async def sign_test(
        self, pin: str, message: bytes, *, confirm_final_try: bool
    ) -> tuple[Signature, CertificateInfo]:
        floor = self.pin_floor

        def job(driver: CardDriver) -> tuple[Signature, bytes, CardInfo]:
            check_pin_floor(driver.pin_status(), floor, confirm_final_try=confirm_final_try)
            driver.verify_pin(pin)
            try:
                return driver.sign(message), driver.certificate(CertSlot.SIGN), driver.card_info()
            finally:
                driver.logout()

        try:
            signature, cert_der, info = await self.run(job, "selftest_sign")
        except CardCommandError as exc:
            await self.audit(
                "selftest_sign", client="cli", purpose="selftest", result="failed", error=exc.code
            )
            raise
        cert = parse_certificate(cert_der)
        await self.audit(
            "selftest_sign",
            client="cli",
            purpose="selftest",
            title=SELFTEST_TITLE,
            algorithm=signature.algorithm.value,
            cert_number=cert.serial_hex,
            card=info.masked_card_number,
            result="ok",
        )
        return signature, cert


async def wait_first_poll(owner: CardOwner, timeout_s: float = 3.0) -> None:
    """Until the owner thread's first poll has reported the reader and card state."""
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    while time.monotonic() < deadline:
        health = owner.health()
        if health.last_loop_at is not None:
            first = health.last_loop_at if first is None else first
            if health.last_loop_at != first or owner.state.card_present:
                return
        await asyncio.sleep(0.005)


def adopt_state_files(state_dir: Path) -> None:
    """Root ran a direct card command: give what it created in the state directory (the
    audit log, the simulated card) to the directory's owner, the service user, or the
    agent could not open them at its next start. The CLI's own token stays root's."""
    if os.geteuid() != 0:
        return
    try:
        owner = state_dir.stat()
        entries = list(os.scandir(state_dir))
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for entry in entries:
        if entry.name.startswith("cli-token."):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_uid == 0 and entry.is_file(
                follow_symlinks=False
            ):
                os.chown(entry.path, owner.st_uid, owner.st_gid, follow_symlinks=False)


@dataclass
class DirectCard:
    """Our own owner over the configured backend, for when the agent is not running."""

    config: Config
    owner: CardOwner | None = None
    backend: Any = None
    _audit_log: Any = field(default=None, repr=False)

    def _audit(self, event: str, **fields: Any) -> None:
        from agent.audit import AuditLog
        from agent.runtime import audit_path

        if self._audit_log is None:
            self._audit_log = AuditLog(audit_path(self.config))
        self._audit_log.append(event, **fields)

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[OwnerCard]:
        from agent.runtime import build_backend

        try:
            self.backend = build_backend(self.config)
        except Exception as exc:  # a corrupt simulated-card file, a bad profile name
            raise CardCommandError.from_exception(exc) from exc
        self.owner = CardOwner(self.backend, queue_size=self.config.card.queue_size)
        await self.owner.start()
        try:
            await wait_first_poll(self.owner)
            yield OwnerCard(
                self.owner,
                pin_floor=self.config.security.pin_floor,
                job_timeout_s=self.config.card.job_timeout_s,
                mode="direct",
                audit=self._audit,
            )
        finally:
            await self.owner.stop()
            if self._audit_log is not None:
                self._audit_log.close()
            adopt_state_files(self.config.paths.state_dir)


@contextlib.asynccontextmanager
async def open_card(config: Config, runtime: Any = None) -> AsyncIterator[CardAccess]:
    """The way to the card: the agent's owner (in-agent), its API, or the card itself."""
    if runtime is not None:
        yield OwnerCard(
            runtime.owner,
            pin_floor=config.security.pin_floor,
            job_timeout_s=config.card.job_timeout_s,
            mode="in-agent",
            audit=runtime.audit.append,
        )
        return
    client = AgentClient.from_config(config)
    status = await asyncio.to_thread(client.probe)
    if status is not None:
        yield ApiCard(config, client, status)
        return
    async with DirectCard(config).open() as card:
        yield card


# --- PC/SC, read-only -------------------------------------------------------------------


def pcsc_readers() -> list[ReaderView]:
    """Every reader pcscd knows, with card presence and ATR, without connecting to any.

    Works while the agent holds the card exclusively. Raises card.errors
    (ServiceUnavailable when pcscd cannot be reached) and ImportError without pyscard.
    """
    from smartcard import scard

    from card.pcsc import PcscContext, error_for_result

    ctx = PcscContext()
    try:
        names = ctx.list_readers()
        if not names:
            return []
        hr, states = ctx.get_status_change(0, [(n, scard.SCARD_STATE_UNAWARE) for n in names])
        if hr not in (scard.SCARD_S_SUCCESS, scard.SCARD_E_TIMEOUT):
            raise error_for_result(hr, "SCardGetStatusChange")
        if not states:  # nothing reported: say what we know
            return [ReaderView(n, False) for n in names]
        out = []
        for name, state, atr in states:
            present = bool(state & scard.SCARD_STATE_PRESENT)
            out.append(ReaderView(name, present, atr if present and atr else None))
        return out
    finally:
        ctx.release()

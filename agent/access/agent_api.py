"""The card through the running agent's API, for a tool on the kiosk (the CLI).

The agent owns the reader exclusively, so while it answers on its port a tool goes
through its loopback API like any client, with a local-tool token (no Origin) it pairs
for itself: request, approve and claim happen directly in the pairing store (the tool
runs on the kiosk with write access to the state directory). The token is kept in
`cli-token.<uid>.json` there, mode 0600, and paired again when it was revoked.

Policy (the PIN floor, sessions, the signature check, audit records) is the agent's:
this module only carries requests and answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.access import (
    SELFTEST_TITLE,
    CardAccess,
    CardCommandError,
    ReaderView,
    SignTest,
    local_user,
)
from agent.pairing import PairingError, PairingStore
from agent.vocabulary import ErrorCode, Purpose
from card.crypto.certs import CertificateInfo, certificate_from_pem, parse_certificate
from card.eport.driver import (
    CardInfo,
    CardType,
    CertSlot,
    PinStatus,
    SignAlgorithm,
    Signature,
)
from card.identify import DriverInfo

if TYPE_CHECKING:
    from agent.config import Config

__all__ = ["AgentClient", "AgentUnreachable", "ApiAccess", "HttpResponse", "LocalToolToken"]

PROBE_TIMEOUT_S = 0.5
REQUEST_TIMEOUT_S = 30.0
CLI_CLIENT_NAME = "card-agent CLI"
TOKEN_FILE_PREFIX = "cli-token."  # noqa: S105 - a file name, not a secret


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
    def error(self) -> dict[str, Any] | None:
        """The API's `{"error": {...}}` object, if the body is one."""
        data = self.json()
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return dict(data["error"])
        return None

    @property
    def error_code(self) -> str | None:
        code = (self.error or {}).get("code")
        return code if isinstance(code, str) else None


class AgentUnreachable(Exception):
    """Nothing answers on the agent's port (connection refused, timeout)."""


def _host_header(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class AgentClient:
    """A small blocking HTTP/1.1 client for the agent's loopback API (`http.client`).

    Blocking: callers on an event loop run it in a thread (`asyncio.to_thread`)."""

    def __init__(self, host: str, port: int, *, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s

    @classmethod
    def from_config(cls, config: Config, *, timeout_s: float = REQUEST_TIMEOUT_S) -> AgentClient:
        return cls(config.server.host, config.server.port, timeout_s=timeout_s)

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
        except OSError as exc:  # refused, reset, timed out (TimeoutError is an OSError)
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


def client_name() -> str:
    """The name the CLI pairs under: the tool, the user and the host."""
    return f"{CLI_CLIENT_NAME} ({local_user()})"[:64]


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


class LocalToolToken:
    """The CLI's local-tool token: `cli-token.<uid>.json` in the state directory (0600),
    paired through `pairing` (the store the agent reads)."""

    def __init__(self, state_dir: Path, pairing: PairingStore, name: str | None = None) -> None:
        self.path = state_dir / f"{TOKEN_FILE_PREFIX}{os.geteuid()}.json"
        self.pairing = pairing
        self.name = name or client_name()

    def load(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        token = data.get("token") if isinstance(data, dict) else None
        return token if isinstance(token, str) and token else None

    def pair(self) -> tuple[str, str]:
        """Pair a local-tool client (no Origin) and store its token; an earlier CLI
        client of the same name is revoked (its token file is being replaced).

        Returns (client_id, token). Raises PairingError, PermissionError."""
        store, name = self.pairing, self.name
        before = {c.client_id for c in store.list_clients() if c.client_name == name}
        request = store.request(None, name)
        store.approve(request.code)
        token = store.claim(request.request_id, None)
        if token is None:  # pragma: no cover - approved just above
            raise PairingError("pairing_incomplete", "self-pairing did not complete")
        client_id = next(
            c.client_id
            for c in store.list_clients()
            if c.client_name == name and c.client_id not in before
        )
        for old in before:
            store.revoke(old)
        _write_private(
            self.path, json.dumps({"client_id": client_id, "client_name": name, "token": token})
        )
        return client_id, token


# --- CardAccess through the API ---------------------------------------------------------


class ApiAccess(CardAccess):
    """The card through the running agent's API, with the CLI's local-tool token."""

    def __init__(self, client: AgentClient, token: LocalToolToken) -> None:
        self.client = client
        self.token = token
        self.mode = "agent"
        self._bearer: str | None = None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        return await asyncio.to_thread(self._call_sync, method, path, body)

    def _pair(self) -> str:
        try:
            return self.token.pair()[1]
        except PermissionError as exc:
            where = exc.filename or self.token.path.parent
            raise CardCommandError(
                "permission_denied",
                f"{where}: permission denied; run as root or as the card-agent user",
            ) from None
        except PairingError as exc:
            raise CardCommandError(
                ErrorCode.PAIRING_ERROR.value, f"self-pairing failed: {exc}", {"reason": exc.code}
            ) from None

    def _call_sync(self, method: str, path: str, body: Any) -> Any:
        if self._bearer is None:
            self._bearer = self.token.load() or self._pair()
        try:
            response = self.client.request(method, path, body, token=self._bearer)
            if response.status == 401 and response.error_code == ErrorCode.UNAUTHORIZED:
                # Revoked (or the store was reset): pair again once.
                self._bearer = self._pair()
                response = self.client.request(method, path, body, token=self._bearer)
        except AgentUnreachable as exc:
            raise CardCommandError(
                "agent_unreachable", f"the agent stopped answering: {exc}"
            ) from None
        if response.status >= 400:
            error = response.error
            if error is not None:
                details = error.get("details")
                raise CardCommandError(
                    str(error.get("code", ErrorCode.INTERNAL_ERROR.value)),
                    str(error.get("message", "")),
                    details if isinstance(details, dict) else None,
                )
            raise CardCommandError(
                ErrorCode.INTERNAL_ERROR.value, f"HTTP {response.status} from the agent"
            )
        return response.json()

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

    async def driver_info(self) -> DriverInfo:
        data = await self._call("GET", "/v1/card/driver")
        return DriverInfo(**{k: data.get(k) for k in DriverInfo.__dataclass_fields__})

    async def identify(self) -> dict[str, Any]:
        data = await self._call("GET", "/v1/card/identify")
        if not isinstance(data, dict):
            raise CardCommandError(ErrorCode.INTERNAL_ERROR.value, "identify: not a JSON object")
        return data

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None:
        await self._call(
            "POST",
            "/v1/pin/change",
            {"old_pin": old_pin, "new_pin": new_pin, "confirm_final_try": confirm_final_try},
        )

    async def sign_test(self, pin: str, message: bytes, *, confirm_final_try: bool) -> SignTest:
        certs = await self.certificates()
        await self._call(
            "POST", "/v1/pin/verify", {"pin": pin, "confirm_final_try": confirm_final_try}
        )
        try:
            data = await self._call(
                "POST",
                "/v1/sign",
                {
                    "purpose": Purpose.OTHER.value,
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
        return SignTest(signature, certs[CertSlot.SIGN], str(data["audit_id"]))

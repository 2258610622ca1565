"""The native localhost API (`/v1/...`), as a FastAPI app factory.

Host, Origin, content type and body limits are enforced by `SecurityMiddleware`
before routing. Here: token authentication, input validation, the routes, and one
error format `{"error": {"code", "message", ...}}` with stable codes and no traces.
"""

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent import __version__
from agent.component import Component
from agent.errors import AgentError, WireError, wire_error
from agent.owner import OwnerError
from agent.pairing import PairingError, PairingStore
from agent.security import SecurityMiddleware, redact_websocket_logs
from agent.service import PURPOSES, Caller, CardService
from agent.text import is_text
from card.crypto.certs import certificate_summary
from card.errors import CardError

log = logging.getLogger("card_agent.api")

Purpose = Literal[
    "seal", "agreement", "data_authorisation", "application", "receipt", "login", "other"
]
assert set(PURPOSES) == set(Purpose.__args__)  # type: ignore[attr-defined]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairRequestBody(_Body):
    client_name: str = Field(min_length=1, max_length=64)


class PairClaimBody(_Body):
    request_id: str = Field(min_length=1, max_length=128)


class PinVerifyBody(_Body):
    pin: SecretStr = Field(min_length=1, max_length=64)
    confirm_final_try: bool = False


class PinChangeBody(_Body):
    old_pin: SecretStr = Field(min_length=1, max_length=64)
    new_pin: SecretStr = Field(min_length=1, max_length=64)
    confirm_final_try: bool = False


class SignBody(_Body):
    purpose: Purpose
    title: str = Field(min_length=1, max_length=200)
    data: str | None = Field(None, description="The document, base64")
    digest: str | None = Field(
        None,
        description="Precomputed digest, base64: SM2 e = SM3(Z||M) (32 bytes); "
        "RSA the SHA-1 (20) or SHA-256 (32) hash of the document",
    )
    signature_format: Literal["raw", "der"] = "raw"


def _error_response(wire: WireError) -> JSONResponse:
    body: dict[str, Any] = {"code": wire.code, "message": wire.message}
    if wire.details:
        body["details"] = wire.details
    headers = {"Cache-Control": "no-store"}
    if wire.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, round(wire.retry_after_s)))
    return JSONResponse({"error": body}, status_code=wire.http_status, headers=headers)


def _b64(value: str, what: str, limit: int) -> bytes:
    # The encoded length bounds the work before decoding; the limit is on the bytes.
    if len(value) > -(-limit // 3) * 4:
        raise AgentError("payload_too_large", 413, f"{what} is over {limit} bytes.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AgentError("invalid_input", 422, f"{what} is not valid base64.") from None
    if len(raw) > limit:
        raise AgentError("payload_too_large", 413, f"{what} is over {limit} bytes.")
    # b64decode still accepts excess padding ("QUJD=") and non-zero trailing bits
    # ("QR=="): only the canonical encoding of the bytes is valid base64 here.
    if base64.b64encode(raw).decode("ascii") != value:
        raise AgentError("invalid_input", 422, f"{what} is not valid base64.")
    return raw


def create_app(
    *,
    service: CardService,
    pairing: PairingStore,
    port: int,
    allowed_origins: tuple[str, ...],
    max_body_bytes: int,
    max_data_bytes: int,
    backend_name: str,
    components: Sequence[Component] = (),
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.owner.start()
        await service.start()
        started: list[Component] = []
        try:
            for component in components:
                await component.start()
                started.append(component)
            yield
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("stopping %s failed", type(component).__name__)
            await service.stop()
            await service.owner.stop()

    app = FastAPI(
        title="card-agent",
        version=__version__,
        description="Localhost API of the kiosk card agent. See docs/api.md.",
        lifespan=lifespan,
        docs_url=None,  # serve no script: no Swagger UI, only the JSON document
        redoc_url=None,
        openapi_url="/v1/openapi.json",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold a PIN.
        fields = [".".join(str(p) for p in e.get("loc", ()) if p != "body") for e in exc.errors()]
        return _error_response(
            WireError("invalid_input", 422, "Invalid request.", {"fields": sorted(set(fields))})
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_input")
        return _error_response(WireError(code, exc.status_code, str(exc.detail)))

    async def _known(_: Request, exc: Exception) -> JSONResponse:
        return _error_response(wire_error(exc))

    # Expected errors get handlers of their own classes: Starlette answers those in its
    # ExceptionMiddleware, inside SecurityMiddleware (so the listed origin's CORS headers
    # are added and the connection stays open). A handler for `Exception` runs in the
    # outermost ServerErrorMiddleware instead, which re-raises after answering: uvicorn
    # then logged a traceback for every wrong PIN or missing token, closed the
    # connection, and the page could not read the error (no Access-Control-Allow-Origin).
    for known in (AgentError, CardError, OwnerError, ValueError):
        app.add_exception_handler(known, _known)

    @app.exception_handler(Exception)
    async def _any(_: Request, exc: Exception) -> JSONResponse:
        wire = wire_error(exc)
        if wire.code == "internal_error":
            log.error("unexpected error: %s", type(exc).__name__)
        return _error_response(wire)

    async def caller(request: Request) -> Caller:
        # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop
        # (and up to 40 threads) per request for what is a dict lookup and one os.stat.
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AgentError("unauthorized", 401, "Pair with the kiosk first (missing token).")
        origin = request.headers.get("origin")
        client, touch_due = pairing.lookup(token.strip(), origin)
        if client is not None and touch_due:
            # At most once a minute per client: a locked write with fsync, off the loop.
            client = await asyncio.to_thread(pairing.authenticate, token.strip(), origin)
        if client is None:
            raise AgentError("unauthorized", 401, "Unknown, revoked or foreign token.")
        return Caller(client.client_id, origin, client.client_name)

    Authed = Annotated[Caller, Depends(caller)]

    @app.get("/v1/status", tags=["status"])
    async def status() -> dict[str, Any]:
        """Version, reader and card presence. Nothing personal; no token needed."""
        return {"version": __version__, "api": "v1", "backend": backend_name, **service.status()}

    @app.post("/v1/pair", tags=["pairing"], status_code=201)
    async def pair(body: PairRequestBody, request: Request) -> dict[str, Any]:
        """Ask to pair. Show `code` to the kiosk operator, who approves it on the kiosk."""
        try:
            # The store writes under flock with fsync: keep it off the event loop.
            req = await asyncio.to_thread(
                pairing.request, request.headers.get("origin"), body.client_name
            )
        except PairingError as exc:
            raise AgentError("pairing_error", 409, str(exc), {"reason": exc.code}) from None
        return {"request_id": req.request_id, "code": req.code, "expires_at": req.expires_at}

    @app.post("/v1/pair/claim", tags=["pairing"])
    async def claim(body: PairClaimBody, request: Request) -> JSONResponse:
        """Poll after asking: 202 while pending, then the token exactly once."""
        try:
            token = await asyncio.to_thread(
                pairing.claim, body.request_id, request.headers.get("origin")
            )
        except PairingError as exc:
            raise AgentError("pairing_error", 409, str(exc), {"reason": exc.code}) from None
        if token is None:
            return JSONResponse({"status": "pending"}, status_code=202)
        return JSONResponse({"status": "approved", "token": token})

    @app.get("/v1/card", tags=["card"])
    async def card(_: Authed) -> dict[str, Any]:
        info = await service.card_info()
        return {
            "card_number": info.card_number,
            "holder_name": info.holder_name,
            "company_name": info.company_name,
            "uscc": info.uscc,
            "card_type": info.card_type.value,
            "enterprise_code": info.enterprise_code,
        }

    @app.get("/v1/card/certificates", tags=["card"])
    async def certificates(_: Authed) -> dict[str, Any]:
        now = datetime.now(UTC)
        certs = await service.certificates()
        return {slot.value: certificate_summary(info, now) for slot, info in certs.items()}

    @app.get("/v1/pin", tags=["pin"])
    async def pin_status(_: Authed) -> dict[str, Any]:
        """Tries left, blocked, verified. Spends no try."""
        st = await service.pin_status()
        return {"tries_left": st.tries_left, "blocked": st.blocked, "verified": st.verified}

    @app.post("/v1/pin/verify", tags=["pin"])
    async def pin_verify(body: PinVerifyBody, who: Authed) -> dict[str, Any]:
        outcome = await service.verify_pin(
            who, body.pin.get_secret_value(), confirm_final_try=body.confirm_final_try
        )
        return {
            "session": {"expires_in_s": round(outcome.expires_in_s, 1)},
            "card": {
                "card_number": outcome.card.masked_card_number,
                "holder_name": outcome.card.holder_name,
                "company_name": outcome.card.company_name,
            },
        }

    @app.post("/v1/pin/change", tags=["pin"])
    async def pin_change(body: PinChangeBody, who: Authed) -> dict[str, Any]:
        await service.change_pin(
            who,
            body.old_pin.get_secret_value(),
            body.new_pin.get_secret_value(),
            confirm_final_try=body.confirm_final_try,
        )
        return {"changed": True}

    @app.post("/v1/sign", tags=["sign"])
    async def sign(body: SignBody, who: Authed, response: Response) -> dict[str, Any]:
        data = _b64(body.data, "data", max_data_bytes) if body.data is not None else None
        digest = _b64(body.digest, "digest", 64) if body.digest is not None else None
        outcome = await service.sign(
            who, purpose=body.purpose, title=body.title, data=data, digest=digest
        )
        sig = outcome.signature
        # Lets a client (and the load benchmark) tell card time from agent overhead.
        response.headers["Server-Timing"] = (
            f"card;dur={outcome.card_ms:.3f}, queue;dur={outcome.queue_ms:.3f}"
        )
        value = sig.der() if body.signature_format == "der" else sig.value
        return {
            "signature": base64.b64encode(value).decode(),
            "signature_format": body.signature_format
            if sig.algorithm.value == "SM2-SM3"
            else "pkcs1",
            "algorithm": sig.algorithm.value,
            "digest": base64.b64encode(sig.digest).decode(),
            "certificate_number": outcome.certificate.serial_hex,
            "audit_id": outcome.audit_id,
        }

    @app.post("/v1/session/end", tags=["pin"])
    async def session_end(who: Authed) -> dict[str, Any]:
        """End the signing session and clear the card's verified state."""
        return {"ended": await service.end_session(who)}

    @app.websocket("/v1/events")
    async def events(ws: WebSocket) -> None:
        """Card and reader events. First message must be {"type":"auth","token":...}."""
        await ws.accept()
        token = await _first_message_token(ws)
        if (
            token is None
            or await asyncio.to_thread(pairing.authenticate, token, ws.headers.get("origin"))
            is None
        ):
            log.info("events: unauthenticated connection closed (4401)")
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "error", "code": "unauthorized"})
                await ws.close(code=4401)
            return
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=64)

        def on_event(event: Any) -> None:
            item = {
                "type": getattr(event, "kind", "unknown"),
                "reader": getattr(event, "reader", None),
            }
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(item)

        service.owner.subscribe(on_event)

        async def watch_disconnect() -> None:
            while (await ws.receive())["type"] != "websocket.disconnect":
                pass  # clients have nothing to say after auth; ignore chatter

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await ws.send_json({"type": "hello", **service.status()})
            while not watcher.done():
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    await ws.send_json(getter.result())
                else:
                    getter.cancel()
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            watcher.cancel()
            service.owner.unsubscribe(on_event)

    return _secured(app, port, allowed_origins, max_body_bytes)


async def _first_message_token(ws: WebSocket) -> str | None:
    """The token of the first message `{"type": "auth", "token": "..."}`, or None for
    anything else: silence, a binary frame, not JSON, or a token that is not text."""
    try:
        message = await asyncio.wait_for(ws.receive(), timeout=5)
    except (TimeoutError, WebSocketDisconnect):
        return None
    first = message.get("text")
    if not isinstance(first, str) or not first.startswith("{"):
        return None
    try:
        token = json.loads(first).get("token")
    except (ValueError, AttributeError):
        return None
    return token if isinstance(token, str) and token and is_text(token) else None


def _secured(app: FastAPI, port: int, origins: tuple[str, ...], max_body: int) -> FastAPI:
    redact_websocket_logs()  # /v1/events carries the token in its first message
    app.add_middleware(
        SecurityMiddleware,
        port=port,
        allowed_origins=origins,
        max_body_bytes=max_body,
    )
    return app

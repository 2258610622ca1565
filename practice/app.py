"""The practice Single Window: static pages plus a small JSON API that hands out the
documents to sign and verifies every signature against the card's certificate."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from card.crypto.certs import (
    CertificateInfo,
    certificate_from_pem,
    certificate_to_pem,
    days_left,
    parse_certificate,
)
from card.errors import CardError
from practice.documents import SIGNED_STEPS, STEP_BY_KEY, render, seal_svg
from practice.state import SignatureRecord, Visit, VisitStore
from practice.verify import decode_signature, verify_signature

COOKIE = "practice_visit"
OFFICIAL_CLIENT_URL = "ws://127.0.0.1:61232"
CERT_WARN_DAYS = 30
STATIC_DIR = resources.files("practice") / "static"

_MOBILE_RE = re.compile(r"1[3-9][0-9]{9}")
_EMAIL_RE = re.compile(r"[A-Za-z0-9.]+@[A-Za-z0-9]+(\.[A-Za-z0-9]+)*\.[A-Za-z]{2,}")


class PracticeError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardFields(_Body):
    holder_name: str = Field("", max_length=100)
    company_name: str = Field("", max_length=200)
    uscc: str = Field("", max_length=32)
    card_number: str = Field("", max_length=32)


class LoginBody(_Body):
    certificate_pem: str = Field(min_length=1, max_length=16384)
    signature: str = Field(min_length=1, max_length=4096)
    algorithm: str | None = Field(None, max_length=32)
    certificate_number: str | None = Field(None, max_length=64)
    card: CardFields | None = None


class ContactBody(_Body):
    name: str = Field("", max_length=60)
    mobile: str = Field("", max_length=20)
    email: str = Field("", max_length=120)


class SignBody(_Body):
    signature: str = Field(min_length=1, max_length=4096)
    algorithm: str | None = Field(None, max_length=32)
    certificate_number: str | None = Field(None, max_length=64)


def contact_errors(body: ContactBody) -> dict[str, str]:
    """The Single Window's rules, with the guide's warning about e-mail addresses."""
    errors: dict[str, str] = {}
    if not 2 <= len(body.name.strip()) <= 30:
        errors["name"] = "请填写联系人姓名（2 至 30 个字）。"
    if not _MOBILE_RE.fullmatch(body.mobile.strip()):
        errors["mobile"] = "请填写 11 位手机号码，例如 13800138000。"
    email = body.email.strip()
    if "-" in email or "_" in email:
        errors["email"] = (
            "这个邮箱带有中划线（-）或下划线（_），单一窗口不接受。请换一个不含这两个符号的邮箱。"
        )
    elif not _EMAIL_RE.fullmatch(email):
        errors["email"] = "请填写正确的邮箱地址，例如 zhangsan@example.com。"
    return errors


def _record_json(r: SignatureRecord) -> dict[str, Any]:
    step = STEP_BY_KEY[r.step]
    return {
        "step": r.step,
        "label": step.label,
        "purpose": r.purpose,
        "title": r.title,
        "sha256": r.sha256,
        "algorithm": r.algorithm,
        "certificate_number": r.certificate_number,
        "verified": r.verified,
        "signature": r.signature_b64,
        "at": datetime.fromtimestamp(r.at, UTC).isoformat(),
    }


class _SecurityHeaders:
    """No framing, scripts only from here, no referrer; API answers never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.csp = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {OFFICIAL_CLIENT_URL} wss://wss.singlewindow.cn:61231; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        is_api = str(scope.get("path", "")).startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.csp),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if is_api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_practice_app(*, read_seconds: float = 10.0, approval_delay_s: float = 1.5) -> FastAPI:
    """The ASGI app. `read_seconds`: how long the application form must stay open before
    it can be confirmed (the Single Window forces 10 s)."""
    visits = VisitStore()
    app = FastAPI(
        title="card-agent practice Single Window",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(PracticeError)
    async def _practice_error(_: Request, exc: PracticeError) -> JSONResponse:
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status
        )

    def current(request: Request) -> Visit:
        visit = visits.get(request.cookies.get(COOKIE))
        if visit is None:
            raise PracticeError(401, "no_visit", "办理已过期，请回到首页重新开始。")
        return visit

    def logged_in(request: Request) -> Visit:
        visit = current(request)
        if not visit.logged_in:
            raise PracticeError(401, "login_required", "请先用电子口岸卡登录。")
        return visit

    def set_cookie(response: Response, visit: Visit) -> None:
        response.set_cookie(COOKIE, visit.visit_id, httponly=True, samesite="strict", path="/")

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> FileResponse:
        response = FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")
        if visits.get(request.cookies.get(COOKIE)) is None:
            set_cookie(response, visits.new())
        response.headers["cache-control"] = "no-store"
        return response

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        return {
            "read_seconds": read_seconds,
            "approval_delay_s": approval_delay_s,
            "official_client_url": OFFICIAL_CLIENT_URL,
            "cert_warn_days": CERT_WARN_DAYS,
        }

    @app.post("/api/start")
    async def start(request: Request, response: Response) -> dict[str, Any]:
        old = request.cookies.get(COOKIE)
        if old:
            visits.drop(old)
        visit = visits.new()
        set_cookie(response, visit)
        return {"reference": visit.reference}

    @app.post("/api/login/challenge")
    async def challenge(request: Request) -> dict[str, Any]:
        visit = current(request)
        # A fresh login forgets the previous card's state in this visit.
        visit.certificate = None
        visit.records.clear()
        visit.documents.clear()
        visit.challenge = secrets.token_hex(16).upper()
        return {"challenge": visit.challenge}

    @app.post("/api/login")
    async def login(body: LoginBody, request: Request) -> dict[str, Any]:
        visit = current(request)
        if visit.challenge is None:
            raise PracticeError(409, "no_challenge", "登录已过期，请重新登录。")
        challenge_text, visit.challenge = visit.challenge, None  # one attempt per challenge
        try:
            cert = parse_certificate(certificate_from_pem(body.certificate_pem))
        except (CardError, ValueError):
            raise PracticeError(422, "bad_certificate", "无法读取卡片证书。") from None
        if body.certificate_number and body.certificate_number.lower() != cert.serial_hex:
            raise PracticeError(422, "certificate_mismatch", "签名证书与卡片证书不一致。")
        now = datetime.now(UTC)
        left = days_left(cert, now)
        if now < cert.not_before or left < 0:
            raise PracticeError(403, "certificate_expired", "此卡证书已过期或尚未生效，无法登录。")
        signature = decode_signature(body.signature)
        ok, algorithm = (
            verify_signature(cert, challenge_text.encode(), signature, body.algorithm)
            if signature
            else (False, "")
        )
        if not ok:
            raise PracticeError(403, "signature_invalid", "登录签名校验失败，请重新登录。")
        _login(visit, cert, body.card, challenge_text, signature or b"", algorithm)
        warning = None
        if left < CERT_WARN_DAYS:
            warning = f"您的证书将在 {int(left)} 天后到期，请尽快到电子口岸办理证书更新。"
        return {
            "holder": visit.holder,
            "company": visit.company,
            "uscc": visit.uscc,
            "card_number": visit.card_number,
            "certificate_number": cert.serial_hex,
            "not_after": cert.not_after.date().isoformat(),
            "days_left": int(left),
            "warning": warning,
            "reference": visit.reference,
        }

    def _login(
        visit: Visit,
        cert: CertificateInfo,
        card: CardFields | None,
        challenge_text: str,
        signature: bytes,
        algorithm: str,
    ) -> None:
        visit.certificate = cert
        visit.holder = cert.subject_cn or (card.holder_name if card else "")
        visit.company = cert.company_name or cert.subject_ou or (card.company_name if card else "")
        visit.uscc = card.uscc if card else ""
        number = card.card_number if card else ""
        visit.card_number = ("*" * (len(number) - 4) + number[-4:]) if len(number) > 4 else ""
        visit.contact = {}
        visit.records.append(_record(visit, "login", challenge_text, signature, algorithm))

    def _record(
        visit: Visit, step: str, text: str, signature: bytes, algorithm: str
    ) -> SignatureRecord:
        s = STEP_BY_KEY[step]
        return SignatureRecord(
            step=step,
            purpose=s.purpose,
            title=s.title,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            algorithm=algorithm,
            certificate_number=visit.cert_number,
            signature_b64=base64.b64encode(signature).decode(),
            verified=True,
            at=time.time(),
        )

    @app.post("/api/contact")
    async def contact(body: ContactBody, request: Request) -> JSONResponse:
        visit = logged_in(request)
        errors = contact_errors(body)
        if errors:
            return JSONResponse(
                {
                    "error": {"code": "invalid_contact", "message": "请检查联系信息。"},
                    "fields": errors,
                },
                status_code=422,
            )
        visit.contact = {
            "name": body.name.strip(),
            "mobile": body.mobile.strip(),
            "email": body.email.strip(),
        }
        visit.documents.pop("application", None)
        return JSONResponse({"ok": True})

    def _check_order(visit: Visit, step: str) -> None:
        if step not in SIGNED_STEPS:
            raise PracticeError(404, "unknown_step", "没有这一步。")
        if not visit.contact:
            raise PracticeError(409, "contact_required", "请先填写联系人信息。")
        for earlier in SIGNED_STEPS[: SIGNED_STEPS.index(step)]:
            if not visit.signed(earlier):
                label = STEP_BY_KEY[earlier].label
                raise PracticeError(409, "out_of_order", f"请先完成“{label}”。")

    @app.get("/api/document/{step}")
    async def document(step: str, request: Request) -> dict[str, Any]:
        visit = logged_in(request)
        _check_order(visit, step)
        text = visit.documents.get(step)
        if text is None:
            text = visit.documents[step] = render(visit, step, datetime.now())
        s = STEP_BY_KEY[step]
        return {
            "step": step,
            "purpose": s.purpose,
            "title": s.title,
            "text": text,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        }

    @app.get("/api/seal.svg")
    async def seal(request: Request) -> Response:
        visit = logged_in(request)
        return Response(seal_svg(visit.company), media_type="image/svg+xml")

    @app.post("/api/sign/{step}")
    async def sign(step: str, body: SignBody, request: Request) -> dict[str, Any]:
        visit = logged_in(request)
        _check_order(visit, step)
        text = visit.documents.get(step)
        if text is None:
            raise PracticeError(409, "no_document", "请先打开要签署的文件。")
        assert visit.certificate is not None
        if body.certificate_number and body.certificate_number.lower() != visit.cert_number:
            raise PracticeError(
                409, "card_changed", "签名所用的卡与登录时的卡不一致，请用同一张卡从登录重新开始。"
            )
        signature = decode_signature(body.signature)
        ok, algorithm = (
            verify_signature(visit.certificate, text.encode(), signature, body.algorithm)
            if signature
            else (False, "")
        )
        if not ok:
            raise PracticeError(403, "signature_invalid", "签名校验失败，未记录。请重试。")
        record = _record(visit, step, text, signature or b"", algorithm)
        visit.records = [r for r in visit.records if r.step != step] + [record]
        return {"verified": True, "record": _record_json(record)}

    @app.get("/api/result")
    async def result(request: Request) -> dict[str, Any]:
        visit = logged_in(request)
        if not visit.signed("submit"):
            return {"status": "not_submitted"}
        return {
            "status": "approved",
            "policy_number": visit.policy_number,
            "company": visit.company,
        }

    @app.get("/api/summary")
    async def summary(request: Request) -> dict[str, Any]:
        visit = logged_in(request)
        return {
            "reference": visit.reference,
            "holder": visit.holder,
            "company": visit.company,
            "certificate_number": visit.cert_number,
            "certificate_pem": certificate_to_pem(visit.certificate.der)
            if visit.certificate
            else None,
            "policy_number": visit.policy_number if visit.signed("submit") else None,
            "records": [_record_json(r) for r in visit.records],
            "complete": all(visit.signed(s) for s in SIGNED_STEPS),
        }

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    app.add_middleware(_SecurityHeaders)
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "[::1]", "::1"]
    )
    return app

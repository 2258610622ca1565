"""`POST /v1/sign`: a signature for the caller's session, checked before it is answered."""

from __future__ import annotations

import base64
import binascii
import time

from fastapi import APIRouter, Response

from agent.api.dependencies import Authenticated, Context
from agent.api.models import SignAnswer, SignBody, error_responses
from agent.errors import AgentError
from agent.vocabulary import ErrorCode
from card.eport.driver import SignAlgorithm

router = APIRouter(tags=["sign"], responses=error_responses(401, 409, 413, 422, 423, 502, 503, 504))


def decode_base64(value: str, what: str, limit: int) -> bytes:
    """Canonical base64 of at most `limit` bytes, decoded."""
    # The encoded length bounds the work before decoding; the limit is on the bytes.
    if len(value) > -(-limit // 3) * 4:
        raise AgentError(ErrorCode.PAYLOAD_TOO_LARGE, 413, f"{what} is over {limit} bytes.")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AgentError(ErrorCode.INVALID_INPUT, 422, f"{what} is not valid base64.") from None
    if len(raw) > limit:
        raise AgentError(ErrorCode.PAYLOAD_TOO_LARGE, 413, f"{what} is over {limit} bytes.")
    # b64decode still accepts excess padding ("QUJD=") and non-zero trailing bits
    # ("QR=="): only the canonical encoding of the bytes is valid base64 here.
    if base64.b64encode(raw).decode("ascii") != value:
        raise AgentError(ErrorCode.INVALID_INPUT, 422, f"{what} is not valid base64.")
    return raw


@router.post("/v1/sign")
async def sign(
    body: SignBody, who: Authenticated, context: Context, response: Response
) -> SignAnswer:
    entered = time.perf_counter()
    limit = context.settings.max_data_bytes
    data = decode_base64(body.data, "data", limit) if body.data is not None else None
    digest = decode_base64(body.digest, "digest", 64) if body.digest is not None else None
    outcome = await context.service.sign(
        who, purpose=body.purpose, title=body.title, data=data, digest=digest
    )
    sig = outcome.signature
    # Lets a client (and the load benchmark) tell card time from agent overhead; `app`
    # is this handler's time, so app - card - queue is what the agent itself added.
    app_ms = (time.perf_counter() - entered) * 1000
    response.headers["Server-Timing"] = (
        f"card;dur={outcome.card_ms:.3f}, queue;dur={outcome.queue_ms:.3f}, app;dur={app_ms:.3f}"
    )
    sm2 = sig.algorithm is SignAlgorithm.SM2_SM3
    value = sig.der() if body.signature_format == "der" else sig.value
    return SignAnswer(
        signature=base64.b64encode(value).decode(),
        signature_format=body.signature_format if sm2 else "pkcs1",
        algorithm=sig.algorithm,
        digest=base64.b64encode(sig.digest).decode(),
        certificate_number=outcome.certificate.serial_hex,
        audit_id=outcome.audit_id,
    )

"""Pairing: a client asks, the kiosk operator approves, the client claims its token once."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from agent.api.dependencies import Context
from agent.api.models import (
    PairAnswer,
    PairApprovedAnswer,
    PairClaimBody,
    PairPendingAnswer,
    PairRequestBody,
    error_responses,
)
from agent.errors import AgentError
from agent.pairing import PairingError
from agent.vocabulary import ErrorCode

router = APIRouter(tags=["pairing"], responses=error_responses(409, 422))


def _refused(exc: PairingError) -> AgentError:
    return AgentError(ErrorCode.PAIRING_ERROR, 409, str(exc), {"reason": exc.code})


@router.post("/v1/pair", status_code=201)
async def pair(body: PairRequestBody, request: Request, context: Context) -> PairAnswer:
    """Ask to pair. Show `code` to the kiosk operator, who approves it on the kiosk."""
    try:
        # The store writes under flock with fsync: keep it off the event loop.
        req = await asyncio.to_thread(
            context.pairing.request, request.headers.get("origin"), body.client_name
        )
    except PairingError as exc:
        raise _refused(exc) from None
    return PairAnswer(request_id=req.request_id, code=req.code, expires_at=req.expires_at)


@router.post(
    "/v1/pair/claim",
    response_model=PairApprovedAnswer,
    responses={202: {"model": PairPendingAnswer}},
)
async def claim(body: PairClaimBody, request: Request, context: Context) -> JSONResponse:
    """Poll after asking: 202 while pending, then the token exactly once."""
    try:
        token = await asyncio.to_thread(
            context.pairing.claim, body.request_id, request.headers.get("origin")
        )
    except PairingError as exc:
        raise _refused(exc) from None
    if token is None:
        return JSONResponse(PairPendingAnswer().model_dump(), status_code=202)
    return JSONResponse(PairApprovedAnswer(token=token).model_dump())

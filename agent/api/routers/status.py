"""`GET /v1/status`: version, reader and card presence. Nothing personal; no token."""

from __future__ import annotations

from fastapi import APIRouter

from agent import __version__
from agent.api.dependencies import Context
from agent.api.models import StatusAnswer

router = APIRouter(tags=["status"])


@router.get("/v1/status")
async def status(context: Context) -> StatusAnswer:
    state = context.service.card_state
    return StatusAnswer(
        version=__version__,
        backend=context.settings.backend_name,
        reader_present=state.reader_present,
        card_present=state.card_present,
    )

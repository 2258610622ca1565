"""The PIN: its status (no try spent), verification (opens a signing session), change,
and the end of a session."""

from __future__ import annotations

from fastapi import APIRouter

from agent.api.dependencies import Authenticated, Context
from agent.api.models import (
    ChangedAnswer,
    PinChangeBody,
    PinStatusAnswer,
    PinVerifyBody,
    SessionEndAnswer,
    SessionInfo,
    VerifiedCard,
    VerifyAnswer,
    error_responses,
)

router = APIRouter(tags=["pin"], responses=error_responses(401, 403, 409, 422, 423, 503, 504))


@router.get("/v1/pin")
async def pin_status(_: Authenticated, context: Context) -> PinStatusAnswer:
    """Tries left, blocked, verified. Spends no try."""
    st = await context.service.pin_status()
    return PinStatusAnswer(tries_left=st.tries_left, blocked=st.blocked, verified=st.verified)


@router.post("/v1/pin/verify")
async def pin_verify(body: PinVerifyBody, who: Authenticated, context: Context) -> VerifyAnswer:
    outcome = await context.service.verify_pin(
        who, body.pin.get_secret_value(), confirm_final_try=body.confirm_final_try
    )
    return VerifyAnswer(
        session=SessionInfo(expires_in_s=round(outcome.expires_in_s, 1)),
        card=VerifiedCard(
            card_number=outcome.card.masked_card_number,
            holder_name=outcome.card.holder_name,
            company_name=outcome.card.company_name,
        ),
    )


@router.post("/v1/pin/change")
async def pin_change(body: PinChangeBody, who: Authenticated, context: Context) -> ChangedAnswer:
    await context.service.change_pin(
        who,
        body.old_pin.get_secret_value(),
        body.new_pin.get_secret_value(),
        confirm_final_try=body.confirm_final_try,
    )
    return ChangedAnswer(changed=True)


@router.post("/v1/session/end")
async def session_end(who: Authenticated, context: Context) -> SessionEndAnswer:
    """End the signing session and clear the card's verified state."""
    return SessionEndAnswer(ended=await context.service.end_session(who))

"""The card in the reader: who it belongs to, its certificates, which driver serves it,
and what it is (a support report)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from agent.api.dependencies import Authenticated, Context
from agent.api.models import (
    CardAnswer,
    CertificateAnswer,
    CertificatesAnswer,
    DriverAnswer,
    IdentifyAnswer,
    error_responses,
)
from card.crypto.certs import certificate_summary
from card.eport.driver import CertSlot

router = APIRouter(tags=["card"], responses=error_responses(401, 409, 423, 502, 503, 504))


@router.get("/v1/card")
async def card(_: Authenticated, context: Context) -> CardAnswer:
    info = await context.service.card_info()
    return CardAnswer(
        card_number=info.card_number,
        holder_name=info.holder_name,
        company_name=info.company_name,
        uscc=info.uscc,
        card_type=info.card_type,
        enterprise_code=info.enterprise_code,
    )


@router.get("/v1/card/certificates")
async def certificates(_: Authenticated, context: Context) -> CertificatesAnswer:
    now = datetime.now(UTC)
    certs = await context.service.certificates()
    summary = {
        slot: CertificateAnswer.model_validate(certificate_summary(info, now))
        for slot, info in certs.items()
    }
    return CertificatesAnswer(sign=summary[CertSlot.SIGN], encrypt=summary[CertSlot.ENCRYPT])


@router.get("/v1/card/driver", responses=error_responses(422))
async def driver(_: Authenticated, context: Context) -> DriverAnswer:
    """The driver serving the card, and the registry entry that chose it."""
    return DriverAnswer.model_validate(await context.service.driver_info())


@router.get("/v1/card/identify")
async def identify(_: Authenticated, context: Context) -> IdentifyAnswer:
    """ATR, registry match, answering applications / SKF enumeration: no PIN, nothing
    read or written. Ends open signing sessions (the card is re-opened)."""
    return IdentifyAnswer.model_validate(await context.service.identify())

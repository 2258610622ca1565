"""pcscd, the reader, and no virtual reader on a production kiosk."""

from __future__ import annotations

import asyncio
import re

from agent.access import CardCommandError
from agent.selftest.card_errors import card_failure
from agent.selftest.context import SelftestContext
from agent.selftest.registry import Need, Outcome, check
from card import errors as ce

VIRTUAL_READER = re.compile(r"virtual pcd", re.IGNORECASE)


@check("pcscd", "pcscd reachable", order=20, needs=(Need.PCSC,))
async def pcscd(ctx: SelftestContext) -> Outcome:
    from agent.access.readers import pcsc_readers

    try:
        ctx.readers = await asyncio.to_thread(pcsc_readers)
    except ImportError:
        ctx.block(Need.CARD, "pyscard missing")
        return Outcome(
            "fail",
            "pyscard is not installed",
            "reinstall with the pcsc extra: pip install 'card-agent[pcsc]'",
        )
    except ce.ServiceUnavailable as exc:
        ctx.block(Need.CARD, "pcscd not reachable")
        return Outcome(
            "fail",
            f"pcscd not reachable: {exc}",
            "sudo systemctl start pcscd.socket (package pcscd); for the service user "
            "also check the polkit rule 50-card-agent.rules",
        )
    except ce.CardError as exc:
        ctx.block(Need.CARD, "pcscd error")
        return Outcome("fail", f"pcscd error: {exc}", "sudo systemctl restart pcscd")
    return Outcome("pass", f"pcscd answers ({len(ctx.readers)} reader(s))")


@check("reader", "reader present", order=30, needs=(Need.CARD,), provides=Need.CARD)
async def reader(ctx: SelftestContext) -> Outcome:
    if ctx.readers is not None:  # PC/SC: pick the reader as the backend does
        pattern = ctx.config.card.reader_pattern()
        names = [r.name or "" for r in ctx.readers]
        matching = [r for r in ctx.readers if pattern is None or pattern.search(r.name or "")]
        if not matching:
            ctx.block(Need.CARD, "no reader")
            wanted = f" matching {ctx.config.card.reader!r}" if pattern else ""
            return Outcome(
                "fail",
                f"no reader{wanted}" + (f" (pcscd lists: {', '.join(names)})" if names else ""),
                "connect the reader; `pcsc_scan` shows what pcscd sees"
                + ("; check card.reader in the configuration" if pattern else ""),
                {"readers": names},
            )
        with_card = [r for r in matching if r.card_present]
        ctx.reader = (with_card or matching)[0]
        return Outcome("pass", f"{ctx.reader.name}", details={"readers": names})
    try:
        view = await ctx.access.reader()
    except CardCommandError as exc:
        ctx.block(Need.CARD, "reader not reachable")
        return card_failure(exc, "reader")
    if view is None:
        ctx.block(Need.CARD, "no reader")
        return Outcome("fail", "no reader", "connect the card reader")
    ctx.reader = view
    name = view.name or f"{ctx.config.card.backend} reader in the agent"
    return Outcome("pass", name, details={"mode": ctx.access.mode})


@check("virtual_reader", "no virtual reader", order=40, needs=(Need.PCSC,))
async def virtual_reader(ctx: SelftestContext) -> Outcome:
    if ctx.readers is None:
        return Outcome("skip", "readers unknown")
    virtual = [r.name or "" for r in ctx.readers if VIRTUAL_READER.search(r.name or "")]
    if not virtual:
        return Outcome("pass", "no virtual reader")
    if ctx.config.card.demo:
        return Outcome("pass", f"virtual reader present (demo mode): {', '.join(virtual)}")
    return Outcome(
        "warn",
        f"virtual reader present: {', '.join(virtual)} (vsmartcard-vpcd)",
        "production kiosk: sudo apt purge vsmartcard-vpcd (anyone reaching its TCP port "
        "can insert a card); demo kiosk: set card.demo = true",
        {"virtual_readers": virtual},
    )

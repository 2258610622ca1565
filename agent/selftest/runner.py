"""Runs the registered checks in order over one `SelftestContext`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from agent.access import CardAccess
from agent.config import Config
from agent.selftest.context import SelftestContext, SignRequest
from agent.selftest.registry import CheckSpec, Outcome, registered
from agent.selftest.report import CheckResult, build_report

CHECK_TIMEOUT_S = 20.0

# (index from 1, how many, check id, its result: None when it starts)
ProgressCallback = Callable[[int, int, str, CheckResult | None], None]


async def run_selftest(
    config: Config,
    access: CardAccess,
    *,
    skip: Iterable[str] = (),
    progress: ProgressCallback | None = None,
    sign: SignRequest | None = None,
    config_source: str | None = None,
) -> dict[str, Any]:
    """Run every check and return the report (JSON-ready, agent.selftest.report).

    `access` is the way to the card: inside the running agent its own card service
    (`ServiceAccess.remote`), from the CLI the agent's API or a local service. Nothing
    spends a PIN try unless `sign` is given, and then never one of the last
    `security.pin_floor` tries unless it says so: the card service decides.
    """
    specs = registered()
    skipped = set(skip)
    unknown = skipped - {spec.id for spec in specs}
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(sorted(unknown))}")
    started, started_at = time.monotonic(), datetime.now(UTC)
    ctx = SelftestContext(config, access, sign=sign, config_source=config_source)
    for index, spec in enumerate(specs, 1):
        if progress is not None:
            progress(index, len(specs), spec.id, None)
        t0 = time.monotonic()
        outcome = await _outcome(spec, ctx, skipped)
        result = CheckResult(
            spec.id,
            spec.title,
            outcome.status,
            outcome.message,
            None if outcome.status in ("pass", "skip") else outcome.hint,
            outcome.details,
            round((time.monotonic() - t0) * 1000, 1),
        )
        ctx.results.append(result)
        if progress is not None:
            progress(index, len(specs), spec.id, result)
    # Read last: a way to the card opened on demand knows its mode once opened.
    return build_report(ctx.results, access.mode, started, started_at)


async def _outcome(spec: CheckSpec, ctx: SelftestContext, skipped: set[str]) -> Outcome:
    if spec.id in skipped and spec.id != "config":
        if spec.provides is not None:
            ctx.block(spec.provides, f"{spec.id} skipped")
        return Outcome("skip", "skipped (--skip)")
    for need in spec.needs:
        reason = ctx.unmet(need)
        if reason is not None:
            return Outcome("skip", reason)
    try:
        return await asyncio.wait_for(spec.run(ctx), CHECK_TIMEOUT_S)
    except TimeoutError:
        outcome = Outcome("fail", f"no answer within {CHECK_TIMEOUT_S:.0f} s")
    except Exception as exc:  # a bug or an unforeseen failure: report it, run the rest
        outcome = Outcome(
            "fail",
            f"unexpected {type(exc).__name__}: {exc}",
            "report this with the output of `card-agent selftest --json`",
        )
    if spec.provides is not None:  # what it was to find stays unknown: don't wait on it again
        ctx.block(spec.provides, f"{spec.id} check failed")
    return outcome

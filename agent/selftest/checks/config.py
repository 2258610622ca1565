"""The configuration (it loaded, or the selftest would not run: what else it needs)."""

from __future__ import annotations

import os
from typing import Any

from agent.selftest.context import SelftestContext
from agent.selftest.registry import Outcome, check


@check("config", "configuration valid", order=10)
async def configuration(ctx: SelftestContext) -> Outcome:
    cfg = ctx.config
    details: dict[str, Any] = {"backend": cfg.card.backend, "source": ctx.config_source}
    state = cfg.paths.state_dir
    if state.exists() and not os.access(state, os.W_OK | os.X_OK):
        return Outcome(
            "fail",
            f"state directory {state} is not writable by this user",
            "run as root or as the card-agent user (sudo -u card-agent card-agent ...)",
            details,
        )
    if not cfg.security.allowed_origins:
        return Outcome(
            "warn",
            "valid, but no browser extension origin is allowed (security.allowed_origins)",
            'add the extension: allowed_origins = ["chrome-extension://<id>"]',
            details,
        )
    source = f" ({ctx.config_source})" if ctx.config_source else ""
    return Outcome("pass", f"valid{source}; {cfg.card.backend} backend", details=details)

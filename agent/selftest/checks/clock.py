"""The system clock: not before this release, the installed files or the card's
certificate; no state file dated in the future."""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agent
from agent.selftest.context import SelftestContext
from agent.selftest.registry import Outcome, check

# No kiosk runs a build older than this; a clock before it has lost its time.
RELEASE_FLOOR = datetime(2026, 11, 1, tzinfo=UTC)
FUTURE_FILE_SLACK_S = 600


@check("clock", "system clock sane", order=150)
async def clock(ctx: SelftestContext) -> Outcome:
    now = datetime.now(UTC)
    details: dict[str, Any] = {"utc": now.isoformat(timespec="seconds")}
    floors = [(RELEASE_FLOOR, "this release's date")]
    with contextlib.suppress(OSError):
        installed = datetime.fromtimestamp(Path(agent.__file__).stat().st_mtime, UTC)
        floors.append((installed, "the installed software's files"))
    if ctx.sign_cert is not None:
        floors.append((ctx.sign_cert.not_before, "the card certificate's notBefore"))
    for floor, what in floors:
        if now < floor:
            return Outcome(
                "fail",
                f"clock {now:%Y-%m-%d %H:%M} UTC is before {what} ({floor:%Y-%m-%d})",
                "set the time: timedatectl set-ntp true (or date -s), then restart the agent",
                details,
            )
    future = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(ctx.config.paths.state_dir):
            if entry.stat().st_mtime > now.timestamp() + FUTURE_FILE_SLACK_S:
                future.append(entry.name)
    synced = Path("/run/systemd/timesync/synchronized")
    if synced.parent.exists():
        details["ntp_synchronized"] = synced.exists()
    if future:
        return Outcome(
            "warn",
            f"state files dated in the future ({', '.join(sorted(future))}): the clock went back",
            "check the time source (timedatectl status); audit times may be out of order",
            details,
        )
    return Outcome("pass", f"{now:%Y-%m-%d %H:%M} UTC", details=details)

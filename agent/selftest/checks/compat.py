"""The official client's WebSocket endpoint (compat.*): it answers, and refuses a
WebSocket from a foreign Origin or to a foreign Host."""

from __future__ import annotations

from agent.selftest.context import SelftestContext
from agent.selftest.registry import Outcome, check

NETWORK_TIMEOUT_S = 2.0
PROBE_HOST = "selftest.invalid"
PROBE_ORIGIN = "https://selftest.invalid"


async def upgrade_status(host: str, port: int, *, host_header: str, origin: str | None) -> int:
    """Ask for a WebSocket on `/`: the HTTP status of the answer (101: accepted).

    Raises OSError, TimeoutError, websockets' InvalidHandshake (not an HTTP answer)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus
    from websockets.typing import Origin

    try:
        # host/port: where the TCP connection goes; the URI's authority is the Host header.
        async with connect(
            f"ws://{host_header}/",
            host=host,
            port=port,
            origin=Origin(origin) if origin else None,
            open_timeout=NETWORK_TIMEOUT_S,
            proxy=None,
        ):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@check("compat", "compatibility endpoint", order=130)
async def compat(ctx: SelftestContext) -> Outcome:
    settings = ctx.config.compat
    if not settings.enabled:
        return Outcome("skip", "not enabled")
    host, port = settings.host, settings.port
    if port == 0:  # any free port, chosen when the endpoint starts (tests only)
        return Outcome("skip", "compat.port = 0: the port is chosen at start")
    try:
        from websockets.exceptions import InvalidHandshake
    except ImportError:
        return Outcome(
            "fail",
            "the websockets library is not installed",
            "reinstall with the agent extra: pip install 'card-agent[agent]'",
        )
    # Only upgrades that must be refused: an accepted one would open a session on the
    # card (and closing it clears the card's verified state under a visitor).
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    where = f"ws://{authority}"
    try:
        origin = await upgrade_status(host, port, host_header=authority, origin=PROBE_ORIGIN)
        foreign = await upgrade_status(host, port, host_header=f"{PROBE_HOST}:{port}", origin=None)
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        return Outcome(
            "fail",
            f"not answering on {where}: {exc or type(exc).__name__}",
            "check compat.* in the configuration and journalctl -u card-agent",
        )
    if origin == 101 or foreign == 101:
        what = "Origin" if origin == 101 else "Host"
        return Outcome(
            "fail",
            f"{where} accepted a WebSocket with a foreign {what}",
            "any web page could reach the card: upgrade card-agent, check compat.*",
        )
    return Outcome("pass", f"answering on {where}; foreign Host and Origin refused")

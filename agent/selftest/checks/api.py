"""The agent's API: it answers, and refuses a foreign Host and a foreign Origin."""

from __future__ import annotations

import asyncio

from agent import __version__
from agent.access.agent_api import AgentClient, AgentUnreachable
from agent.selftest.context import SelftestContext
from agent.selftest.registry import Outcome, check

NETWORK_TIMEOUT_S = 2.0
PROBE_HOST = "selftest.invalid"
PROBE_ORIGIN = "https://selftest.invalid"


@check("api", "agent API and Host/Origin policy", order=120)
async def api(ctx: SelftestContext) -> Outcome:
    client = AgentClient.from_config(ctx.config, timeout_s=NETWORK_TIMEOUT_S)
    where = client.url
    try:
        ok = await asyncio.to_thread(client.request, "GET", "/v1/status")
        status = ok.json() if ok.status == 200 else None
        if not isinstance(status, dict) or status.get("api") != "v1":
            return Outcome(
                "fail",
                f"{where} answers HTTP {ok.status}, not card-agent",
                "free the port or change server.port",
            )
        foreign_host = await asyncio.to_thread(
            client.request, "GET", "/v1/status", host_header=f"{PROBE_HOST}:{client.port}"
        )
        foreign_origin = await asyncio.to_thread(
            client.request, "GET", "/v1/status", origin=PROBE_ORIGIN
        )
    except AgentUnreachable:
        return Outcome(
            "fail",
            f"agent not answering on {where}",
            "sudo systemctl start card-agent; see journalctl -u card-agent",
        )
    if foreign_host.status != 403 or foreign_host.error_code != "host_forbidden":
        return Outcome(
            "fail",
            f"a foreign Host was not refused (HTTP {foreign_host.status})",
            "DNS rebinding is possible: upgrade card-agent",
        )
    if foreign_origin.status != 403 or foreign_origin.error_code != "origin_forbidden":
        return Outcome(
            "fail",
            f"a foreign Origin was not refused (HTTP {foreign_origin.status})",
            "any web page could call the agent: check security.allowed_origins",
        )
    details = {"version": status.get("version"), "backend": status.get("backend")}
    if status.get("version") != __version__:
        return Outcome(
            "warn",
            f"agent runs version {status.get('version')}, this CLI is {__version__}",
            "restart the agent after an upgrade: sudo systemctl restart card-agent",
            details,
        )
    if status.get("backend") != ctx.config.card.backend:
        return Outcome(
            "warn",
            f"agent runs the {status.get('backend')} backend, the configuration says "
            f"{ctx.config.card.backend}",
            "is the demo unit running? systemctl status card-agent card-agent-demo",
            details,
        )
    return Outcome(
        "pass", f"answering on {where}; foreign Host and Origin refused", details=details
    )

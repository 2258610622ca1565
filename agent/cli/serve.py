"""`card-agent serve`: the agent itself (under systemd: Type=notify with a watchdog)."""

from __future__ import annotations

import click

from agent.cli.context import CliContext, config_option, pass_cli
from agent.cli.errors import CliError


@click.command()
@config_option
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
@pass_cli
def serve(cli: CliContext, log_level: str) -> None:
    """Run the localhost API (under systemd: Type=notify with a watchdog)."""
    import asyncio
    import logging
    import socket

    import uvicorn

    from agent import __version__
    from agent.audit import AuditLogError
    from agent.listener import (
        ListenerLimits,
        effective_max_connections,
        raise_open_files_limit,
        server_config,
        throttle_accept_errors,
    )
    from agent.notify import SystemdNotifier
    from agent.runtime import build_runtime

    config = cli.config
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    open_files = raise_open_files_limit()
    try:
        runtime = build_runtime(config)
    except AuditLogError as exc:
        # An operator's problem, not a crash: say what and how, in one line.
        raise CliError("audit_log", f"cannot open the audit log: {exc}") from None
    notifier = next((c for c in runtime.components if isinstance(c, SystemdNotifier)), None)
    limits = ListenerLimits(
        request_timeout_s=config.server.request_timeout_s,
        keepalive_timeout_s=config.server.keepalive_timeout_s,
        max_connections=effective_max_connections(config.server.max_connections, open_files),
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            throttle_accept_errors(asyncio.get_running_loop())
            await super().startup(sockets)
            # Only here are the listening sockets bound (the lifespan ran before).
            if self.started and not self.should_exit and notifier is not None:
                await notifier.ready()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            if notifier is not None:
                notifier.stopping()
            await super().shutdown(sockets)

    server = Server(
        server_config(
            runtime.app,
            limits,
            host=config.server.host,
            port=config.server.port,
            log_level=log_level,
        )
    )
    click.echo(
        f"card-agent {__version__}: {config.card.backend} card, "
        f"http://{config.server.host}:{config.server.port}/v1/status",
        err=True,
    )
    server.run()
    click.get_current_context().exit(0 if server.started else 1)

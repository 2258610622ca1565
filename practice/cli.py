"""`card-agent practice`: serve the practice Single Window on loopback."""

from __future__ import annotations

import ipaddress

import click

DEFAULT_PORT = 17380


def _loopback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "localhost":
        return value
    try:
        loopback = ipaddress.ip_address(value).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise click.BadParameter("the practice site listens on loopback only")
    return value


@click.command("practice")
@click.option("--host", default="127.0.0.1", show_default=True, callback=_loopback)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--read-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, 120),
    help="How long the application form must stay open before it can be confirmed.",
)
@click.option("--log-level", default="warning", type=click.Choice(["debug", "info", "warning"]))
def practice_command(host: str, port: int, read_seconds: float, log_level: str) -> None:
    """Serve the practice Single Window (training mode for kiosk staff).

    Open http://localhost:17380/ in the kiosk browser with the extension installed
    (as "localhost": see docs/extension.md); /?mode=official uses the official client
    protocol through the extension's bridge.
    """
    import uvicorn

    from practice.app import create_practice_app

    app = create_practice_app(read_seconds=read_seconds)
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    click.echo(f"practice Single Window: http://{shown}:{port}/ (training mode)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)

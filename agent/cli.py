"""The `card-agent` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from agent import __version__
from agent.config import Config, ConfigError, load_config
from agent.pairing import PairingStore

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CARD_AGENT_CONFIG",
    help="TOML configuration file (default: built-in defaults + environment).",
)


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="card-agent")
def main() -> None:
    """Kiosk card agent: owns the E-Port card reader and signs for the browser."""


@main.command()
@CONFIG_OPTION
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def serve(config_path: Path | None, log_level: str) -> None:
    """Run the localhost API."""
    import uvicorn

    from agent.runtime import build_runtime

    config = _load(config_path)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    runtime = build_runtime(config)
    server = uvicorn.Server(
        uvicorn.Config(
            runtime.app,
            host=config.server.host,
            port=config.server.port,
            log_level=log_level,
            access_log=False,
            server_header=False,
        )
    )
    click.echo(
        f"card-agent {__version__}: {config.card.backend} card, "
        f"http://{config.server.host}:{config.server.port}/v1/status",
        err=True,
    )
    server.run()
    sys.exit(0 if server.started else 1)


@main.command()
@click.option("--profile", default="legal-person-sm2", show_default=True, help="simulated card")
@click.option("--message", default="单一窗口 小微政策保单 确认投保", show_default=True)
def demo(profile: str, message: str) -> None:
    """Open a simulated card, read it, verify the PIN, sign and check the signature."""
    from simulator.demo import run_demo

    sys.exit(0 if run_demo(profile, message) else 1)


@main.group()
def pair() -> None:
    """Approve, list and revoke paired clients (run on the kiosk)."""


def _pairing(config_path: Path | None) -> PairingStore:
    from agent.runtime import pairing_path, state_dir

    config = _load(config_path)
    state_dir(config)
    return PairingStore(pairing_path(config))


@pair.command("approve")
@CONFIG_OPTION
@click.argument("code")
def pair_approve(config_path: Path | None, code: str) -> None:
    """Approve the pairing CODE shown by the client."""
    from agent.pairing import PairingError

    try:
        req = _pairing(config_path).approve(code)
    except PairingError as exc:
        raise click.ClickException(f"{exc} ({exc.code})") from None
    click.echo(f"approved {req.client_name!r} from {req.origin or 'a local tool'}")


@pair.command("pending")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True)
def pair_pending(config_path: Path | None, as_json: bool) -> None:
    """Pairing requests waiting for approval."""
    reqs = _pairing(config_path).pending()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "code": r.code,
                        "client_name": r.client_name,
                        "origin": r.origin,
                        "expires_at": r.expires_at,
                    }
                    for r in reqs
                ],
                ensure_ascii=False,
            )
        )
        return
    for r in reqs:
        click.echo(f"{r.code}  {r.client_name}  {r.origin or '(local)'}")


@pair.command("list")
@CONFIG_OPTION
@click.option("--json", "as_json", is_flag=True)
def pair_list(config_path: Path | None, as_json: bool) -> None:
    """Paired clients."""
    clients = _pairing(config_path).list_clients()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "client_id": c.client_id,
                        "client_name": c.client_name,
                        "origin": c.origin,
                        "created_at": c.created_at,
                        "last_used_at": c.last_used_at,
                    }
                    for c in clients
                ],
                ensure_ascii=False,
            )
        )
        return
    for c in clients:
        click.echo(f"{c.client_id}  {c.client_name}  {c.origin or '(local)'}")


@pair.command("revoke")
@CONFIG_OPTION
@click.argument("client_id")
def pair_revoke(config_path: Path | None, client_id: str) -> None:
    """Revoke a paired client's token."""
    if not _pairing(config_path).revoke(client_id):
        raise click.ClickException(f"no paired client {client_id}")
    click.echo(f"revoked {client_id}")


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@CONFIG_OPTION
@click.option("--path", "log_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def audit_verify(config_path: Path | None, log_path: Path | None, as_json: bool) -> None:
    """Check the hash chain; report the first bad record. Exit 0 valid, 1 not."""
    from agent.audit import verify_audit_log
    from agent.runtime import audit_path

    path = log_path or audit_path(_load(config_path))
    result = verify_audit_log(path)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "first_bad_line": result.first_bad_line,
                    "reason": result.reason,
                    "torn_tail": result.torn_tail,
                }
            )
        )
    elif result.ok:
        click.echo(f"{path}: {result.records} records, chain valid")
    else:
        click.echo(f"{path}: INVALID at line {result.first_bad_line}: {result.reason}")
    sys.exit(0 if result.ok else 1)


@main.group("config")
def config_group() -> None:
    """Show or check the configuration."""


@config_group.command("check")
@CONFIG_OPTION
def config_check(config_path: Path | None) -> None:
    """Validate the configuration; exit 1 with the reasons if it is not usable."""
    _load(config_path)
    click.echo("configuration valid")


@config_group.command("show")
@CONFIG_OPTION
def config_show(config_path: Path | None) -> None:
    """The effective configuration (file + environment + defaults) as JSON."""
    click.echo(_load(config_path).model_dump_json(indent=2))

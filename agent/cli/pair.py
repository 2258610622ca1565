"""`card-agent pair ...`: pair, approve, list and revoke clients (run on the kiosk).

The CLI works on the pairing store's file directly (with its lock): the agent re-reads
it on the next request, and none of this needs the agent to run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from agent.cli.context import CliContext, config_option, json_option, pass_cli
from agent.cli.errors import CliError

if TYPE_CHECKING:
    from agent.pairing import PairingStore


def _store(cli: CliContext) -> PairingStore:
    from agent.pairing import PairingStore
    from agent.runtime import pairing_path, state_dir

    config = cli.config
    state_dir(config)
    return PairingStore(pairing_path(config))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@click.group("pair")
def pair_group() -> None:
    """Pair, approve, list and revoke clients (run on the kiosk)."""


@pair_group.command("request")
@config_option
@json_option
@click.option("--name", "name", required=True, help="Client name shown to the operator.")
@click.option("--origin", default=None, help="Bind to this origin (must be allowed).")
@pass_cli
def pair_request(cli: CliContext, name: str, origin: str | None) -> None:
    """Ask to pair a client: prints the code to approve and the request id to claim with.

    The client claims its token with POST /v1/pair/claim {"request_id": ...}, sending
    the same Origin (none for a local tool).
    """
    if origin is not None and origin not in cli.config.security.allowed_origins:
        raise CliError("pairing_error", f"origin {origin!r} is not in security.allowed_origins")
    req = _store(cli).request(origin, name)
    if cli.as_json:
        cli.emit(
            {
                "code": req.code,
                "request_id": req.request_id,
                "client_name": req.client_name,
                "origin": req.origin,
                "expires_at": req.expires_at,
            }
        )
        return
    click.echo(f"code        {req.code}   (approve: card-agent pair approve {req.code})")
    click.echo(f"request_id  {req.request_id}   (claim with POST /v1/pair/claim)")
    click.echo(f"expires     {_when(req.expires_at)}")


@pair_group.command("approve")
@config_option
@json_option
@click.argument("code")
@pass_cli
def pair_approve(cli: CliContext, code: str) -> None:
    """Approve the pairing CODE shown by the client."""
    req = _store(cli).approve(code)
    if cli.as_json:
        cli.emit({"approved": True, "client_name": req.client_name, "origin": req.origin})
    else:
        click.echo(f"approved {req.client_name!r} from {req.origin or 'a local tool'}")


@pair_group.command("pending")
@config_option
@json_option
@pass_cli
def pair_pending(cli: CliContext) -> None:
    """Pairing requests waiting for approval."""
    reqs = _store(cli).pending()
    if cli.as_json:
        cli.emit(
            [
                {
                    "code": r.code,
                    "client_name": r.client_name,
                    "origin": r.origin,
                    "expires_at": r.expires_at,
                }
                for r in reqs
            ]
        )
        return
    if not reqs:
        click.echo("no pending requests")
    for r in reqs:
        click.echo(
            f"{r.code}  {r.client_name}  {r.origin or '(local)'}  until {_when(r.expires_at)}"
        )


@pair_group.command("list")
@config_option
@json_option
@pass_cli
def pair_list(cli: CliContext) -> None:
    """Paired clients."""
    clients = _store(cli).list_clients()
    if cli.as_json:
        cli.emit(
            [
                {
                    "client_id": c.client_id,
                    "client_name": c.client_name,
                    "origin": c.origin,
                    "created_at": c.created_at,
                    "last_used_at": c.last_used_at,
                }
                for c in clients
            ]
        )
        return
    if not clients:
        click.echo("no paired clients")
    for c in clients:
        click.echo(
            f"{c.client_id}  {c.client_name}  {c.origin or '(local)'}  "
            f"paired {_when(c.created_at)}  last used {_when(c.last_used_at)}"
        )


@pair_group.command("revoke")
@config_option
@json_option
@click.argument("client_id")
@pass_cli
def pair_revoke(cli: CliContext, client_id: str) -> None:
    """Revoke a paired client's token (applies on its next request)."""
    if not _store(cli).revoke(client_id):
        raise CliError("not_found", f"no paired client {client_id}")
    if cli.as_json:
        cli.emit({"revoked": client_id})
    else:
        click.echo(f"revoked {client_id}")


@pair_group.command("local")
@config_option
@json_option
@pass_cli
def pair_local(cli: CliContext) -> None:
    """Pair this CLI as a local tool and keep its token in the state directory (0600).

    Card commands do this on their own when the agent runs; use this to renew the
    CLI's token (the previous one is revoked).
    """
    from agent.cli.card_access import local_tool_token

    token = local_tool_token(cli.config)
    client_id, _ = token.pair()
    if cli.as_json:
        cli.emit({"client_id": client_id, "client_name": token.name, "token_file": str(token.path)})
    else:
        click.echo(f"paired {client_id} ({token.name}); token stored in {token.path} (0600)")

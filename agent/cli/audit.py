"""`card-agent audit verify`: check the audit log's hash chain.

Pure standard library with --path: it runs on a machine without the agent's extras
(the configuration, which needs pydantic, is loaded only to find the default log).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from agent.cli.context import CliContext, config_option, json_option, pass_cli


def _anchor(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> tuple[int, str] | None:
    if value is None:
        return None
    seq_text, _, digest = value.partition(":")
    if not seq_text.isdigit() or len(digest) != 64:
        raise click.BadParameter("expected SEQ:SHA256")
    return int(seq_text), digest.lower()


@click.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
@config_option
@click.option(
    "--path",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="the log to check [default: audit.log in the configured state directory]",
)
@click.option(
    "--anchor",
    metavar="SEQ:SHA256",
    callback=_anchor,
    help="an anchor kept elsewhere (telemetry, an earlier `audit verify`): detects an "
    "edited newest record or cut-off records",
)
@json_option
@pass_cli
def audit_verify(cli: CliContext, log_path: Path | None, anchor: tuple[int, str] | None) -> None:
    """Check the hash chain; report the first bad record. Exit 0 valid, 1 not.

    Prints the anchor (seq and SHA-256 of the newest record) to keep elsewhere, and the
    signature requests whose outcome record is missing (a crash between the card's
    answer and the outcome's write; the request record names what was asked).
    """
    from agent.audit import verify_audit_log

    if log_path is None:
        from agent.runtime import audit_path

        log_path = audit_path(cli.config)
    result = verify_audit_log(log_path, anchor)
    exit_code = 0 if result.ok else 1
    if cli.as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "first_bad_line": result.first_bad_line,
                    "reason": result.reason,
                    "torn_tail": result.torn_tail,
                    "anchor": f"{result.last_seq}:{result.last_sha256}"
                    if result.first_bad_line is None
                    else None,
                    "anchor_ok": result.anchor_ok,
                    "anchor_reason": result.anchor_reason,
                    "requests_without_outcome": result.requests_without_outcome,
                    "request_ids_without_outcome": list(result.request_ids_without_outcome),
                }
            )
        )
        click.get_current_context().exit(exit_code)
    if result.first_bad_line is not None:
        click.echo(f"{log_path}: INVALID at line {result.first_bad_line}: {result.reason}")
    else:
        click.echo(f"{log_path}: {result.records} records, chain valid")
        click.echo(f"anchor: {result.last_seq}:{result.last_sha256}")
    if result.anchor_ok is True:
        click.echo("anchor matches")
    elif result.anchor_ok is False:
        click.echo(f"ANCHOR MISMATCH: {result.anchor_reason}")
    if result.requests_without_outcome:
        ids = ", ".join(result.request_ids_without_outcome)
        click.echo(
            f"{result.requests_without_outcome} signature request(s) without an outcome "
            f"record (the agent stopped before writing it): {ids}"
        )
    click.get_current_context().exit(exit_code)

"""`card-agent selftest`: is this kiosk ready to sign? (agent.selftest runs the checks)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from agent.cli.context import (
    CliContext,
    config_option,
    confirm_final_try_option,
    json_option,
    pass_cli,
    pin_stdin_option,
)
from agent.cli.errors import CliError
from agent.cli.pins import read_pins

if TYPE_CHECKING:
    from agent.config import Config
    from agent.selftest import CheckResult, SignRequest


def _split_skip(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command()
@config_option
@json_option
@click.option(
    "--sign", "do_sign", is_flag=True, help="Also verify the PIN and sign a test message."
)
@pin_stdin_option
@confirm_final_try_option
@click.option(
    "--skip",
    multiple=True,
    metavar="CHECK[,CHECK]",
    help="Checks to skip (e.g. api before the service is started).",
)
@pass_cli
def selftest(
    cli: CliContext,
    do_sign: bool,
    pin_stdin: bool,
    confirm_final_try: bool,
    skip: tuple[str, ...],
) -> None:
    """Check that this kiosk can sign: configuration, pcscd, reader, card, certificate,
    PIN, the agent's API, the broker, the clock.

    \b
    Checks: config pcscd reader virtual_reader card card_info certificate chain
            expiry pin sign api compat mqtt clock
    Exit code: 0 all passed, 1 warnings only, 2 a check failed.
    """
    from agent.selftest import CHECK_IDS, SignRequest, format_table, invalid_config_report

    skipped = _split_skip(skip)
    unknown = sorted(set(skipped) - set(CHECK_IDS))
    if unknown:
        raise click.UsageError(f"unknown check(s) for --skip: {', '.join(unknown)}")
    sign = None
    if do_sign:
        pin = read_pins(["PIN"], from_stdin=pin_stdin)[0]
        sign = SignRequest(pin, confirm_final_try=confirm_final_try)
    live = sys.stderr.isatty()
    try:
        config = cli.config
    except CliError as exc:
        if exc.code != "config_invalid":
            raise
        report = invalid_config_report(exc.message)
    else:
        report = asyncio.run(_run(config, cli.config_source, skipped, sign, live))
    if live:
        click.echo("\r\033[K", err=True, nl=False)
    if cli.as_json:
        cli.emit(report)
    else:
        click.echo(format_table(report))
    click.get_current_context().exit(report["exit_code"])


async def _run(
    config: Config, source: str, skip: list[str], sign: SignRequest | None, live: bool
) -> dict[str, Any]:
    from agent.cli.card_access import DeferredCardAccess
    from agent.selftest import run_selftest

    def progress(index: int, total: int, check_id: str, result: CheckResult | None) -> None:
        if result is None:
            if live:
                click.echo(f"\r[{index:2}/{total}] {check_id} ...\033[K", err=True, nl=False)
            return
        line = f"[{index:2}/{total}] {check_id}: {result.status}"
        click.echo(f"\r{line}\033[K" if live else line, err=True, nl=not live)

    async with contextlib.AsyncExitStack() as stack:
        return await run_selftest(
            config,
            DeferredCardAccess(config, stack),
            skip=skip,
            progress=progress,
            sign=sign,
            config_source=source,
        )

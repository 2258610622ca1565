"""`card-agent pin ...`: the card's PIN (tries left, change).

The PIN floor, the audit record and the card's verified state are the card service's
business (the agent's, or the local one): the CLI passes --confirm-final-try on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    from agent.access import CardAccess
    from card.eport.driver import PinStatus


@click.group("pin")
def pin_group() -> None:
    """The card's PIN: tries left, change."""


@pin_group.command("status")
@config_option
@json_option
@pass_cli
def pin_status(cli: CliContext) -> None:
    """Tries left, blocked, verified. Spends no try."""
    from agent.cli.card_access import run_card_command

    async def read(access: CardAccess) -> PinStatus:
        return await access.pin_status()

    st = run_card_command(cli.config, read)
    if cli.as_json:
        cli.emit({"tries_left": st.tries_left, "blocked": st.blocked, "verified": st.verified})
    elif st.blocked:
        click.echo("PIN blocked: the issuer must unblock it")
    elif st.tries_left is None:
        click.echo("PIN verified (a signing session is open)")
    else:
        click.echo(f"{st.tries_left} tries left")


@pin_group.command("change")
@config_option
@json_option
@pin_stdin_option
@confirm_final_try_option
@pass_cli
def pin_change(cli: CliContext, pin_stdin: bool, confirm_final_try: bool) -> None:
    """Change the card's PIN (asks for the current and the new PIN, without echo).

    With --pin-stdin: the current PIN on the first line, the new one on the second.
    """
    from agent.cli.card_access import run_card_command
    from card.eport.session import pin_block
    from card.errors import InvalidPinFormat

    config = cli.config
    old_pin, new_pin = read_pins(
        ["Current PIN", "New PIN"], from_stdin=pin_stdin, confirm_last=True
    )
    try:
        pin_block(new_pin)  # refuse a new PIN no card accepts before spending anything
    except InvalidPinFormat as exc:
        raise CliError("pin_format", f"new PIN: {exc}") from None

    async def change(access: CardAccess) -> None:
        await access.change_pin(old_pin, new_pin, confirm_final_try=confirm_final_try)

    run_card_command(config, change)
    if cli.as_json:
        cli.emit({"changed": True})
    else:
        click.echo("PIN changed")

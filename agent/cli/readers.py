"""`card-agent readers`: the card readers, whether a card is in each, and its ATR."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from agent.cli.context import CliContext, config_option, json_option, pass_cli

if TYPE_CHECKING:
    from agent.access import CardAccess, ReaderView
    from agent.config import Config


@click.command()
@config_option
@json_option
@pass_cli
def readers(cli: CliContext) -> None:
    """The card readers, whether a card is in each, and its ATR."""
    config = cli.config
    rows = _pcsc_rows(config) if config.card.backend == "pcsc" else _simulated_rows(config)
    if cli.as_json:
        cli.emit(rows)
        return
    if not rows:
        click.echo("no readers")
    for row in rows:
        card = (
            f"card {row['atr'] or ''} {('(' + row['card'] + ')') if row['card'] else ''}".strip()
            if row["card_present"]
            else "no card"
        )
        mark = "*" if row["selected_by_config"] else " "
        click.echo(f"{mark} {row['name']}: {card}")


def _row(view: ReaderView, name: str, selected: bool) -> dict[str, Any]:
    from card.eport.atr import describe_atr

    return {
        "name": name,
        "card_present": view.card_present,
        "atr": view.atr.hex().upper() if view.atr else None,
        "card": describe_atr(view.atr) if view.atr else None,
        "selected_by_config": selected,
    }


def _pcsc_rows(config: Config) -> list[dict[str, Any]]:
    """Every reader pcscd knows, without connecting to a card: works while the agent
    holds the card."""
    from agent.access import CardCommandError
    from agent.access.readers import pcsc_readers
    from card.errors import CardError

    try:
        found = pcsc_readers()
    except CardError as exc:  # pcscd not running, not reachable
        code = CardCommandError.from_exception(exc).code
        raise CardCommandError(code, f"pcscd: {exc}") from exc
    pattern = config.card.reader_pattern()
    return [
        _row(view, view.name or "", pattern is None or bool(pattern.search(view.name or "")))
        for view in found
    ]


def _simulated_rows(config: Config) -> list[dict[str, Any]]:
    """The simulated card's reader: in the running agent, or in a local service."""
    from agent.cli.card_access import run_card_command

    async def look(access: CardAccess) -> ReaderView | None:
        return await access.reader()

    view = run_card_command(config, look)
    if view is None:
        return []
    return [_row(view, view.name or "simulated reader (in the running agent)", True)]

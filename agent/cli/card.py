"""`card-agent card ...`: read the E-Port card.

`card info` today; `card identify` (which card is this, from its ATR and files) joins
this group later.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from agent.cli.context import CliContext, config_option, json_option, pass_cli

if TYPE_CHECKING:
    from agent.access import CardAccess
    from card.crypto.certs import CertificateInfo
    from card.eport.driver import CardInfo, CertSlot


@click.group("card")
def card_group() -> None:
    """Read the E-Port card."""


@card_group.command("info")
@config_option
@json_option
@pass_cli
def card_info(cli: CliContext) -> None:
    """Card number, holder, company and the certificates."""
    from agent.cli.card_access import run_card_command
    from card.crypto.certs import certificate_summary

    async def read(access: CardAccess) -> tuple[CardInfo, dict[CertSlot, CertificateInfo]]:
        return await access.card_info(), await access.certificates()

    info, certs = run_card_command(cli.config, read)
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "card": {
            "card_number": info.card_number,
            "holder_name": info.holder_name,
            "company_name": info.company_name,
            "uscc": info.uscc,
            "card_type": info.card_type.value,
            "enterprise_code": info.enterprise_code,
        },
        "certificates": {slot.value: certificate_summary(c, now) for slot, c in certs.items()},
    }
    if cli.as_json:
        cli.emit(data)
        return
    card = data["card"]
    click.echo(f"card number   {card['card_number']} ({card['card_type']})")
    click.echo(f"holder        {card['holder_name']}")
    click.echo(f"company       {card['company_name']}  USCC {card['uscc']}")
    click.echo(f"customs code  {card['enterprise_code'] or '-'}")
    for slot, cert in data["certificates"].items():
        click.echo(
            f"{slot + ' cert':<13} no. {cert['certificate_number']}  "
            f"{cert['key_algorithm']}-{cert['key_bits']}  issuer {cert['issuer_cn']}  "
            f"valid {cert['not_before'][:10]} .. {cert['not_after'][:10]} "
            f"({cert['days_left']:.0f} days left)"
        )

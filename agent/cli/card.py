"""`card-agent card ...`: read the E-Port card (`card info`), and say what a card is
(`card identify`: ATR, driver registry match, answering applications, SKF enumeration)."""

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
    """Read the E-Port card, or identify any card."""


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


@card_group.command("identify")
@config_option
@json_option
@pass_cli
def card_identify(cli: CliContext) -> None:
    """Which card is this: its ATR, the driver registry entry it matches (or why none
    does), the applications that answer SELECT, what an SKF library lists. Asks for no
    PIN and changes nothing on the card; the report is meant for a support request.
    An open signing session ends (the card is re-opened)."""
    from agent.cli.card_access import run_card_command

    async def look(access: CardAccess) -> dict[str, Any]:
        return await access.identify()

    report = run_card_command(cli.config, look)
    if cli.as_json:
        cli.emit(report)
        return
    for line in format_identify(report):
        click.echo(line)


def format_identify(report: dict[str, Any]) -> list[str]:
    """The identify report as text, one fact per line."""
    lines = [f"backend       {report['backend']}", f"reader        {report['reader'] or '-'}"]
    atr = report.get("atr")
    if atr is not None:
        lines.append(f"ATR           {atr['hex']}")
        if atr["error"]:
            lines.append(f"              malformed: {atr['error']}")
        else:
            protocols = ", ".join(f"T={t}" for t in atr["protocols"])
            lines.append(
                f"              {atr['convention']} convention, {protocols}, TCK {atr['tck']}"
            )
            lines.append(
                f"              historical bytes {atr['historical_bytes'] or '-'} "
                f"{atr['historical_text']!r}"
            )
        if atr["known_as"]:
            lines.append(f"              known as: {atr['known_as']}")
    if report.get("registry") is not None:
        lines += _registry_lines(report["registry"], "registry      ")
    applications = report.get("applications") or []
    if applications:
        answered = [a for a in applications if a["selected"]]
        lines.append("applications  " + ("" if answered else "none of the well-known AIDs answers"))
        for app in answered:
            lines.append(f"  {app['aid']:<24} {app['name']} (SW {app['sw']})")
        silent = ", ".join(
            f"{a['name']} {a['sw'] or '?'}" for a in applications if not a["selected"]
        )
        if silent:
            lines.append(f"  not answering: {silent}")
    skf = report.get("skf")
    if skf is not None:
        events = "device events" if skf["device_events"] else "no device events (polled)"
        lines.append(f"SKF library   {skf['library']} ({events})")
        if skf["error"]:
            lines.append(f"  error: {skf['error']}")
        for device in skf["devices"]:
            lines.append(f"  device {device['name']!r}")
            if device["error"]:
                lines.append(f"    error: {device['error']}")
            else:
                lines.append(
                    f"    {device['manufacturer']} / {device['issuer']}, label "
                    f"{device['label']!r}, serial {device['serial_number'] or '-'}, "
                    f"firmware {device['firmware_version']}"
                )
            lines += _registry_lines(device["registry"], "    registry: ")
            for app in device["applications"]:
                containers = ", ".join(f"{c['name']} ({c['type']})" for c in app["containers"])
                detail = f"error: {app['error']}" if app["error"] else containers or "no container"
                lines.append(f"    application {app['name']!r}: {detail}")
    lines += [f"note          {note}" for note in report.get("notes") or []]
    return lines


def _registry_lines(registry: dict[str, Any], prefix: str) -> list[str]:
    if registry["entry"] is None:
        lines = [f"{prefix}no entry matches"]
    else:
        lines = [
            f"{prefix}entry {registry['entry']} ({registry['source']}): {registry['driver']}"
            + (f" — {registry['description']}" if registry["description"] else "")
        ]
    indent = " " * len(prefix)
    lines += [f"{indent}  not {reason}" for reason in registry["reasons"]]
    return lines

"""`card-agent config ...`: show the effective configuration, check it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from agent.cli.context import CliContext, config_option, json_option, pass_cli
from agent.cli.errors import CliError

if TYPE_CHECKING:
    from agent.config import Config

SECRET_NAME = re.compile(r"password|secret|token|key", re.IGNORECASE)
REDACTED = "********"


def redact(value: Any, name: str = "") -> Any:
    """Replace every value whose field name looks secret (password, secret, token, key)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if SECRET_NAME.search(name) and value not in (None, "", [], ()):
        return REDACTED
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def config_warnings(config: Config) -> list[str]:
    """Warnings about a valid configuration (things the selftest would also flag)."""
    from agent.selftest.trust import load_pem_bundle

    warnings: list[str] = []
    bundle = config.card.ca_bundle
    if bundle is not None:
        try:
            if not load_pem_bundle(bundle):
                warnings.append(f"card.ca_bundle {bundle}: no certificate in it")
        except Exception as exc:
            warnings.append(f"card.ca_bundle {bundle}: {exc}")
    elif config.card.backend != "simulated":
        warnings.append("card.ca_bundle unset: the card's certificate chain is not checked")
    if not config.security.allowed_origins:
        warnings.append("security.allowed_origins is empty: no browser extension can pair")
    if config.card.demo and config.card.backend == "pcsc":
        warnings.append("card.demo is set: virtual readers are accepted (never on production)")
    registry = config.card.registry
    if registry is not None and not registry.is_absolute():
        warnings.append(f"card.registry {registry} is relative to the cwd")
    if not config.paths.state_dir.is_absolute():
        warnings.append(f"paths.state_dir {config.paths.state_dir} is relative to the cwd")
    return warnings


@click.group("config")
def config_group() -> None:
    """Show or check the configuration."""


@config_group.command("show")
@config_option
@json_option
@pass_cli
def config_show(cli: CliContext) -> None:
    """The effective configuration (file + environment + defaults), secrets redacted."""
    from agent.cli.toml_text import to_toml

    data = redact(cli.config.model_dump(mode="json"))
    if cli.as_json:
        cli.emit(data)
    else:
        click.echo(to_toml(data), nl=False)


@config_group.command("check")
@config_option
@json_option
@pass_cli
def config_check(cli: CliContext) -> None:
    """Validate the configuration and its driver registry; exit 1 with the reasons if
    they are not usable."""
    from agent.config import ConfigError, load_driver_registry

    try:
        config = cli.config
        load_driver_registry(config.card)
    except (CliError, ConfigError) as exc:
        if isinstance(exc, CliError) and exc.code != "config_invalid":
            raise
        message = exc.message if isinstance(exc, CliError) else str(exc)
        if cli.as_json:
            cli.emit({"valid": False, "errors": message.splitlines(), "warnings": []})
        else:
            click.echo(message, err=True)
        click.get_current_context().exit(1)
    warnings = config_warnings(config)
    if cli.as_json:
        cli.emit({"valid": True, "errors": [], "warnings": warnings})
        return
    click.echo("configuration valid")
    for warning in warnings:
        click.echo(f"warning: {warning}")

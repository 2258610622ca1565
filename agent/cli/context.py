"""What every command shares: the `CliContext` on the click context, and the options
that fill it.

`--config` and `--json` are options of each command (`card-agent serve --config X`, as
systemd units and scripts call it); their callbacks write into the one `CliContext`
of the invocation, so a command body asks `cli.config` (loaded once, on first use) and
`cli.as_json`, and the error printer (agent.cli.main) knows the output format too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agent.cli.errors import CliError

if TYPE_CHECKING:
    from agent.config import Config

CONFIG_ENV = "CARD_AGENT_CONFIG"


@dataclass
class CliContext:
    config_path: Path | None = None
    as_json: bool = False
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        """The configuration (file + environment + defaults), loaded on first use."""
        if self._config is None:
            from agent.config import ConfigError, load_config

            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise CliError("config_invalid", str(exc)) from None
        return self._config

    @property
    def config_source(self) -> str:
        return str(self.config_path) if self.config_path else "defaults + environment"

    def emit(self, data: Any) -> None:
        """`data` as JSON on stdout."""
        click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(CliContext).config_path = value


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(CliContext).as_json = True


config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=CONFIG_ENV,
    expose_value=False,
    callback=_remember_config,
    help=f"TOML configuration file [env {CONFIG_ENV}; default: built-in defaults "
    "+ CARD_AGENT_* environment].",
)
json_option = click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    callback=_remember_json,
    help='Print JSON on stdout (errors too, as {"error": {...}}).',
)
pin_stdin_option = click.option(
    "--pin-stdin",
    is_flag=True,
    help="Read the PIN(s) from stdin, one per line, instead of prompting.",
)
confirm_final_try_option = click.option(
    "--confirm-final-try",
    is_flag=True,
    help="Allow using one of the last security.pin_floor tries.",
)

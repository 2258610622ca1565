"""The `card-agent` command line.

Exit codes, for every command: 0 success; 1 the operation failed (the message says
why; with --json the error is printed as {"error": {"code", "message"}} on stdout);
2 usage error (unknown option, missing argument). `selftest` uses 0 all passed,
1 warnings only, 2 a check failed; `audit verify` 0 valid, 1 not.

Card commands (`readers`, `card info`, `pin ...`, `selftest`) go through the running
agent when it answers on its port (it owns the reader exclusively), else through a card
service of their own process (agent.cli.card_access). PINs are read from a prompt
without echo, or from stdin with --pin-stdin; never from the command line, where every
user could read them in the process list.

One module per command group; this one registers them and is the one place that turns
a failure into output (`CliError`, agent.cli.errors). Heavy imports (the runtime,
fastapi, uvicorn, pydantic, aiomqtt, pyscard) happen inside the commands, so
`card-agent --help` loads click and the standard library only, and a command whose
extra is not installed says which one to install.
"""

from __future__ import annotations

from typing import Any

import click

from agent import __version__
from agent.cli.audit import audit_group
from agent.cli.card import card_group
from agent.cli.config import config_group
from agent.cli.context import CliContext
from agent.cli.demo import demo
from agent.cli.errors import CliError, cli_error_for
from agent.cli.pair import pair_group
from agent.cli.pin import pin_group
from agent.cli.readers import readers
from agent.cli.selftest import selftest
from agent.cli.serve import serve

__all__ = ["CliContext", "CliError", "main"]


class CardAgentGroup(click.Group):
    """The root group: one `CliContext` per invocation, and every failure a command
    lets through printed once, the same way."""

    def invoke(self, ctx: click.Context) -> Any:
        cli = ctx.ensure_object(CliContext)  # before any subcommand: they share it
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise  # click's own: exit codes, usage errors (2), ^C
        except Exception as exc:
            error = cli_error_for(exc)
            if error is None:
                raise  # a bug: the traceback is the report
            _print_error(error, as_json=cli.as_json)
            ctx.exit(1)


def _print_error(error: CliError, *, as_json: bool) -> None:
    if as_json:
        import json

        click.echo(json.dumps(error.as_json(), ensure_ascii=False))
    else:
        # The code ends the first line; a multi-line message (every problem of an
        # invalid configuration) follows under it.
        first, _, rest = error.message.partition("\n")
        click.echo(f"error: {first} ({error.code})" + (f"\n{rest}" if rest else ""), err=True)


@click.group(cls=CardAgentGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="card-agent")
def main() -> None:
    """Kiosk card agent: owns the E-Port card reader and signs for the browser.

    \b
    Exit codes: 0 success, 1 failure, 2 usage error.
    selftest: 0 all passed, 1 warnings, 2 failures.
    Card commands use the running agent's API when it answers, else the card directly.
    """


def _register() -> None:
    from practice.cli import practice_command  # the practice Single Window (training)

    for command in (
        serve,
        demo,
        selftest,
        readers,
        card_group,
        pin_group,
        pair_group,
        audit_group,
        config_group,
        practice_command,
    ):
        main.add_command(command)


_register()

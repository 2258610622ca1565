"""card-agent(1), written from the CLI's own --help texts (click), to stdout.

    python packaging/deb/manpage.py > card-agent.1

Every command and subcommand gets its usage line, its help and its options, in the
order `card-agent --help` lists them, so the manual cannot drift from the program. The
date is $SOURCE_DATE_EPOCH's (reproducible builds).
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import click

from agent import __version__
from agent.cli import main as cli_main

PROG = "card-agent"

FILES = (
    ("/etc/card-agent/config.toml", "The configuration (a conffile: edits survive upgrades)."),
    (
        "/var/lib/card-agent/",
        "State: audit.log, pairing.json, cli-token.<uid>.json. Removed only on purge.",
    ),
    ("/lib/systemd/system/card-agent.service", "The service (PC/SC reader)."),
    ("/lib/systemd/system/card-agent-demo.service", "The same on the simulated card."),
    ("/opt/card-agent/share/examples/", "Example configuration and drop-ins."),
    ("/usr/share/doc/card-agent/operations.md.gz", "Operating the agent on a kiosk."),
)


def roff_text(text: str) -> str:
    """Escape for roff: backslashes, and control characters at a line's start."""
    out = []
    for line in text.replace("\\", "\\e").splitlines():
        if line.startswith((".", "'")):
            line = "\\&" + line
        out.append(line)
    return "\n".join(out)


def paragraphs(help_text: str) -> str:
    """click help -> roff paragraphs; click's \\b marks a block kept as written."""
    blocks = inspect.cleandoc(help_text).split("\n\n")
    out = []
    for block in blocks:
        if block.startswith("\b\n"):
            out.append(".nf\n" + roff_text(block[2:]) + "\n.fi")
        else:
            out.append(roff_text(" ".join(block.split())))
    return "\n.PP\n".join(out)


def option_items(command: click.Command, ctx: click.Context) -> Iterator[str]:
    for param in command.get_params(ctx):
        if "--help" in getattr(param, "opts", ()) and ctx.parent is not None:
            continue  # said once, under OPTIONS
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        item = f".TP\n.B {roff_text(names).replace('-', chr(92) + '-')}"
        yield f"{item}\n{roff_text(help_text)}" if help_text else item


def command_sections(command: click.Command, ctx: click.Context) -> Iterator[str]:
    if ctx.parent is not None:  # the top level is NAME/SYNOPSIS/DESCRIPTION
        usage = " ".join(command.collect_usage_pieces(ctx))
        yield f'.SS "{ctx.command_path} {roff_text(usage)}"'
        if command.help:
            yield paragraphs(command.help)
        yield from option_items(command, ctx)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            with click.Context(sub, info_name=name, parent=ctx) as sub_ctx:
                yield from command_sections(sub, sub_ctx)


def manual() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    date = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")
    with click.Context(cli_main, info_name=PROG) as ctx:
        summary = (cli_main.help or "").strip().splitlines()[0].rstrip(".")
        lines = [
            f'.TH CARD-AGENT 1 "{date}" "{PROG} {__version__}" "User Commands"',
            ".SH NAME",
            f"{PROG} \\- {roff_text(summary[0].lower() + summary[1:])}",
            ".SH SYNOPSIS",
            f".B {PROG}\n[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
            ".SH DESCRIPTION",
            paragraphs(cli_main.help or ""),
            ".SH OPTIONS",
            *option_items(cli_main, ctx),
            ".SH COMMANDS",
            *command_sections(cli_main, ctx),
        ]
    lines.append(".SH FILES")
    for path, what in FILES:
        lines.append(f".TP\n.I {path}\n{roff_text(what)}")
    lines += [
        ".SH ENVIRONMENT",
        ".TP\n.B CARD_AGENT_CONFIG\nThe configuration file "
        "(/usr/bin/card-agent defaults it to /etc/card-agent/config.toml).",
        ".TP\n.B CARD_AGENT_\\fISECTION\\fB__\\fIKEY\\fR\nOverrides one configuration key.",
        ".SH SEE ALSO",
        ".BR systemctl (1),\n.BR journalctl (1),\n.BR pcscd (8)",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(manual())

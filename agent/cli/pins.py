"""PINs for the CLI: from a prompt without echo, or from stdin lines (--pin-stdin).

Never from the command line, where every user could read them in the process list.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click


def read_pins(labels: Sequence[str], *, from_stdin: bool, confirm_last: bool = False) -> list[str]:
    """One PIN per label: from stdin lines (--pin-stdin) or prompts without echo."""
    stdin = sys.stdin
    pins: list[str] = []
    if from_stdin:
        for label in labels:
            line = stdin.readline()
            if not line:
                raise click.UsageError(f"--pin-stdin: no line for the {label} on stdin")
            pins.append(line.rstrip("\r\n"))
        return pins
    if not stdin.isatty():
        raise click.UsageError("no terminal to ask for the PIN: pipe it with --pin-stdin")
    for i, label in enumerate(labels):
        last = i == len(labels) - 1
        pins.append(
            click.prompt(
                label,
                hide_input=True,
                confirmation_prompt=confirm_last and last,
                err=True,
            )
        )
    return pins

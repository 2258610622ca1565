"""`card-agent demo`: the simulated card end to end, without an agent."""

from __future__ import annotations

import click


@click.command()
@click.option("--profile", default="legal-person-sm2", show_default=True, help="simulated card")
@click.option("--message", default="单一窗口 小微政策保单 确认投保", show_default=True)
@click.pass_context
def demo(ctx: click.Context, profile: str, message: str) -> None:
    """Open a simulated card, read it, verify the PIN, sign and check the signature."""
    from simulator.demo import run_demo

    ctx.exit(0 if run_demo(profile, message) else 1)

"""`card-sim`: look at the simulator's card profiles and export its test CA.

Never prints a PIN or an unblock code: only retry counters.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from card.crypto.certs import CertificateInfo, parse_certificate
from card.eport.driver import CardType
from simulator.ca import TestCA
from simulator.profiles import PROFILES, Algorithm, CardProfile, get_profile
from simulator.state import CardFactory, CardState, StateStore

_CARD_TYPE_LABEL = {
    CardType.LEGAL_PERSON: "legal-person (法人卡)",
    CardType.OPERATOR: "operator (操作员卡)",
}


def _profile(name: str) -> CardProfile:
    try:
        return get_profile(name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="PROFILE") from None


def _load_state(path: Path) -> CardState:
    try:
        state = StateStore(path).load()
    except (OSError, ValueError, KeyError) as exc:
        raise click.ClickException(f"cannot read card state {path}: {exc}") from None
    if state is None:
        raise click.ClickException(f"no card state file at {path}")
    return state


def _cert_summary(der: bytes, now: datetime) -> dict[str, Any]:
    info: CertificateInfo = parse_certificate(der)
    return {
        "serial": info.serial_hex,
        "subject_cn": info.subject_cn,
        "subject_ou": info.subject_ou,
        "subject_o": info.subject_o,
        "issuer_cn": info.issuer_cn,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "days_left": round((info.not_after - now).total_seconds() / 86400, 1),
        "key": f"{info.key_algorithm}-{info.key_bits}",
        "signature_algorithm": info.signature_algorithm_oid,
    }


def _describe(profile: CardProfile, state: CardState) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "profile": profile.name,
        "description": profile.description,
        "card_type": _CARD_TYPE_LABEL[state.card_type],
        "card_number": state.card_number,
        "holder_name": state.holder_name,
        "company_name": state.company_name,
        "uscc": state.uscc,
        "enterprise_code": state.enterprise_code,
        "algorithm": f"{state.algorithm}-{state.key_bits}",
        "pin": {
            "tries_left": state.pin.tries_left,
            "max_tries": state.pin.max_tries,
            "blocked": state.pin.blocked,
        },
        "unblock_code": {
            "tries_left": state.unblock.tries_left,
            "max_tries": state.unblock.max_tries,
            "blocked": state.unblock.blocked,
        },
        "signing_certificate": _cert_summary(state.sign_cert, now),
        "encryption_certificate": _cert_summary(state.enc_cert, now),
    }


@click.group()
def main() -> None:
    """Software E-Port card (docs/card-profile.md) for development and tests."""


@main.command("profiles")
def profiles_command() -> None:
    """List the card profiles."""
    width = max(len(name) for name in PROFILES)
    for prof in PROFILES.values():
        alg = f"{prof.algorithm}-{prof.key_bits}"
        click.echo(f"{prof.name:<{width}}  {alg:<9}  {prof.description}")


@main.command()
@click.argument("profile")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Show this persisted card (PIN counters as they stand) instead of a fresh one.",
)
def show(profile: str, as_json: bool, state_path: Path | None) -> None:
    """Describe a card of PROFILE: holder, company, certificates, PIN counter."""
    prof = _profile(profile)
    if state_path is not None:
        state = _load_state(state_path)
        if state.profile != prof.name:
            raise click.ClickException(f"{state_path} holds a {state.profile!r} card")
    else:
        state = CardFactory().make_state(prof)
    info = _describe(prof, state)
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return
    for key, value in info.items():
        if isinstance(value, dict):
            click.echo(f"{key}:")
            for sub_key, sub_value in value.items():
                click.echo(f"  {sub_key}: {sub_value}")
        else:
            click.echo(f"{key}: {value}")


@main.command("export-ca")
@click.option(
    "--algorithm",
    type=click.Choice(["SM2", "RSA"], case_sensitive=False),
    default="SM2",
    show_default=True,
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Card state file whose issuing CA to export.",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Where to write the PEM certificate ('-' for stdout).",
)
def export_ca(algorithm: str, state_path: Path | None, output: Path) -> None:
    """Write the test CA certificate (PEM), e.g. to trust in a verifier under test."""
    alg: Algorithm = "SM2" if algorithm.upper() == "SM2" else "RSA"
    if state_path is not None:
        ca = _load_state(state_path).ca(alg)
        if ca is None:
            raise click.ClickException(f"{state_path} holds no {alg} CA")
    else:
        # Every world makes its own CA: without a state file this one matches no card.
        click.echo(
            f"warning: no --state given; this is a new {alg} CA that issued no card",
            err=True,
        )
        ca = TestCA.create(alg)
    pem = ca.certificate_pem
    if str(output) == "-":
        sys.stdout.write(pem)
    else:
        output.write_text(pem, encoding="ascii")
        click.echo(f"wrote {alg} CA certificate to {output}", err=True)


@main.command()
@click.argument("profile", default="legal-person-sm2")
@click.option("--message", default="单一窗口 小微政策保单 确认投保", show_default=True)
def demo(profile: str, message: str) -> None:
    """Open PROFILE in-process, read it, verify the PIN, sign and check the signature."""
    from simulator.demo import run_demo

    _profile(profile)  # a clear error for an unknown name
    sys.exit(0 if run_demo(profile, message) else 1)


@main.command()
@click.argument("profile", default="legal-person-sm2")
@click.option(
    "--slot", default=0, show_default=True, help="vpcd reader slot (0 = Virtual PCD 00 00)."
)
@click.option("--port", type=int, default=None, help="vpcd port (default 35963 + slot).")
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Persist the card (keys, PIN counters) in this file.",
)
@click.option(
    "--timing",
    type=click.Choice(["instant", "realistic"]),
    default="instant",
    show_default=True,
    help="The card's timing model.",
)
@click.option("--removed", is_flag=True, help="Start with the card out of the reader.")
def vpcd(
    profile: str, slot: int, port: int | None, state_path: Path | None, timing: str, removed: bool
) -> None:
    """Put PROFILE into a vpcd reader behind the real pcscd.

    Reads commands from standard input: `insert`, `remove`, `status`, `quit`.
    SIGUSR1 removes the card, SIGUSR2 inserts it (for scripts). Never use vpcd on a
    production kiosk: anyone who reaches its port can insert a card.
    """
    import signal
    import threading

    from simulator.card_os import SimulatedCard
    from simulator.knobs import CardKnobs, TimingModel
    from simulator.vpcd import VPCD_PORT, VpcdLink

    _profile(profile)
    model = TimingModel.REALISTIC if timing == "realistic" else TimingModel.INSTANT
    card = SimulatedCard.create(profile, knobs=CardKnobs(timing=model), state_path=state_path)
    vpcd_port = port if port is not None else VPCD_PORT + slot
    link = VpcdLink(card, port=vpcd_port)
    link.start(inserted=not removed)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGUSR1:
            link.remove()
        elif signum == signal.SIGUSR2:
            link.insert()
        else:
            stop.set()

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    click.echo(
        f"card {profile} on vpcd port {vpcd_port}; commands: insert, remove, status, quit", err=True
    )

    def read_commands() -> None:
        for line in sys.stdin:
            command = line.strip().lower()
            if command == "insert":
                link.insert()
            elif command == "remove":
                link.remove()
            elif command == "status":
                click.echo(
                    json.dumps(
                        {
                            "inserted": link.inserted,
                            "connected": link.connected,
                            "apdus": link.apdus_handled,
                        }
                    )
                )
            elif command in ("quit", "exit"):
                stop.set()
                return
            elif command:
                click.echo(f"unknown command {command!r}", err=True)
        # End of input (e.g. started with </dev/null): keep serving until a signal.

    threading.Thread(target=read_commands, name="card-sim-stdin", daemon=True).start()
    try:
        stop.wait()
    finally:
        link.stop()


if __name__ == "__main__":
    main()

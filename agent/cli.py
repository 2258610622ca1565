"""The `card-agent` command line.

Exit codes, for every command: 0 success; 1 the operation failed (the message says
why; with --json the error is printed as {"error": {"code", "message"}} on stdout);
2 usage error (unknown option, missing argument). `selftest` uses 0 all passed,
1 warnings only, 2 a check failed; `audit verify` 0 valid, 1 not.

Card commands (`readers`, `card info`, `pin ...`) go through the running agent when
it answers on its port (it owns the reader exclusively), else open the card directly.
PINs are read from a prompt without echo, or from stdin with --pin-stdin; never from
the command line, where every user could read them in the process list.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from agent import __version__
from agent.config import Config, ConfigError, load_config
from agent.pairing import PairingError, PairingStore
from card.crypto.certs import certificate_summary

T = TypeVar("T")

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CARD_AGENT_CONFIG",
    help="TOML configuration file [env CARD_AGENT_CONFIG; default: built-in defaults "
    "+ CARD_AGENT_* environment].",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
PIN_STDIN_OPTION = click.option(
    "--pin-stdin",
    is_flag=True,
    help="Read the PIN(s) from stdin, one per line, instead of prompting.",
)
CONFIRM_OPTION = click.option(
    "--confirm-final-try",
    is_flag=True,
    help="Allow using one of the last security.pin_floor tries.",
)

SECRET_NAME = re.compile(r"password|secret|token|key", re.IGNORECASE)
REDACTED = "********"


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _fail(
    code: str, message: str, as_json: bool, details: dict[str, Any] | None = None
) -> NoReturn:
    if as_json:
        error: dict[str, Any] = {"code": code, "message": message}
        if details:
            error["details"] = details
        click.echo(json.dumps({"error": error}, ensure_ascii=False))
    else:
        click.echo(f"error: {message} ({code})", err=True)
    sys.exit(1)


def _emit(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# --- PINs ---------------------------------------------------------------------------------


def _read_pins(labels: Sequence[str], *, from_stdin: bool, confirm_last: bool = False) -> list[str]:
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


# --- the card, through the agent or directly --------------------------------------------


def _run_card(config: Config, as_json: bool, fn: Callable[[Any], Awaitable[T]]) -> T:
    from agent.cli_client import CardCommandError, open_card

    async def main() -> T:
        async with open_card(config) as access:
            where = (
                f"through the running agent on {config.server.host}:{config.server.port}"
                if access.mode == "agent"
                else f"agent not running: opening the card directly ({config.card.backend})"
            )
            click.echo(f"({where})", err=True)
            return await fn(access)

    try:
        return asyncio.run(main())
    except CardCommandError as exc:
        _fail(exc.code, exc.message, as_json, exc.details)
    except PairingError as exc:
        _fail("pairing_error", f"{exc} ({exc.code})", as_json)
    except PermissionError as exc:
        _fail(
            "permission_denied",
            f"{exc.filename}: permission denied; run as root or as the card-agent user",
            as_json,
        )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="card-agent")
def main() -> None:
    """Kiosk card agent: owns the E-Port card reader and signs for the browser.

    \b
    Exit codes: 0 success, 1 failure, 2 usage error.
    selftest: 0 all passed, 1 warnings, 2 failures.
    Card commands use the running agent's API when it answers, else the card directly.
    """


# --- serve ---------------------------------------------------------------------------------


@main.command()
@CONFIG_OPTION
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def serve(config_path: Path | None, log_level: str) -> None:
    """Run the localhost API (under systemd: Type=notify with a watchdog)."""
    import asyncio

    import uvicorn

    from agent.audit import AuditLogError
    from agent.listener import (
        ListenerLimits,
        effective_max_connections,
        raise_open_files_limit,
        server_config,
        throttle_accept_errors,
    )
    from agent.notify import SystemdNotifier
    from agent.runtime import build_runtime

    config = _load(config_path)
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    open_files = raise_open_files_limit()
    try:
        runtime = build_runtime(config)
    except AuditLogError as exc:
        # An operator's problem, not a crash: say what and how, in one line.
        _fail("audit_log", f"cannot open the audit log: {exc}", as_json=False)
    notifier = next((c for c in runtime.components if isinstance(c, SystemdNotifier)), None)
    limits = ListenerLimits(
        request_timeout_s=config.server.request_timeout_s,
        keepalive_timeout_s=config.server.keepalive_timeout_s,
        max_connections=effective_max_connections(config.server.max_connections, open_files),
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            throttle_accept_errors(asyncio.get_running_loop())
            await super().startup(sockets)
            # Only here are the listening sockets bound (the lifespan ran before).
            if self.started and not self.should_exit and notifier is not None:
                await notifier.ready()

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            if notifier is not None:
                notifier.stopping()
            await super().shutdown(sockets)

    server = Server(
        server_config(
            runtime.app,
            limits,
            host=config.server.host,
            port=config.server.port,
            log_level=log_level,
        )
    )
    click.echo(
        f"card-agent {__version__}: {config.card.backend} card, "
        f"http://{config.server.host}:{config.server.port}/v1/status",
        err=True,
    )
    server.run()
    sys.exit(0 if server.started else 1)


@main.command()
@click.option("--profile", default="legal-person-sm2", show_default=True, help="simulated card")
@click.option("--message", default="单一窗口 小微政策保单 确认投保", show_default=True)
def demo(profile: str, message: str) -> None:
    """Open a simulated card, read it, verify the PIN, sign and check the signature."""
    from simulator.demo import run_demo

    sys.exit(0 if run_demo(profile, message) else 1)


# --- selftest ------------------------------------------------------------------------------


def _split_skip(values: Sequence[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@main.command()
@CONFIG_OPTION
@JSON_OPTION
@click.option(
    "--sign", "do_sign", is_flag=True, help="Also verify the PIN and sign a test message."
)
@PIN_STDIN_OPTION
@CONFIRM_OPTION
@click.option(
    "--skip",
    multiple=True,
    metavar="CHECK[,CHECK]",
    help="Checks to skip (e.g. api before the service is started).",
)
def selftest(
    config_path: Path | None,
    as_json: bool,
    do_sign: bool,
    pin_stdin: bool,
    confirm_final_try: bool,
    skip: tuple[str, ...],
) -> None:
    """Check that this kiosk can sign: configuration, pcscd, reader, card, certificate,
    PIN, the agent's API, the broker, the clock.

    \b
    Checks: config pcscd reader virtual_reader card card_info certificate chain
            expiry pin sign api compat mqtt clock
    Exit code: 0 all passed, 1 warnings only, 2 a check failed.
    """
    from agent.selftest import CHECK_IDS, format_table, invalid_config_report, run_selftest

    skipped = _split_skip(skip)
    unknown = sorted(set(skipped) - set(CHECK_IDS))
    if unknown:
        raise click.UsageError(f"unknown check(s) for --skip: {', '.join(unknown)}")
    pin = _read_pins(["PIN"], from_stdin=pin_stdin)[0] if do_sign else None
    live = sys.stderr.isatty()

    def progress(index: int, total: int, check_id: str, check: Any) -> None:
        if check is None:
            if live:
                click.echo(f"\r[{index:2}/{total}] {check_id} ...\033[K", err=True, nl=False)
            return
        line = f"[{index:2}/{total}] {check_id}: {check.status}"
        click.echo(f"\r{line}\033[K" if live else line, err=True, nl=not live)

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        report = invalid_config_report(str(exc))
    else:
        report = asyncio.run(
            run_selftest(
                config,
                sign=do_sign,
                pin=pin,
                confirm_final_try=confirm_final_try,
                skip=skipped,
                progress=progress,
                config_source=str(config_path) if config_path else "defaults + environment",
            )
        )
    if live:
        click.echo("\r\033[K", err=True, nl=False)
    if as_json:
        _emit(report)
    else:
        click.echo(format_table(report))
    sys.exit(report["exit_code"])


# --- readers, card, pin --------------------------------------------------------------------


@main.command()
@CONFIG_OPTION
@JSON_OPTION
def readers(config_path: Path | None, as_json: bool) -> None:
    """The card readers, whether a card is in each, and its ATR."""
    from agent.backend import reader_regex
    from agent.cli_client import AgentClient, CardCommandError, adopt_state_files, pcsc_readers
    from card.eport.atr import describe_atr
    from card.errors import CardError

    config = _load(config_path)
    rows: list[dict[str, Any]] = []
    if config.card.backend == "pcsc":
        try:
            found = pcsc_readers()
        except ImportError:
            _fail("pyscard_missing", "pyscard is not installed", as_json)
        except CardError as exc:
            _fail("reader_service_down", f"pcscd: {exc}", as_json)
        pattern = reader_regex(config.card.reader)
        for r in found:
            rows.append(
                {
                    "name": r.name,
                    "card_present": r.card_present,
                    "atr": r.atr.hex().upper() if r.atr else None,
                    "card": describe_atr(r.atr) if r.atr else None,
                    "selected_by_config": pattern is None or bool(pattern.search(r.name or "")),
                }
            )
    else:
        try:
            status = AgentClient.from_config(config).probe()
        except CardCommandError as exc:
            _fail(exc.code, exc.message, as_json)
        if status is not None:
            if status.get("reader_present"):
                rows.append(
                    {
                        "name": "simulated reader (in the running agent)",
                        "card_present": bool(status.get("card_present")),
                        "atr": None,
                        "card": None,
                        "selected_by_config": True,
                    }
                )
        else:
            from agent.backend import SimulatedBackend
            from agent.runtime import build_backend

            backend = build_backend(config)
            assert isinstance(backend, SimulatedBackend)
            atr = backend.card.atr
            rows.append(
                {
                    "name": backend.reader_name,
                    "card_present": backend.card_present,
                    "atr": atr.hex().upper(),
                    "card": describe_atr(atr),
                    "selected_by_config": True,
                }
            )
            backend.close()
            adopt_state_files(config.paths.state_dir)
    if as_json:
        _emit(rows)
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


@main.group("card")
def card_group() -> None:
    """Read the E-Port card."""


@card_group.command("info")
@CONFIG_OPTION
@JSON_OPTION
def card_info(config_path: Path | None, as_json: bool) -> None:
    """Card number, holder, company and the certificates."""
    config = _load(config_path)

    async def read(access: Any) -> tuple[Any, Any]:
        return await access.card_info(), await access.certificates()

    info, certs = _run_card(config, as_json, read)
    data = {
        "card": {
            "card_number": info.card_number,
            "holder_name": info.holder_name,
            "company_name": info.company_name,
            "uscc": info.uscc,
            "card_type": info.card_type.value,
            "enterprise_code": info.enterprise_code,
        },
        "certificates": {
            slot.value: certificate_summary(c, datetime.now(UTC)) for slot, c in certs.items()
        },
    }
    if as_json:
        _emit(data)
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


@main.group("pin")
def pin_group() -> None:
    """The card's PIN: tries left, change."""


@pin_group.command("status")
@CONFIG_OPTION
@JSON_OPTION
def pin_status(config_path: Path | None, as_json: bool) -> None:
    """Tries left, blocked, verified. Spends no try."""
    config = _load(config_path)

    async def read(access: Any) -> Any:
        return await access.pin_status()

    st = _run_card(config, as_json, read)
    data = {"tries_left": st.tries_left, "blocked": st.blocked, "verified": st.verified}
    if as_json:
        _emit(data)
    elif st.blocked:
        click.echo("PIN blocked: the issuer must unblock it")
    elif st.tries_left is None:
        click.echo("PIN verified (a signing session is open)")
    else:
        click.echo(f"{st.tries_left} tries left")


@pin_group.command("change")
@CONFIG_OPTION
@JSON_OPTION
@PIN_STDIN_OPTION
@CONFIRM_OPTION
def pin_change(
    config_path: Path | None, as_json: bool, pin_stdin: bool, confirm_final_try: bool
) -> None:
    """Change the card's PIN (asks for the current and the new PIN, without echo).

    With --pin-stdin: the current PIN on the first line, the new one on the second.
    """
    from card.eport.session import pin_block
    from card.errors import InvalidPinFormat

    config = _load(config_path)
    old_pin, new_pin = _read_pins(
        ["Current PIN", "New PIN"], from_stdin=pin_stdin, confirm_last=True
    )
    try:
        pin_block(new_pin)  # refuse a new PIN no card accepts before spending anything
    except InvalidPinFormat as exc:
        _fail("pin_format", f"new PIN: {exc}", as_json)

    async def change(access: Any) -> None:
        await access.change_pin(old_pin, new_pin, confirm_final_try=confirm_final_try)

    _run_card(config, as_json, change)
    if as_json:
        _emit({"changed": True})
    else:
        click.echo("PIN changed")


# --- pairing -------------------------------------------------------------------------------


@main.group()
def pair() -> None:
    """Pair, approve, list and revoke clients (run on the kiosk)."""


def _pairing(config: Config) -> PairingStore:
    from agent.runtime import pairing_path, state_dir

    state_dir(config)
    return PairingStore(pairing_path(config))


def _store_call(as_json: bool, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except PairingError as exc:
        _fail("pairing_error", f"{exc}", as_json, {"reason": exc.code})
    except PermissionError as exc:
        _fail(
            "permission_denied",
            f"{exc.filename}: permission denied; run as root or as the card-agent user",
            as_json,
        )


@pair.command("request")
@CONFIG_OPTION
@JSON_OPTION
@click.option("--name", "name", required=True, help="Client name shown to the operator.")
@click.option("--origin", default=None, help="Bind to this origin (must be allowed).")
def pair_request(config_path: Path | None, as_json: bool, name: str, origin: str | None) -> None:
    """Ask to pair a client: prints the code to approve and the request id to claim with.

    The client claims its token with POST /v1/pair/claim {"request_id": ...}, sending
    the same Origin (none for a local tool).
    """
    config = _load(config_path)
    if origin is not None and origin not in config.security.allowed_origins:
        _fail("pairing_error", f"origin {origin!r} is not in security.allowed_origins", as_json)
    req = _store_call(as_json, lambda: _pairing(config).request(origin, name))
    data = {
        "code": req.code,
        "request_id": req.request_id,
        "client_name": req.client_name,
        "origin": req.origin,
        "expires_at": req.expires_at,
    }
    if as_json:
        _emit(data)
        return
    click.echo(f"code        {req.code}   (approve: card-agent pair approve {req.code})")
    click.echo(f"request_id  {req.request_id}   (claim with POST /v1/pair/claim)")
    click.echo(f"expires     {_when(req.expires_at)}")


@pair.command("approve")
@CONFIG_OPTION
@JSON_OPTION
@click.argument("code")
def pair_approve(config_path: Path | None, as_json: bool, code: str) -> None:
    """Approve the pairing CODE shown by the client."""
    config = _load(config_path)
    req = _store_call(as_json, lambda: _pairing(config).approve(code))
    if as_json:
        _emit({"approved": True, "client_name": req.client_name, "origin": req.origin})
    else:
        click.echo(f"approved {req.client_name!r} from {req.origin or 'a local tool'}")


@pair.command("pending")
@CONFIG_OPTION
@JSON_OPTION
def pair_pending(config_path: Path | None, as_json: bool) -> None:
    """Pairing requests waiting for approval."""
    config = _load(config_path)
    reqs = _store_call(as_json, lambda: _pairing(config).pending())
    if as_json:
        _emit(
            [
                {
                    "code": r.code,
                    "client_name": r.client_name,
                    "origin": r.origin,
                    "expires_at": r.expires_at,
                }
                for r in reqs
            ]
        )
        return
    if not reqs:
        click.echo("no pending requests")
    for r in reqs:
        click.echo(
            f"{r.code}  {r.client_name}  {r.origin or '(local)'}  until {_when(r.expires_at)}"
        )


@pair.command("list")
@CONFIG_OPTION
@JSON_OPTION
def pair_list(config_path: Path | None, as_json: bool) -> None:
    """Paired clients."""
    config = _load(config_path)
    clients = _store_call(as_json, lambda: _pairing(config).list_clients())
    if as_json:
        _emit(
            [
                {
                    "client_id": c.client_id,
                    "client_name": c.client_name,
                    "origin": c.origin,
                    "created_at": c.created_at,
                    "last_used_at": c.last_used_at,
                }
                for c in clients
            ]
        )
        return
    if not clients:
        click.echo("no paired clients")
    for c in clients:
        click.echo(
            f"{c.client_id}  {c.client_name}  {c.origin or '(local)'}  "
            f"paired {_when(c.created_at)}  last used {_when(c.last_used_at)}"
        )


@pair.command("revoke")
@CONFIG_OPTION
@JSON_OPTION
@click.argument("client_id")
def pair_revoke(config_path: Path | None, as_json: bool, client_id: str) -> None:
    """Revoke a paired client's token (applies on its next request)."""
    config = _load(config_path)
    if not _store_call(as_json, lambda: _pairing(config).revoke(client_id)):
        _fail("not_found", f"no paired client {client_id}", as_json)
    if as_json:
        _emit({"revoked": client_id})
    else:
        click.echo(f"revoked {client_id}")


@pair.command("local")
@CONFIG_OPTION
@JSON_OPTION
def pair_local(config_path: Path | None, as_json: bool) -> None:
    """Pair this CLI as a local tool and keep its token in the state directory (0600).

    Card commands do this on their own when the agent runs; use this to renew the
    CLI's token (the previous one is revoked).
    """
    from agent.cli_client import client_name, self_pair, token_path

    config = _load(config_path)
    client_id, _token = _store_call(as_json, lambda: self_pair(config))
    path = token_path(config)
    if as_json:
        _emit({"client_id": client_id, "client_name": client_name(), "token_file": str(path)})
    else:
        click.echo(f"paired {client_id} ({client_name()}); token stored in {path} (0600)")


# --- audit ---------------------------------------------------------------------------------


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@CONFIG_OPTION
@click.option("--path", "log_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--anchor",
    metavar="SEQ:SHA256",
    help="an anchor kept elsewhere (telemetry, an earlier `audit verify`): detects an "
    "edited newest record or cut-off records",
)
@JSON_OPTION
def audit_verify(
    config_path: Path | None, log_path: Path | None, anchor: str | None, as_json: bool
) -> None:
    """Check the hash chain; report the first bad record. Exit 0 valid, 1 not.

    Prints the anchor (seq and SHA-256 of the newest record) to keep elsewhere, and the
    signature requests whose outcome record is missing (a crash between the card's
    answer and the outcome's write; the request record names what was asked).
    """
    from agent.audit import verify_audit_log
    from agent.runtime import audit_path

    parsed: tuple[int, str] | None = None
    if anchor is not None:
        seq_text, _, digest = anchor.partition(":")
        if not seq_text.isdigit() or len(digest) != 64:
            raise click.BadParameter("expected SEQ:SHA256", param_hint="--anchor")
        parsed = (int(seq_text), digest.lower())
    path = log_path or audit_path(_load(config_path))
    result = verify_audit_log(path, parsed)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "ok": result.ok,
                    "records": result.records,
                    "first_bad_line": result.first_bad_line,
                    "reason": result.reason,
                    "torn_tail": result.torn_tail,
                    "anchor": f"{result.last_seq}:{result.last_sha256}"
                    if result.first_bad_line is None
                    else None,
                    "anchor_ok": result.anchor_ok,
                    "anchor_reason": result.anchor_reason,
                    "requests_without_outcome": result.requests_without_outcome,
                    "request_ids_without_outcome": list(result.request_ids_without_outcome),
                }
            )
        )
        sys.exit(0 if result.ok else 1)
    if result.first_bad_line is not None:
        click.echo(f"{path}: INVALID at line {result.first_bad_line}: {result.reason}")
    else:
        click.echo(f"{path}: {result.records} records, chain valid")
        click.echo(f"anchor: {result.last_seq}:{result.last_sha256}")
    if result.anchor_ok is True:
        click.echo("anchor matches")
    elif result.anchor_ok is False:
        click.echo(f"ANCHOR MISMATCH: {result.anchor_reason}")
    if result.requests_without_outcome:
        ids = ", ".join(result.request_ids_without_outcome)
        click.echo(
            f"{result.requests_without_outcome} signature request(s) without an outcome "
            f"record (the agent stopped before writing it): {ids}"
        )
    sys.exit(0 if result.ok else 1)


# --- config --------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Show or check the configuration."""


def redact(value: Any, name: str = "") -> Any:
    """Replace every value whose field name looks secret (password, secret, token, key)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if SECRET_NAME.search(name) and value not in (None, "", [], ()):
        return REDACTED
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def to_toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        if not isinstance(values, dict):
            lines.append(f"{section} = {_toml_value(values)}")
            continue
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                lines.append(f"# {key} (unset)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


@config_group.command("show")
@CONFIG_OPTION
@JSON_OPTION
def config_show(config_path: Path | None, as_json: bool) -> None:
    """The effective configuration (file + environment + defaults), secrets redacted."""
    data = redact(_load(config_path).model_dump(mode="json"))
    if as_json:
        _emit(data)
    else:
        click.echo(to_toml(data), nl=False)


def config_problems(config: Config) -> list[str]:
    """Warnings about a valid configuration (things selftest would also flag)."""
    from agent.selftest import load_pem_bundle

    warnings: list[str] = []
    bundle = config.card.ca_bundle
    if bundle is not None:
        try:
            if not load_pem_bundle(bundle):
                warnings.append(f"card.ca_bundle {bundle}: no certificate in it")
        except Exception as exc:
            warnings.append(f"card.ca_bundle {bundle}: {exc}")
    elif config.card.backend == "pcsc":
        warnings.append("card.ca_bundle unset: the card's certificate chain is not checked")
    if not config.security.allowed_origins:
        warnings.append("security.allowed_origins is empty: no browser extension can pair")
    if config.card.demo and config.card.backend == "pcsc":
        warnings.append("card.demo is set: virtual readers are accepted (never on production)")
    if not config.paths.state_dir.is_absolute():
        warnings.append(f"paths.state_dir {config.paths.state_dir} is relative to the cwd")
    return warnings


@config_group.command("check")
@CONFIG_OPTION
@JSON_OPTION
def config_check(config_path: Path | None, as_json: bool) -> None:
    """Validate the configuration; exit 1 with the reasons if it is not usable."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        if as_json:
            _emit({"valid": False, "errors": str(exc).splitlines(), "warnings": []})
        else:
            click.echo(str(exc), err=True)
        sys.exit(1)
    warnings = config_problems(config)
    if as_json:
        _emit({"valid": True, "errors": [], "warnings": warnings})
        return
    click.echo("configuration valid")
    for warning in warnings:
        click.echo(f"warning: {warning}")


def _register_practice() -> None:
    # The practice Single Window (training mode) lives in its own package.
    from practice.cli import practice_command

    main.add_command(practice_command)


_register_practice()

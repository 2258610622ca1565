"""The `card-agent` CLI: help and exit codes, JSON output, PINs never from argv, card
commands with and without a running agent, pairing, audit, config."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from agent.cli import main
from agent.cli.config import redact
from tests.ops.conftest import (
    CARD_AGENT,
    ORIGIN,
    PIN,
    AgentProcess,
    clean_env,
    cli,
    report_of,
    start_agent,
    write_config,
)

COMMANDS = {
    "serve",
    "selftest",
    "readers",
    "card",
    "pin",
    "pair",
    "audit",
    "config",
    "demo",
}


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def walk(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in group.commands.items():
        out.append(((*prefix, name), command))
        if isinstance(command, click.Group):
            out += walk(command, (*prefix, name))
    return out


# --- shape -----------------------------------------------------------------------------------


def test_commands_help_and_usage_errors() -> None:
    assert set(main.commands) >= COMMANDS
    result = invoke("--help")
    assert result.exit_code == 0
    assert "Exit codes" in result.output
    for path, command in walk(main):
        help_result = invoke(*path, "--help")
        assert help_result.exit_code == 0, path
        assert command.help, f"{' '.join(path)} has no help text"
    assert invoke("no-such-command").exit_code == 2
    assert invoke("pin", "status", "--no-such-option").exit_code == 2


def test_data_commands_offer_json() -> None:
    data_commands = {
        ("selftest",),
        ("readers",),
        ("card", "info"),
        ("pin", "status"),
        ("pin", "change"),
        ("pair", "list"),
        ("pair", "pending"),
        ("pair", "request"),
        ("pair", "approve"),
        ("pair", "revoke"),
        ("pair", "local"),
        ("audit", "verify"),
        ("config", "show"),
        ("config", "check"),
    }
    commands = dict(walk(main))
    for path in data_commands:
        options = {opt for p in commands[path].params for opt in getattr(p, "opts", [])}
        assert "--json" in options, path


def test_no_command_takes_a_pin_argument() -> None:
    for path, command in walk(main):
        for param in command.params:
            names = " ".join(getattr(param, "opts", [])) + " " + (param.name or "")
            if "pin" in names.lower():
                assert param.name in ("pin_stdin",), (path, param.name)
                assert isinstance(param, click.Option)
                assert param.is_flag, (path, param.name)
    # A PIN on the command line is refused as a usage error, never used.
    result = invoke("pin", "change", "88888888", "12345678")
    assert result.exit_code == 2


# --- PINs come from stdin (or a no-echo prompt) ----------------------------------------------


def test_pin_change_reads_stdin_not_argv(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    result = invoke("pin", "change", "--pin-stdin", "--config", config, input=f"{PIN}\n12345678\n")
    assert result.exit_code == 0, result.output
    assert "PIN changed" in result.stdout
    assert PIN not in result.output
    assert "12345678" not in result.output
    # The new PIN works (selftest --sign), the old one is gone; no try was lost.
    report = json.loads(
        invoke(
            "selftest",
            "--json",
            "--sign",
            "--pin-stdin",
            "--skip",
            "api",
            "--config",
            config,
            input="12345678\n",
        ).stdout
    )
    assert {c["id"]: c["status"] for c in report["checks"]}["sign"] == "pass"
    status = json.loads(invoke("pin", "status", "--json", "--config", config).stdout)
    assert status == {"tries_left": 10, "blocked": False, "verified": False}
    # A wrong current PIN: exit 1, the API's error code, one try spent, nothing echoed.
    wrong = invoke(
        "pin", "change", "--pin-stdin", "--json", "--config", config, input="99999999\n87654321\n"
    )
    assert wrong.exit_code == 1
    error = json.loads(wrong.stdout)["error"]
    assert error["code"] == "pin_incorrect"
    assert error["details"] == {"tries_left": 9}
    assert "99999999" not in wrong.output
    # A new PIN no card accepts is refused before the card is touched.
    short = invoke("pin", "change", "--pin-stdin", "--config", config, input="12345678\n123\n")
    assert short.exit_code == 1
    assert "pin_format" in short.output
    assert (
        json.loads(invoke("pin", "status", "--json", "--config", config).stdout)["tries_left"] == 9
    )
    # Direct mode records the change in the audit log, without the PINs.
    log = (tmp_path / "state" / "audit.log").read_text()
    assert '"event":"pin_change"' in log
    for secret in (PIN, "12345678", "99999999"):
        assert secret not in log


def test_pin_change_without_terminal_needs_pin_stdin(tmp_path: Path) -> None:
    result = invoke("pin", "change", "--config", str(write_config(tmp_path)), input="x\ny\n")
    assert result.exit_code == 2
    assert "--pin-stdin" in result.output


def test_pin_prompt_does_not_echo(tmp_path: Path) -> None:
    """On a real terminal: prompts, no echo, confirmation of the new PIN."""
    config = write_config(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # the child: card-agent on the pty
        os.execve(
            str(CARD_AGENT),
            [str(CARD_AGENT), "pin", "change", "--config", str(config)],
            clean_env(),
        )
    output = b""

    def read_until(marker: bytes, timeout: float = 15) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise AssertionError(f"no {marker!r} in {output!r}")
            try:
                output += os.read(fd, 1024)
            except OSError:
                break

    try:
        read_until(b"Current PIN:")
        os.write(fd, PIN.encode() + b"\r")
        read_until(b"New PIN:")
        os.write(fd, b"24682468\r")
        read_until(b"Repeat for confirmation:")
        os.write(fd, b"24682468\r")
        read_until(b"PIN changed")
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert PIN.encode() not in output
    assert b"24682468" not in output


# --- card commands: directly, then through a running agent ------------------------------------


def test_card_commands_direct_json(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    readers = cli("readers", "--json", config=config)
    assert readers.returncode == 0
    rows = json.loads(readers.stdout)
    assert rows[0]["name"] == "Simulated E-Port Reader 00"
    assert rows[0]["card"] == "card-agent simulated E-Port card"
    info = cli("card", "info", "--json", config=config)
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["card"]["card_number"] == "8900000012345"
    assert data["certificates"]["sign"]["key_algorithm"] == "SM2"
    assert "opening the card directly" in info.stderr
    pin = cli("pin", "status", "--json", config=config)
    assert json.loads(pin.stdout)["tries_left"] == 10


def test_root_leaves_state_files_to_the_service_user(tmp_path: Path) -> None:
    """Root opening the card directly must not leave files the agent cannot open."""
    if os.geteuid() != 0:
        return  # only root can create files for another user
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service user's directory
    result = invoke(
        "selftest",
        "--sign",
        "--pin-stdin",
        "--skip",
        "api",
        "--config",
        str(config),
        input=PIN + "\n",
    )
    assert result.exit_code == 0, result.output
    for name in ("audit.log", "simulated-card.json"):
        assert (state / name).stat().st_uid == 65534, name


def test_card_commands_through_the_agent_pair_themselves(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    config = write_config(tmp_path)
    start_agent(agent_process, config)
    # The agent holds the card: the CLI goes through the API with its own token.
    info = cli("card", "info", "--json", config=config)
    assert info.returncode == 0, info.stderr
    assert "through the running agent" in info.stderr
    assert json.loads(info.stdout)["card"]["holder_name"] == "张伟"
    token_file = next((tmp_path / "state").glob("cli-token.*.json"))
    assert token_file.stat().st_mode & 0o777 == 0o600
    clients = json.loads(invoke("pair", "list", "--json", "--config", str(config)).stdout)
    assert len(clients) == 1
    assert clients[0]["origin"] is None
    assert clients[0]["client_name"].startswith("card-agent CLI")
    # Revoked: the next command pairs again by itself (and the old client stays gone).
    assert invoke("pair", "revoke", clients[0]["client_id"], "--config", str(config)).exit_code == 0
    pin = invoke("pin", "status", "--json", "--config", str(config))
    assert pin.exit_code == 0, pin.output
    assert json.loads(pin.stdout)["tries_left"] == 10
    again = json.loads(invoke("pair", "list", "--json", "--config", str(config)).stdout)
    assert len(again) == 1
    assert again[0]["client_id"] != clients[0]["client_id"]
    # PIN change through the API, from stdin.
    change = cli("pin", "change", "--pin-stdin", config=config, input=f"{PIN}\n13571357\n")
    assert change.returncode == 0, change.stderr
    back = invoke(
        "pin", "change", "--pin-stdin", "--config", str(config), input=f"13571357\n{PIN}\n"
    )
    assert back.exit_code == 0
    readers = json.loads(invoke("readers", "--json", "--config", str(config)).stdout)
    assert readers[0]["card_present"] is True
    # pair local renews the CLI's token, revoking the previous one.
    assert invoke("pair", "local", "--json", "--config", str(config)).exit_code == 0
    assert len(json.loads(invoke("pair", "list", "--json", "--config", str(config)).stdout)) == 1


# --- pairing, audit, config ---------------------------------------------------------------------


def test_pairing_flow_json(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    req = json.loads(
        invoke(
            "pair",
            "request",
            "--name",
            "Extension",
            "--origin",
            ORIGIN,
            "--json",
            "--config",
            config,
        ).stdout
    )
    assert len(req["request_id"]) > 10
    assert req["origin"] == ORIGIN
    pending = json.loads(invoke("pair", "pending", "--json", "--config", config).stdout)
    assert [p["code"] for p in pending] == [req["code"]]
    assert "request_id" not in pending[0]  # the operator never sees the claim secret
    approved = invoke("pair", "approve", req["code"], "--json", "--config", config)
    assert json.loads(approved.stdout)["approved"] is True
    unknown = invoke("pair", "approve", "0000-0000", "--json", "--config", config)
    assert unknown.exit_code == 1
    assert json.loads(unknown.stdout)["error"]["code"] == "pairing_error"
    foreign = invoke(
        "pair", "request", "--name", "x", "--origin", "https://evil.example", "--config", config
    )
    assert foreign.exit_code == 1
    missing = invoke("pair", "revoke", "c-nope", "--json", "--config", config)
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"


def test_audit_verify_exit_codes(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    invoke("pin", "change", "--pin-stdin", "--config", config, input=f"{PIN}\n11223344\n")
    invoke("pin", "change", "--pin-stdin", "--config", config, input=f"11223344\n{PIN}\n")
    ok = invoke("audit", "verify", "--json", "--config", config)
    assert ok.exit_code == 0
    assert json.loads(ok.stdout)["ok"] is True
    log = tmp_path / "state" / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0].replace('"result":"ok"', '"result":"no"') + "".join(lines[1:]))
    bad = invoke("audit", "verify", "--json", "--config", config)
    assert bad.exit_code == 1
    assert json.loads(bad.stdout)["ok"] is False
    assert cli("audit", "verify", config=Path(config)).returncode == 1


def test_config_show_redacts_secrets(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        extra=(
            '[mqtt]\nenabled = true\nkiosk_id = "kiosk-1"\nusername = "kiosk-1"\n'
            'password = "s3cret-broker-pw"\n'
        ),
    )
    shown = cli("config", "show", config=config)
    assert shown.returncode == 0
    assert "s3cret-broker-pw" not in shown.stdout
    assert 'password = "********"' in shown.stdout
    data = report_of(cli("config", "show", "--json", config=config))
    assert data["mqtt"]["password"] == "********"
    assert data["mqtt"]["username"] == "kiosk-1"
    assert data["server"]["port"] > 0
    assert redact(
        {"api_key": "k", "a": {"client_secret": "s", "token_file": "/x", "password": None}, "n": 1}
    ) == {
        "api_key": "********",
        "a": {"client_secret": "********", "token_file": "********", "password": None},
        "n": 1,
    }


def test_config_check(tmp_path: Path) -> None:
    good = cli("config", "check", "--json", config=write_config(tmp_path))
    assert good.returncode == 0
    assert json.loads(good.stdout)["valid"] is True
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text('[security]\nallowed_origins = ["*"]\n[card]\ntypo = 1\n')
    bad = invoke("config", "check", "--json", "--config", str(bad_path))
    assert bad.exit_code == 1
    errors = json.loads(bad.stdout)["errors"]
    assert any("allowed_origins" in e for e in errors)
    assert any("typo" in e for e in errors)
    human = invoke("config", "check", "--config", str(bad_path))
    assert human.exit_code == 1
    assert "invalid configuration" in human.stderr
    example = Path(__file__).resolve().parents[2] / "config" / "card-agent.example.toml"
    checked = invoke("config", "check", "--json", "--config", str(example))
    assert checked.exit_code == 0, checked.stdout
    assert any("ca_bundle" in w for w in json.loads(checked.stdout)["warnings"])


def test_json_errors_on_stdout_exit_1(tmp_path: Path) -> None:
    # pcsc backend with no pcscd: a card command fails with a JSON error, exit 1.
    config = write_config(tmp_path, backend="pcsc")
    env = clean_env(PCSCLITE_CSOCK_NAME=str(tmp_path / "none.comm"))
    result = subprocess.run(
        [str(CARD_AGENT), "readers", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["error"]["code"] == "reader_service_down"


def test_serve_with_a_corrupt_audit_log_says_what_to_do_in_one_line(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "audit.log").write_bytes(b'{"seq": 1}\nnot a record\n{"seq": 3}\n')
    result = cli("serve", config=config, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    problem = [line for line in result.stderr.splitlines() if "audit" in line]
    assert len(problem) == 1, result.stderr
    assert "card-agent audit verify" in problem[0]


def test_audit_verify_prints_the_anchor_and_checks_one(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    invoke("pin", "change", "--pin-stdin", "--config", config, input=f"{PIN}\n11223344\n")
    first = json.loads(invoke("audit", "verify", "--json", "--config", config).stdout)
    anchor = first["anchor"]
    seq, digest = anchor.split(":")
    assert int(seq) == first["records"]
    assert len(digest) == 64
    text = invoke("audit", "verify", "--config", config).stdout
    assert f"anchor: {anchor}" in text
    # The newest record edited: the chain still verifies, the anchor does not.
    log = tmp_path / "state" / "audit.log"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1].replace('"result":"ok"', '"result":"no"'))
    assert invoke("audit", "verify", "--config", config).exit_code == 0
    checked = invoke("audit", "verify", "--json", "--anchor", anchor, "--config", config)
    assert checked.exit_code == 1
    assert json.loads(checked.stdout)["anchor_ok"] is False
    assert invoke("audit", "verify", "--anchor", "nonsense", "--config", config).exit_code == 2


# --- structure: light --help, no import cycle, one error path ----------------------------------


def _modules_after(code: str) -> set[str]:
    """Top-level modules `code` loads in a fresh interpreter (this checkout), beyond
    those the interpreter's start-up loaded (site, .pth hooks)."""
    probe = (
        "import sys\n"
        "before = set(sys.modules)\n"
        f"{code}\n"
        "print('MODULES', *sorted({m.partition('.')[0] for m in set(sys.modules) - before}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(Path(__file__).resolve().parents[2])),
        check=True,
    )
    return set(result.stdout.splitlines()[-1].split()[1:])


def test_help_loads_click_and_the_standard_library_only() -> None:
    loaded = _modules_after(
        "\n".join(
            [
                "from agent.cli import main",
                "try:",
                "    main(['--help'])",
                "except SystemExit:",
                "    pass",
            ]
        )
    )
    foreign = loaded - set(sys.stdlib_module_names) - {"agent", "practice", "click", "__main__"}
    assert foreign == set(), foreign


def test_no_cycle_between_the_cli_the_selftest_and_the_runtime() -> None:
    """The selftest and the ways to the card import neither the CLI nor the runtime
    (the runtime imports the selftest, the CLI imports all three)."""
    for module in ("agent.selftest", "agent.access.agent_api", "agent.access.service"):
        code = (
            f"import {module}\n"
            "assert not [m for m in sys.modules if m.startswith(('agent.cli', 'agent.runtime'))]"
        )
        _modules_after(code)  # check=True: an AssertionError fails here


def test_a_missing_extra_is_named_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # sys.modules[name] = None makes `import name` raise ModuleNotFoundError(name=name),
    # exactly as on an install without the extra.
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    serve = invoke("serve", "--config", str(write_config(tmp_path / "a")))
    assert serve.exit_code == 1
    assert "needs uvicorn" in serve.stderr
    assert "pip install 'card-agent[agent]'" in serve.stderr
    monkeypatch.setitem(sys.modules, "smartcard", None)
    pcsc = write_config(tmp_path / "b", backend="pcsc")
    readers = invoke("readers", "--json", "--config", str(pcsc))
    assert readers.exit_code == 1
    error = json.loads(readers.stdout)["error"]
    assert error["code"] == "missing_dependency"
    assert error["details"] == {"module": "smartcard", "extra": "pcsc"}


def test_an_invalid_configuration_is_a_cli_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[card]\ntypo = 1\n")
    human = invoke("pin", "status", "--config", str(bad))
    assert human.exit_code == 1
    first, *rest = human.stderr.splitlines()
    assert first.startswith("error: invalid configuration")
    assert first.endswith("(config_invalid)")
    assert any("typo" in line for line in rest)
    as_json = invoke("card", "info", "--json", "--config", str(bad))
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["error"]["code"] == "config_invalid"

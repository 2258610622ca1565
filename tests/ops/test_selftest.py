"""`card-agent selftest` and `run_selftest`: every mode, the card profiles, the probes."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent import __version__
from agent.access.service import ServiceAccess
from agent.cli import main
from agent.cli.card_access import DeferredCardAccess
from agent.config import Config, load_config
from agent.selftest import CHECK_IDS, SignRequest, run_selftest
from tests.ops.conftest import (
    PIN,
    AgentProcess,
    by_id,
    clean_env,
    cli,
    free_port,
    in_process_agent,
    report_of,
    skip_or_fail,
    start_agent,
    write_config,
)
from tests.pcscd_support import PcscDaemon, Plug


def invoke(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)


def selftest_json(
    config: Path, *extra: str, input: str | None = None
) -> tuple[int, dict[str, Any]]:
    result = invoke("selftest", "--json", "--config", str(config), *extra, input=input)
    return result.exit_code, json.loads(result.stdout)


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


async def cli_selftest(config: Config, **kwargs: Any) -> dict[str, Any]:
    """The selftest the way the CLI runs it: the card through the agent's API when it
    answers, else a local card service, opened only when a check needs the card."""
    async with contextlib.AsyncExitStack() as stack:
        return await run_selftest(config, DeferredCardAccess(config, stack), **kwargs)


# --- all pass -------------------------------------------------------------------------------


def test_in_agent_mode_all_pass_and_never_reopens_the_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = write_config(tmp_path)
    with in_process_agent(config_path) as agent:
        import agent.runtime as runtime_module

        def no_second_backend(*_: Any) -> Any:
            raise AssertionError("the selftest opened the card a second time")

        monkeypatch.setattr(runtime_module, "build_backend", no_second_backend)
        config = agent.runtime.config
        access = ServiceAccess.remote(agent.runtime.service)  # what the runtime's hook uses
        report = agent.call(run_selftest(config, access, sign=SignRequest(PIN)))
    assert report["mode"] == "in-agent"
    assert report["exit_code"] == 0, json.dumps(report, indent=1, ensure_ascii=False)
    got = statuses(report)
    assert [c["id"] for c in report["checks"]] == list(CHECK_IDS)
    for check_id in ("config", "reader", "card", "card_info", "certificate", "chain", "expiry"):
        assert got[check_id] == "pass", check_id
    assert got["pin"] == got["sign"] == got["api"] == got["clock"] == "pass"
    assert got["pcscd"] == got["virtual_reader"] == "skip"  # n/a for the simulated card
    # Nothing personal in a report that may travel to telemetry.
    text = json.dumps(report, ensure_ascii=False)
    for secret in (PIN, "张伟", "8900000012345"):
        assert secret not in text
    assert by_id(report)["card_info"]["details"]["card"].endswith("2345")


def test_the_runtimes_remote_selftest_hook_runs_in_agent(tmp_path: Path) -> None:
    """The MQTT `selftest` command's hook, as build_runtime wires it (no broker needed:
    the hook is called directly on the agent's loop)."""
    from agent.telemetry import TelemetryPublisher

    config_path = write_config(
        tmp_path, extra=f'[mqtt]\nenabled = true\nport = {free_port()}\nkiosk_id = "k1"\n'
    )
    with in_process_agent(config_path) as agent:
        publisher = next(c for c in agent.runtime.components if isinstance(c, TelemetryPublisher))
        hook = publisher.selftest_hook
        assert hook is not None
        report = agent.call(hook())
    assert report["mode"] == "in-agent"
    got = statuses(report)
    for check_id in ("reader", "card", "card_info", "certificate", "chain", "pin", "api"):
        assert got[check_id] == "pass", (check_id, by_id(report)[check_id])
    assert got["sign"] == "skip"  # never a PIN from a remote command
    assert got["mqtt"] == "fail"  # the configured broker is not there


def test_cli_through_running_agent_with_sign(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    config = write_config(tmp_path)
    start_agent(agent_process, config)
    result = cli("selftest", "--json", "--sign", "--pin-stdin", config=config, input=PIN + "\n")
    report = report_of(result)
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["mode"] == "agent"
    assert statuses(report)["sign"] == "pass"
    assert by_id(report)["sign"]["details"]["algorithm"] == "SM2-SM3"
    # Progress went to stderr, one line per check (not a terminal).
    assert result.stderr.count("/15]") == 15
    assert PIN not in result.stdout + result.stderr
    # The CLI paired itself as a local tool; its token file is private.
    tokens = list((tmp_path / "state").glob("cli-token.*.json"))
    assert len(tokens) == 1
    assert tokens[0].stat().st_mode & 0o777 == 0o600
    # Human table, exit 0.
    table = cli("selftest", config=config)
    assert table.returncode == 0
    assert "all checks passed" in table.stdout
    assert "PASS  agent API" in table.stdout


# --- card profiles: warnings and failures ----------------------------------------------------


def test_blocked_pin_fails_with_exit_2(tmp_path: Path) -> None:
    code, report = selftest_json(write_config(tmp_path, profile="blocked-pin"), "--skip", "api")
    assert code == 2
    assert report["status"] == "fail"
    pin = by_id(report)["pin"]
    assert pin["status"] == "fail"
    assert "blocked" in pin["message"]
    assert pin["hint"]
    assert "issuer" in pin["hint"]
    assert statuses(report)["api"] == "skip"


def test_expiring_soon_warns_with_exit_1(tmp_path: Path) -> None:
    code, report = selftest_json(write_config(tmp_path, profile="expiring-soon"), "--skip", "api")
    assert code == 1, report
    assert report["status"] == "warn"
    expiry = by_id(report)["expiry"]
    assert expiry["status"] == "warn"
    assert "expires in" in expiry["message"]
    assert 8 <= expiry["details"]["days_left"] <= 10
    assert {s for s in statuses(report).values()} <= {"pass", "warn", "skip"}


def test_expired_certificate_fails(tmp_path: Path) -> None:
    code, report = selftest_json(write_config(tmp_path, profile="expired-cert"), "--skip", "api")
    assert code == 2
    assert by_id(report)["expiry"]["status"] == "fail"
    assert "expired" in by_id(report)["expiry"]["message"]


@pytest.mark.parametrize(
    ("profile", "pin", "algorithm"),
    [
        ("rsa2048", "00000000", "RSA-SHA256"),
        ("legacy-rsa1024", PIN, "RSA-SHA1"),
    ],
)
def test_sign_rsa_cards(tmp_path: Path, profile: str, pin: str, algorithm: str) -> None:
    code, report = selftest_json(
        write_config(tmp_path, profile=profile),
        "--sign",
        "--pin-stdin",
        "--skip",
        "api",
        input=pin + "\n",
    )
    sign = by_id(report)["sign"]
    assert sign["status"] == "pass", sign
    assert sign["details"]["algorithm"] == algorithm
    assert code == 0


def _set_tries(config: Path, tries: int) -> None:
    """Set the simulated card's PIN counter in its state file (made on first use)."""
    invoke("pin", "status", "--config", str(config))
    state = config.parent / "state" / "simulated-card.json"
    data = json.loads(state.read_text())
    data["pin"]["tries_left"] = tries
    state.write_text(json.dumps(data))


def test_low_tries_warn_and_sign_never_spends_the_last_try(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    _set_tries(config, 2)  # pin_floor 1: 2 <= floor + 1 warns
    code, report = selftest_json(config, "--skip", "api")
    assert code == 1
    assert by_id(report)["pin"]["status"] == "warn"
    _set_tries(config, 1)
    code, report = selftest_json(
        config, "--skip", "api", "--sign", "--pin-stdin", input="wrong-pin\n"
    )
    sign = by_id(report)["sign"]
    assert sign["status"] == "warn"
    assert "not attempted" in sign["message"]
    status = invoke("pin", "status", "--json", "--config", str(config))
    assert json.loads(status.stdout)["tries_left"] == 1  # nothing spent


def test_wrong_pin_fails_sign(tmp_path: Path) -> None:
    code, report = selftest_json(
        write_config(tmp_path), "--skip", "api", "--sign", "--pin-stdin", input="12345678\n"
    )
    sign = by_id(report)["sign"]
    assert code == 2
    assert sign["status"] == "fail"
    assert "9 tries left" in sign["message"]


def test_sign_without_a_terminal_or_stdin_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("selftest", "--sign", "--config", str(write_config(tmp_path)))
    assert result.exit_code == 2
    assert "--pin-stdin" in result.output


def test_invalid_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhost = "0.0.0.0"\n')
    code, report = selftest_json(bad)
    assert code == 2
    assert by_id(report)["config"]["status"] == "fail"
    assert {c["status"] for c in report["checks"][1:]} == {"skip"}
    assert invoke("selftest", "--skip", "nonsense").exit_code == 2


def test_ca_bundle_missing_warns_and_foreign_ca_fails(tmp_path: Path) -> None:
    missing = write_config(tmp_path / "a", card_extra='ca_bundle = "/nonexistent/ca.pem"')
    code, report = selftest_json(missing, "--skip", "api")
    assert code == 1
    assert by_id(report)["chain"]["status"] == "warn"

    from simulator.ca import TestCA

    other = tmp_path / "other-ca.pem"
    other.write_text(TestCA.create("SM2").certificate_pem)
    foreign = write_config(tmp_path / "b", card_extra=f'ca_bundle = "{other}"')
    code, report = selftest_json(foreign, "--skip", "api")
    assert code == 2
    assert by_id(report)["chain"]["status"] == "fail"

    # The right bundle: the simulated card's CA, exported as an operator would.
    right = tmp_path / "right-ca.pem"
    state = tmp_path / "b" / "state" / "simulated-card.json"
    card_sim = Path(sys.executable).with_name("card-sim")
    subprocess.run(
        [str(card_sim), "export-ca", "--state", str(state), "-o", str(right)],
        check=True,
        capture_output=True,
    )
    good = write_config(tmp_path / "b", card_extra=f'ca_bundle = "{right}"')
    code, report = selftest_json(good, "--skip", "api")
    assert by_id(report)["chain"]["status"] == "pass", by_id(report)["chain"]


def test_table_and_progress(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["selftest", "--config", str(write_config(tmp_path))])
    assert result.exit_code == 2  # the agent is not running: api fails
    out = result.stdout
    assert "FAIL  agent API and Host/Origin policy" in out
    assert "fix: sudo systemctl start card-agent" in out
    assert "PASS  card present and recognised" in out
    assert "(direct mode)" in out
    assert result.stderr.count("/15]") == 15


def test_compat_endpoint_probe(tmp_path: Path) -> None:
    compat_port = free_port()
    config_path = write_config(tmp_path, extra=f"[compat]\nenabled = true\nport = {compat_port}\n")
    only = [c for c in CHECK_IDS if c not in ("config", "compat")]
    with in_process_agent(config_path) as agent:
        config = agent.runtime.config
        access = ServiceAccess.remote(agent.runtime.service)
        in_agent = agent.call(run_selftest(config, access, skip=only))
        from_cli = asyncio.run(cli_selftest(config, skip=only))
    for report in (in_agent, from_cli):
        compat = by_id(report)["compat"]
        assert compat["status"] == "pass", compat
        assert "foreign Host and Origin refused" in compat["message"]
    assert from_cli["mode"] == "none"  # no check needed the card: it was not opened
    closed = asyncio.run(cli_selftest(config, skip=only))  # the agent has stopped
    assert by_id(closed)["compat"]["status"] == "fail"


def test_compat_on_a_port_chosen_at_start(tmp_path: Path) -> None:
    """compat.port = 0 (tests only: the official client needs its fixed port) is chosen
    when the endpoint starts. The selftest checks the configured endpoint, in the agent
    as from the CLI: it says it cannot, rather than guess."""
    config_path = write_config(tmp_path, extra="[compat]\nenabled = true\nport = 0\n")
    only = [c for c in CHECK_IDS if c not in ("config", "compat")]
    with in_process_agent(config_path) as agent:
        config = agent.runtime.config
        access = ServiceAccess.remote(agent.runtime.service)
        in_agent = agent.call(run_selftest(config, access, skip=only))
        from_cli = asyncio.run(cli_selftest(config, skip=only))
    for report in (in_agent, from_cli):
        compat = by_id(report)["compat"]
        assert compat["status"] == "skip"
        assert "compat.port = 0" in compat["message"]


# --- probes ---------------------------------------------------------------------------------


class _Permissive(http.server.BaseHTTPRequestHandler):
    """A server that answers like the agent but checks neither Host nor Origin."""

    def do_GET(self) -> None:
        body = json.dumps({"api": "v1", "version": __version__, "backend": "simulated"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_api_probe_catches_a_server_without_host_checks(tmp_path: Path) -> None:
    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), _Permissive)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = load_config(write_config(tmp_path, port=port), env={})
        report = asyncio.run(
            cli_selftest(config, skip=[c for c in CHECK_IDS if c not in ("config", "api")])
        )
    finally:
        server.shutdown()
    api = by_id(report)["api"]
    assert api["status"] == "fail"
    assert "foreign Host" in api["message"]


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Two brokers: (anonymous allowed, anonymous refused)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        skip_or_fail("mosquitto not installed (scripts/system-deps.sh)")
    procs = []
    ports = []
    for anonymous in ("true", "false"):
        port = free_port()
        conf = tmp_path / f"mosquitto-{anonymous}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous {anonymous}\n")
        procs.append(
            subprocess.Popen(
                [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        ports.append(port)
    try:
        for port in ports:
            deadline = time.monotonic() + 5
            while True:
                try:
                    import socket

                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        yield ports[0], ports[1]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(5)


def test_mqtt_broker_check(tmp_path: Path, mosquitto: tuple[int, int]) -> None:
    open_port, closed_port = mosquitto
    skip = [c for c in CHECK_IDS if c not in ("config", "mqtt")]

    def run(port: int, directory: str) -> dict[str, Any]:
        path = write_config(
            tmp_path / directory,
            extra=f'[mqtt]\nenabled = true\nport = {port}\nkiosk_id = "kiosk-1"\n',
        )
        return by_id(asyncio.run(cli_selftest(load_config(path, env={}), skip=skip)))["mqtt"]

    assert run(open_port, "a")["status"] == "pass"
    refused = run(closed_port, "b")
    assert refused["status"] == "fail"
    assert "not authorised" in refused["message"]
    down = run(free_port(), "c")
    assert down["status"] == "fail"
    assert "not reachable" in down["message"]


def test_pcscd_unreachable_fails_with_hint(tmp_path: Path) -> None:
    pytest.importorskip("smartcard")
    config = write_config(tmp_path, backend="pcsc")
    env = clean_env(PCSCLITE_CSOCK_NAME=str(tmp_path / "no-pcscd.comm"))
    result = cli("selftest", "--json", "--skip", "api", config=config, env=env)
    report = report_of(result)
    assert result.returncode == 2
    pcscd = by_id(report)["pcscd"]
    assert pcscd["status"] == "fail"
    assert "systemctl start pcscd.socket" in pcscd["hint"]
    assert statuses(report)["reader"] == statuses(report)["card"] == "skip"


# --- timing ---------------------------------------------------------------------------------


def test_selftest_is_fast_on_the_simulated_card(tmp_path: Path) -> None:
    """The budget is 1.5 s without --sign; bench/bench_selftest.py reports the figure."""
    config = load_config(write_config(tmp_path), env={})
    asyncio.run(cli_selftest(config))  # first run makes the card (key generation)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        asyncio.run(cli_selftest(config))
        times.append(time.perf_counter() - started)
    assert statistics.median(times) < 1.5, times


# --- the PC/SC backend: a private pcscd, the software card behind vpcd ----------------------


@pytest.mark.pcsc
def test_selftest_and_readers_over_pcscd(tmp_path: Path, pcscd: PcscDaemon, plug: Plug) -> None:
    """Direct mode over real pcscd: the readers listed without touching the card, the
    vpcd reader flagged unless card.demo, the chain against the card's CA, a signature
    through the CLI's own card service on the PC/SC backend."""
    from simulator.card_os import SimulatedCard

    card = SimulatedCard.create("legal-person-sm2")
    ca = tmp_path / "ca.pem"
    ca.write_text(card.state.ca_states["SM2"]["certificate_pem"])
    reader = pcscd.readers[0]
    plug(card, 0)
    production = write_config(
        tmp_path / "prod",
        backend="pcsc",
        card_extra=f'reader = "{reader}"\nca_bundle = "{ca}"',
    )
    code, report = selftest_json(production, "--skip", "api")
    assert code == 1, report
    got = statuses(report)
    assert got["virtual_reader"] == "warn"  # a vpcd reader on a production kiosk
    for check_id in ("pcscd", "reader", "card", "card_info", "certificate", "chain", "pin"):
        assert got[check_id] == "pass", (check_id, by_id(report)[check_id])
    assert by_id(report)["reader"]["message"] == reader
    assert report["mode"] == "direct"

    demo = write_config(
        tmp_path / "demo",
        backend="pcsc",
        card_extra=f'reader = "{reader}"\nca_bundle = "{ca}"\ndemo = true',
    )
    code, report = selftest_json(demo, "--skip", "api", "--sign", "--pin-stdin", input=PIN + "\n")
    assert code == 0, json.dumps(report, indent=1, ensure_ascii=False)
    assert by_id(report)["sign"]["details"]["algorithm"] == "SM2-SM3"
    log = (tmp_path / "demo" / "state" / "audit.log").read_text()
    assert '"event":"sign"' in log  # the local card service audited the test signature

    listed = invoke("readers", "--json", "--config", str(production))
    assert listed.exit_code == 0, listed.output
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == set(pcscd.readers)
    assert rows[reader]["card_present"] is True
    assert rows[reader]["selected_by_config"] is True
    assert rows[pcscd.readers[1]]["card_present"] is False
    assert rows[pcscd.readers[1]]["selected_by_config"] is False

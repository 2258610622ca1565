"""`card-agent card identify` through the CLI on the three paths (the simulated card, a
card behind pcscd + vpcd, a softskf token), directly and through a running agent; the
selftest naming the driver in use."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main
from simulator.card_os import SimulatedCard
from tests.ops.conftest import (
    PIN,
    AgentProcess,
    by_id,
    cli,
    report_of,
    start_agent,
    write_config,
)
from tests.pcscd_support import EchoCard, PcscDaemon, Plug
from tests.skf.softskf.plugged import REGISTRY_ENTRY, SkfCard, plugged_skf_card

EPORT_AID = "D15600000145504F5254"
SHIPPED = "card/data/drivers.toml"


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def answering(report: dict[str, Any]) -> list[str]:
    return [a["aid"] for a in report["applications"] if a["selected"]]


def assert_apdu_report(report: dict[str, Any], backend: str, reader: str) -> None:
    """The software E-Port card's report, whichever way it was reached."""
    assert report["backend"] == backend
    assert report["reader"] == reader
    atr = report["atr"]
    assert atr["hex"].startswith("3B 8C 80 01 45 50 4F 52 54")
    assert atr["protocols"] == [0, 1]  # TD1 80 names T=0, TD2 01 T=1
    assert atr["tck"] == "ok"
    assert atr["historical_text"] == "EPORT-SIM001"
    assert atr["known_as"] == "card-agent simulated E-Port card"
    assert report["registry"]["entry"] == "card-agent-simulator"
    assert report["registry"]["source"] == SHIPPED
    assert report["registry"]["driver"] == "eport-apdu"
    # Our application answers (with its FCI); the other well-known ones do not.
    assert answering(report) == [EPORT_AID]
    ours = next(a for a in report["applications"] if a["selected"])
    assert ours["fci"].startswith("6F")
    assert {a["sw"] for a in report["applications"] if not a["selected"]} == {"6A82"}
    assert report["skf"] is None


# --- the simulated card --------------------------------------------------------------------


def test_identify_the_simulated_card_directly_and_through_the_agent(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    config = write_config(tmp_path)
    direct = cli("card", "identify", "--json", config=config)
    assert direct.returncode == 0, direct.stderr
    assert "opening the card directly" in direct.stderr
    report = report_of(direct)
    assert_apdu_report(report, "simulated", "Simulated E-Port Reader 00")
    text = cli("card", "identify", config=config)
    assert text.returncode == 0, text.stderr
    assert "entry card-agent-simulator (card/data/drivers.toml): eport-apdu" in text.stdout
    assert f"{EPORT_AID}" in text.stdout
    assert "known as: card-agent simulated E-Port card" in text.stdout

    start_agent(agent_process, config)
    through = cli("card", "identify", "--json", config=config)
    assert through.returncode == 0, through.stderr
    assert "through the running agent" in through.stderr
    assert report_of(through) == report  # the API answers the same document
    # Nothing personal in a report meant for a support request.
    for text_ in (direct.stdout, through.stdout):
        for secret in (PIN, "张伟", "8900000012345"):
            assert secret not in text_


def test_the_selftest_names_the_driver_in_use(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = cli("selftest", "--json", "--skip", "api", config=config)
    card = by_id(report_of(result))["card"]
    assert card["status"] == "pass", card
    assert card["details"]["driver"]["driver"] == "eport-apdu"
    assert "driver eport-apdu: the built-in APDU profile (simulated backend)" in card["message"]


# --- PC/SC: the software card and a foreign one behind vpcd --------------------------------


@pytest.mark.pcsc
def test_identify_over_pcscd_an_eport_card_and_a_foreign_one(
    tmp_path: Path, pcscd: PcscDaemon, plug: Plug
) -> None:
    reader, other = pcscd.readers
    plug(SimulatedCard.create("legal-person-sm2"), 0)
    plug(EchoCard(), 1)
    ours = write_config(tmp_path / "ours", backend="pcsc", card_extra=f'reader = "{reader}"')
    result = invoke("card", "identify", "--json", "--config", str(ours))
    assert result.exit_code == 0, result.output
    assert_apdu_report(json.loads(result.stdout), "pcsc", reader)

    foreign = write_config(tmp_path / "foreign", backend="pcsc", card_extra=f'reader = "{other}"')
    result = invoke("card", "identify", "--json", "--config", str(foreign))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["atr"]["historical_text"] == "echo"
    assert report["registry"]["entry"] is None
    assert report["registry"]["reasons"] == [
        f"card-agent-simulator ({SHIPPED}): ATR {report['atr']['hex']} matches none of "
        "its ATR patterns"
    ]
    assert answering(report) == []
    assert any("no registry entry matches" in n for n in report["notes"])
    # The card commands say it is not supported and where to look.
    info = invoke("card", "info", "--json", "--config", str(foreign))
    assert info.exit_code == 1
    error = json.loads(info.stdout)["error"]
    assert error["code"] == "unsupported_card"
    assert "card-agent card identify" in error["message"]


@pytest.mark.pcsc
def test_a_registry_entry_sends_a_pcsc_card_to_an_skf_library(
    tmp_path: Path, pcscd: PcscDaemon, plug: Plug
) -> None:
    """An ATR listed for a vendor library: the agent releases its PC/SC connection and
    drives the card through the library (softskf here, holding the card's keys)."""
    echo = EchoCard(label=b"vendor-key")
    reader = pcscd.readers[0]
    plug(echo, 0)
    with plugged_skf_card(tmp_path / "token") as token:
        registry = tmp_path / "drivers.toml"
        registry.write_text(
            f'version = 1\n[[driver]]\nname = "vendor-card"\ndriver = "skf"\n'
            f'library = "{token.library_path}"\natr = ["{echo.atr.hex()}"]\n'
            f'card_type = "legal_person"\n',
            encoding="utf-8",
        )
        config = write_config(
            tmp_path,
            backend="pcsc",
            card_extra=f'reader = "{reader}"\nregistry = "{registry}"',
        )
        info = invoke("card", "info", "--json", "--config", str(config))
        assert info.exit_code == 0, info.output
        assert json.loads(info.stdout)["card"]["card_number"] == token.state.card_number
        assert token.calls("SKF_ExportCertificate") > 0
        result = invoke("card", "identify", "--json", "--config", str(config))
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
    assert report["registry"]["entry"] == "vendor-card"
    assert report["registry"]["driver"] == "skf"
    (device,) = report["skf"]["devices"]
    assert device["applications"][0]["containers"] == [{"name": "SignKey", "type": "ECC"}]


# --- SKF: a softskf token --------------------------------------------------------------------


def _skf_config(tmp_path: Path, token: SkfCard) -> Path:
    return write_config(tmp_path, backend="skf", card_extra=f'registry = "{token.registry_path}"')


def test_identify_and_the_selftest_on_the_skf_backend(
    tmp_path: Path, agent_process: list[AgentProcess]
) -> None:
    with plugged_skf_card(tmp_path / "token") as token:
        config = _skf_config(tmp_path, token)
        direct = cli("card", "identify", "--json", config=config)
        assert direct.returncode == 0, direct.stderr
        report = report_of(direct)
        assert report["backend"] == "skf"
        assert report["reader"] == "SKF libsoftskf.so"
        assert report["atr"] is None
        (device,) = report["skf"]["devices"]
        assert device["name"] == "SoftSKF Token 0"
        assert device["registry"]["entry"] == REGISTRY_ENTRY
        assert device["manufacturer"] == "card-agent softskf"
        number = token.state.card_number
        assert device["serial_number"] == "*" * (len(number) - 4) + number[-4:]
        assert device["applications"] == [
            {"name": "EPORT", "containers": [{"name": "SignKey", "type": "ECC"}], "error": None}
        ]
        text = cli("card", "identify", config=config)
        assert f"entry {REGISTRY_ENTRY}" in text.stdout
        assert "application 'EPORT': SignKey (ECC)" in text.stdout

        selftest = cli("selftest", "--json", "--skip", "api", config=config)
        checks = by_id(report_of(selftest))
        assert checks["card"]["status"] == "pass", checks["card"]
        driver = checks["card"]["details"]["driver"]
        assert (driver["driver"], driver["entry"], driver["container"]) == (
            "skf",
            REGISTRY_ENTRY,
            "SignKey",
        )
        assert "ATR an SKF library hides it" in checks["card"]["message"]
        assert checks["pcscd"]["message"] == "n/a (skf backend)"
        assert checks["card_info"]["status"] == "pass"

        start_agent(agent_process, config)
        through = cli("card", "identify", "--json", config=config)
        assert through.returncode == 0, through.stderr
        assert "through the running agent" in through.stderr
        assert report_of(through) == report
        for output in (direct.stdout, through.stdout, selftest.stdout):
            assert number not in output
            assert token.state.holder_name not in output


def test_a_missing_or_broken_registry_is_a_configuration_error(tmp_path: Path) -> None:
    missing = write_config(tmp_path / "a", card_extra=f'registry = "{tmp_path / "nowhere.toml"}"')
    result = cli("card", "identify", "--json", config=missing)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "config_invalid"
    assert "no such driver registry file" in error["message"]
    broken = tmp_path / "broken.toml"
    broken.write_text('version = 1\n[[driver]]\nname = "x"\ndriver = "magic"\natr = ["3B00"]\n')
    config = write_config(tmp_path / "b", card_extra=f'registry = "{broken}"')
    checked = cli("config", "check", "--json", config=config)
    assert checked.returncode == 1
    assert any('driver must be "eport-apdu" or "skf"' in e for e in report_of(checked)["errors"])
    serve = cli("serve", config=config, timeout=30)
    assert serve.returncode == 1
    assert "Traceback" not in serve.stderr
    assert "config_invalid" in serve.stderr
    assert str(broken) in serve.stderr
    # The SKF backend without an SKF entry cannot start either.
    skf = write_config(tmp_path / "c", backend="skf")
    result = cli("card", "info", "--json", config=skf)
    assert result.returncode == 1
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "config_invalid"
    assert 'needs an enabled driver = "skf" entry' in error["message"]

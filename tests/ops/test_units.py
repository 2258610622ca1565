"""The systemd units: `systemd-analyze verify` and `security`, and what they must say."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.conftest import ROOT, clean_env, skip_or_fail
from tests.ops.sandbox_exec import ALLOW_GROUPS, DENY_GROUPS, FAMILIES

SYSTEMD = ROOT / "systemd"
UNITS = ("card-agent.service", "card-agent-demo.service")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        skip_or_fail("systemd-analyze missing (Debian package systemd; scripts/system-deps.sh)")
    assert found is not None
    return found


POLKIT_HARNESS = """
const fs = require("fs");
let rule = null;
const polkit = {Result: {YES: "yes", NO: "no", NOT_HANDLED: null}, addRule(f) { rule = f; }};
eval(fs.readFileSync(RULES, "utf8"));
const ask = (id, user) => rule({id, lookup: () => undefined}, {user}) ?? null;
console.log(JSON.stringify([
  ask("org.debian.pcsc-lite.access_pcsc", "card-agent"),
  ask("org.debian.pcsc-lite.access_card", "card-agent"),
  ask("org.debian.pcsc-lite.access_card", "visitor"),
  ask("org.freedesktop.login1.reboot", "card-agent"),
]));
"""


def directives(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, repeated keys kept, comments dropped."""
    out, section = [], ""
    for line in (SYSTEMD / unit).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key, value))
    return out


def values(unit: str, key: str) -> list[str]:
    return [v for _, k, v in directives(unit) if k == key]


@pytest.fixture(scope="module")
def verify_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temporary root: the units as install.sh lays them out, the distribution's units
    (targets, pcscd.socket) and a stand-in for the venv's executable."""
    root = tmp_path_factory.mktemp("root")
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh")],
        env=clean_env(DESTDIR=str(root)),
        check=True,
        capture_output=True,
    )
    if not SYSTEM_UNITS.is_dir():
        skip_or_fail(f"{SYSTEM_UNITS} missing: the systemd package is not installed")
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/card-agent/venv/bin/card-agent"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    return root


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify(unit: str, verify_root: Path) -> None:
    analyze = systemd_analyze()
    result = subprocess.run(
        [analyze, "verify", f"--root={verify_root}", f"/etc/systemd/system/{unit}"],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on mere parse warnings: any output about our unit is a failure.
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == "", result.stdout


def test_verify_catches_a_broken_unit(verify_root: Path) -> None:
    """The check above would see a typo: verify reports it on stderr."""
    analyze = systemd_analyze()
    broken = verify_root / "etc/systemd/system/broken.service"
    broken.write_text(
        (SYSTEMD / "card-agent.service").read_text().replace("WatchdogSec=30s", "WatchdogSec=soon")
    )
    result = subprocess.run(
        [analyze, "verify", f"--root={verify_root}", "/etc/systemd/system/broken.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "Failed to parse" in result.stderr


def exposure(unit: str) -> float:
    analyze = systemd_analyze()
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(SYSTEMD / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_security_score_is_recorded(unit: str) -> None:
    score = exposure(unit)
    assert score <= MAX_EXPOSURE
    docs = (ROOT / "docs" / "operations.md").read_text()
    assert f"`{unit}`: {score:.1f}" in docs, f"docs/operations.md must record {unit}: {score}"


def test_unit_says_what_the_issue_asks() -> None:
    unit = "card-agent.service"
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "Restart": "on-failure",
        "User": "card-agent",
        "StateDirectory": "card-agent",
        "ConfigurationDirectory": "card-agent",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": " ".join(FAMILIES),
        "IPAddressDeny": "any",
        "IPAddressAllow": "localhost",
        "CapabilityBoundingSet": "",
        "LockPersonality": "yes",
        "RestrictNamespaces": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "MemoryDenyWriteExecute": "yes",
    }
    for key, value in expected.items():
        assert values(unit, key) == [value], key
    assert values(unit, "Wants") == ["pcscd.socket"]
    assert values(unit, "After") == ["pcscd.socket"]
    assert re.fullmatch(r"\d+s", values(unit, "WatchdogSec")[0])
    # The seccomp lines are the ones tests/ops/test_sandbox.py runs the agent under.
    assert values(unit, "SystemCallFilter") == [
        " ".join(ALLOW_GROUPS),
        "~" + " ".join(DENY_GROUPS),
    ]
    assert values(unit, "SystemCallErrorNumber") == ["EPERM"]
    assert "DynamicUser" not in {k for _, k, _ in directives(unit)}


def test_demo_unit_has_the_same_sandbox() -> None:
    def service(unit: str) -> list[tuple[str, str]]:
        return [(k, v) for s, k, v in directives(unit) if s == "Service" and k != "Environment"]

    assert service("card-agent.service") == service("card-agent-demo.service")
    demo_env = values("card-agent-demo.service", "Environment")
    assert any("CARD_AGENT_CARD__BACKEND=simulated" in e for e in demo_env)
    assert values("card-agent-demo.service", "Conflicts") == ["card-agent.service"]
    assert "Wants" not in {k for _, k, _ in directives("card-agent-demo.service")}


def test_sysusers_polkit_and_dropin() -> None:
    sysusers = (SYSTEMD / "sysusers.d" / "card-agent.conf").read_text()
    entries = [line.split() for line in sysusers.splitlines() if line and not line.startswith("#")]
    assert entries[0][:3] == ["u", "card-agent", "-"]
    rules = (SYSTEMD / "polkit" / "50-card-agent.rules").read_text()
    assert '"org.debian.pcsc-lite.access_pcsc"' in rules
    assert '"org.debian.pcsc-lite.access_card"' in rules
    assert 'subject.user != "card-agent"' in rules
    node = shutil.which("node") or shutil.which("nodejs")
    if node:  # run the rule against a stand-in for polkit's JavaScript API
        script = POLKIT_HARNESS.replace(
            "RULES", json.dumps(str(SYSTEMD / "polkit" / "50-card-agent.rules"))
        )
        out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == ["yes", "yes", None, None]
    dropin = configparser.ConfigParser(strict=False)
    dropin.read(SYSTEMD / "card-agent.service.d" / "mqtt-broker.conf.example")
    assert dropin["Service"]["IPAddressAllow"]

"""Packaging: the wheel, installed WITHOUT extras in a fresh virtualenv, gives a working
`card-agent --help`, `--version`, `audit verify --path` (pure standard library) and a
one-line message naming the extra for a command that needs one.

The wheel is built from a copy of the sources (pyproject.toml, README.md and the four
packages): setuptools writes build/ and *.egg-info next to what it builds, and the
worktree stays untouched. Core dependencies come from pip's cache or the package index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.audit import AuditLog
from tests.ops.conftest import ROOT, skip_or_fail

pytestmark = pytest.mark.slow

PACKAGES = ("card", "simulator", "agent", "practice")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path
    env: dict[str, str]
    cwd: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "card-agent"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.cwd,
            timeout=60,
            check=False,
        )


def _env() -> dict[str, str]:
    # Nothing of the test run may leak into the fresh install: no PYTHONPATH to this
    # checkout, no configuration from the environment.
    return {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV") and not k.startswith("CARD_AGENT_")
    }


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for package in PACKAGES:
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    env = _env()
    built = subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "-w", str(root / "dist"), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if built.returncode != 0:
        skip_or_fail(f"pip wheel failed (build dependencies unavailable?):\n{built.stderr}")
    wheel = next((root / "dist").glob("card_agent-*.whl"))
    venv = root / "venv"
    # No pip inside: the test's pip installs into it (--python), which is faster.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    install = subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    if install.returncode != 0:
        skip_or_fail(f"installing the core dependencies failed:\n{install.stderr}")
    work = root / "work"
    work.mkdir()
    return Installed(wheel, venv / "bin", env, work)


def test_the_wheel_has_the_packages_and_their_type_markers(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names, package
        assert f"{package}/py.typed" in names, package
    assert "agent/cli/__init__.py" in names
    assert "agent/selftest/checks/mqtt.py" in names


def test_help_and_version_without_extras(installed: Installed) -> None:
    # Only the core dependencies are there: no extra's module may be importable.
    probe = subprocess.run(
        [
            str(installed.bin / "python"),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('fastapi', 'uvicorn', 'pydantic', 'aiomqtt', 'websockets', "
            "'smartcard') if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        env=installed.env,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    help_ = installed.run("--help")
    assert help_.returncode == 0, help_.stderr
    for command in ("serve", "selftest", "audit", "pair", "practice"):
        assert command in help_.stdout
    version = installed.run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"card-agent, version {VERSION}"


def test_audit_verify_with_path_needs_no_extra(installed: Installed, tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    log = AuditLog(log_path)
    log.append("pin_change", client="local:cli", result="ok")
    log.append("pin_change", client="local:cli", result="ok")
    log.close()
    good = installed.run("audit", "verify", "--path", str(log_path))
    assert good.returncode == 0, good.stderr
    assert "2 records, chain valid" in good.stdout
    lines = log_path.read_text().splitlines(keepends=True)
    log_path.write_text(lines[0].replace('"result":"ok"', '"result":"no"') + lines[1])
    bad = installed.run("audit", "verify", "--path", str(log_path))
    assert bad.returncode == 1
    assert "INVALID at line" in bad.stdout


def test_a_command_whose_extra_is_missing_says_which_in_one_line(installed: Installed) -> None:
    for args in (("serve",), ("pair", "list"), ("selftest",)):
        result = installed.run(*args)
        assert result.returncode == 1, (args, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (args, result.stderr)
        assert "pip install 'card-agent[agent]'" in lines[0]
        assert lines[0].endswith("(missing_dependency)")
    as_json = installed.run("pair", "list", "--json")
    assert as_json.returncode == 1
    assert '"extra": "agent"' in as_json.stdout

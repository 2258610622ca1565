"""scripts/install.sh and uninstall.sh into a temporary root (DESTDIR) and --dry-run."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import ROOT, clean_env

INSTALL = ROOT / "scripts" / "install.sh"
UNINSTALL = ROOT / "scripts" / "uninstall.sh"
HOST_PATHS = (Path("/opt/card-agent"), Path("/etc/card-agent"), Path("/var/lib/card-agent"))

EXPECTED = {  # path in the root -> mode
    "etc/systemd/system/card-agent.service": 0o644,
    "etc/systemd/system/card-agent-demo.service": 0o644,
    "etc/polkit-1/rules.d/50-card-agent.rules": 0o644,
    "etc/sysusers.d/card-agent.conf": 0o644,
    "etc/card-agent": 0o755,
    "etc/card-agent/config.toml": 0o640,
    "var/lib/card-agent": 0o700,
    "usr/local/bin/card-agent": 0o755,
    "opt/card-agent/share/doc/operations.md": 0o644,
    "opt/card-agent/share/examples/config.toml": 0o644,
    "opt/card-agent/share/examples/mqtt-broker.conf": 0o644,
}


def run(script: Path, *args: str, destdir: Path | None) -> subprocess.CompletedProcess[str]:
    env = clean_env()
    env.pop("DESTDIR", None)
    if destdir is not None:
        env["DESTDIR"] = str(destdir)
    return subprocess.run(
        ["bash", str(script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def host_state() -> dict[Path, bool]:
    return {p: p.exists() for p in HOST_PATHS}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_scripts_parse() -> None:
    for script in (INSTALL, UNINSTALL):
        subprocess.run(["bash", "-n", str(script)], check=True)
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        subprocess.run([shellcheck, str(INSTALL), str(UNINSTALL)], check=True)


def test_install_into_destdir(tmp_path: Path) -> None:
    before = host_state()
    result = run(INSTALL, destdir=tmp_path)
    assert result.returncode == 0, result.stderr
    for rel, expected in EXPECTED.items():
        path = tmp_path / rel
        assert path.exists(), rel
        assert mode(path) == expected, f"{rel}: {oct(mode(path))}"
    for unit in ("card-agent.service", "card-agent-demo.service"):
        assert (tmp_path / "etc/systemd/system" / unit).read_bytes() == (
            ROOT / "systemd" / unit
        ).read_bytes()
    wrapper = (tmp_path / "usr/local/bin/card-agent").read_text()
    assert "exec /opt/card-agent/venv/bin/card-agent" in wrapper
    assert "CARD_AGENT_CONFIG:=/etc/card-agent/config.toml" in wrapper
    config = (tmp_path / "etc/card-agent/config.toml").read_text()
    assert config == (ROOT / "config" / "card-agent.example.toml").read_text()
    if shutil.which("systemd-sysusers"):
        passwd = (tmp_path / "etc/passwd").read_text()
        assert "card-agent:x:" in passwd
        assert ":/var/lib/card-agent:" in passwd
    # Nothing outside the temporary root, nothing started.
    assert host_state() == before
    assert "no virtualenv" in result.stderr
    assert "systemctl" not in result.stdout


def test_reinstall_keeps_an_edited_config(tmp_path: Path) -> None:
    assert run(INSTALL, destdir=tmp_path).returncode == 0
    config = tmp_path / "etc/card-agent/config.toml"
    config.write_text("# edited by the operator\n")
    again = run(INSTALL, destdir=tmp_path)
    assert again.returncode == 0
    assert config.read_text() == "# edited by the operator\n"
    assert "keeping the existing" in again.stderr


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    before = host_state()
    result = run(INSTALL, "--dry-run", destdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    assert "+ install -D -m 0644" in result.stdout
    # Without DESTDIR: the whole system install, printed only.
    system = run(INSTALL, "--dry-run", destdir=None)
    assert system.returncode == 0, system.stderr
    for expected in (
        "-m venv /opt/card-agent/venv",
        "pip install",
        "systemd-sysusers /etc/sysusers.d/card-agent.conf",
        "chown root:card-agent /etc/card-agent/config.toml",
        "chown card-agent:card-agent /var/lib/card-agent",
    ):
        assert expected in system.stdout, expected
    assert host_state() == before
    demo = run(INSTALL, "--dry-run", "--demo", "--wheels", "/srv/wheels", destdir=None)
    assert "--no-index --find-links /srv/wheels" in demo.stdout
    assert run(INSTALL, "--bogus", destdir=tmp_path).returncode == 2


def test_uninstall_keeps_state_unless_purged(tmp_path: Path) -> None:
    assert run(INSTALL, destdir=tmp_path).returncode == 0
    (tmp_path / "var/lib/card-agent/audit.log").write_text("{}\n")
    dry = run(UNINSTALL, "--dry-run", "--purge", destdir=tmp_path)
    assert dry.returncode == 0
    assert (tmp_path / "etc/systemd/system/card-agent.service").exists()
    removed = run(UNINSTALL, destdir=tmp_path)
    assert removed.returncode == 0, removed.stderr
    for rel in (
        "etc/systemd/system/card-agent.service",
        "etc/systemd/system/card-agent-demo.service",
        "etc/polkit-1/rules.d/50-card-agent.rules",
        "etc/sysusers.d/card-agent.conf",
        "usr/local/bin/card-agent",
        "opt/card-agent",
    ):
        assert not (tmp_path / rel).exists(), rel
    assert (tmp_path / "etc/card-agent/config.toml").exists()
    assert (tmp_path / "var/lib/card-agent/audit.log").exists()
    purged = run(UNINSTALL, "--purge", destdir=tmp_path)
    assert purged.returncode == 0
    assert not (tmp_path / "etc/card-agent").exists()
    assert not (tmp_path / "var/lib/card-agent").exists()


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL])
def test_help(script: Path) -> None:
    result = run(script, "--help", destdir=None)
    assert result.returncode == 0
    assert "--dry-run" in result.stdout

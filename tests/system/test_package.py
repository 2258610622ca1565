"""The .deb itself: reproducible, lintian clean, and holding what the issue asks."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
from pathlib import Path

import pytest

from tests.system.conftest import ROOT, Checks, Packages, build_deb, deb_field

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(900)]

VENV = "opt/card-agent/venv"
SITE = f"{VENV}/lib/python3.11/site-packages"
EXPECTED_FILES = (
    "usr/bin/card-agent",
    "lib/systemd/system/card-agent.service",
    "lib/systemd/system/card-agent-demo.service",
    "usr/lib/sysusers.d/card-agent.conf",
    "usr/lib/tmpfiles.d/card-agent.conf",
    "usr/share/polkit-1/rules.d/50-card-agent.rules",
    "etc/card-agent/config.toml",
    "usr/share/man/man1/card-agent.1.gz",
    "usr/share/doc/card-agent/copyright",
    "usr/share/doc/card-agent/changelog.gz",
    "usr/share/doc/card-agent/operations.md.gz",
    "usr/share/lintian/overrides/card-agent",
    "opt/card-agent/share/doc/operations.md",
    "opt/card-agent/share/examples/config.toml",
    "opt/card-agent/share/examples/mqtt-broker.conf",
    "opt/card-agent/share/examples/chromium-policy.json",
    "opt/card-agent/extension/manifest.json",
    f"{VENV}/bin/card-agent",
    f"{VENV}/pyvenv.cfg",
    f"{SITE}/agent/__init__.py",
    f"{SITE}/smartcard/scard/__init__.py",
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def unpacked(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "--extract", str(packages.current), str(root)], check=True)
    return root


def test_two_builds_are_identical(packages: Packages, tmp_path: Path, checks: Checks) -> None:
    with checks.check("rebuild: the same bytes (reproducible build)") as c:
        again = build_deb(tmp_path / "again")
        assert sha256(again) == sha256(packages.current), (
            "two builds of the same checkout differ: compare them with diffoscope"
        )
        c.detail = f"sha256 {sha256(again)[:16]}..."


def test_lintian_clean(packages: Packages, checks: Checks) -> None:
    with checks.check("lintian: no error or warning beyond the commented overrides") as c:
        result = subprocess.run(
            ["lintian", "--fail-on", "error,warning", str(packages.current)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
        assert not tags, result.stdout
        assert result.returncode == 0, result.stdout + result.stderr
        overrides = (ROOT / "packaging/deb/lintian-overrides").read_text().splitlines()
        c.detail = f"{sum(1 for o in overrides if o.startswith('card-agent:'))} overrides"


def test_control_fields(packages: Packages, checks: Checks) -> None:
    with checks.check("control: dependencies, conffile, maintainer scripts"):
        depends = deb_field(packages.current, "Depends")
        for needed in ("python3.11", "pcscd", "polkitd", "systemd", "libpcsclite1", "libc6"):
            assert needed in depends, f"Depends lacks {needed}: {depends}"
        # vpcd lets anyone reaching its port insert a card: never pulled in by default.
        assert "vsmartcard-vpcd" in deb_field(packages.current, "Suggests")
        assert "vsmartcard-vpcd" not in depends + deb_field(packages.current, "Recommends")
        assert "mosquitto-clients" in deb_field(packages.current, "Suggests")
        control = subprocess.run(
            ["dpkg-deb", "--ctrl-tarfile", str(packages.current)],
            capture_output=True,
            check=True,
        ).stdout
        members = (
            subprocess.run(["tar", "-t"], input=control, capture_output=True, check=True)
            .stdout.decode()
            .split()
        )
        for script in ("./postinst", "./prerm", "./postrm", "./conffiles", "./md5sums"):
            assert script in members, members
        conffiles = subprocess.run(
            ["tar", "-xO", "./conffiles"], input=control, capture_output=True, check=True
        ).stdout.decode()
        assert conffiles.split() == ["/etc/card-agent/config.toml"]


def test_contents(unpacked: Path, checks: Checks) -> None:
    with checks.check("contents: units, user, polkit rule, config, man page, docs") as c:
        for rel in EXPECTED_FILES:
            assert (unpacked / rel).is_file(), rel
        for unit in ("card-agent.service", "card-agent-demo.service"):
            shipped = (unpacked / "lib/systemd/system" / unit).read_bytes()
            assert shipped == (ROOT / "systemd" / unit).read_bytes(), unit
        assert (unpacked / "etc/card-agent/config.toml").read_bytes() == (
            ROOT / "config/card-agent.example.toml"
        ).read_bytes()
        manual = gzip.decompress((unpacked / "usr/share/man/man1/card-agent.1.gz").read_bytes())
        for command in ("serve", "selftest", "pair approve", "audit verify", "config check"):
            assert f"card-agent {command}".encode() in manual, command
        top = {p.name for p in unpacked.iterdir()}
        assert top <= {"etc", "lib", "opt", "usr"}, top
        c.detail = f"{sum(1 for _ in unpacked.rglob('*'))} entries"


def test_venv_is_built_for_its_final_path(unpacked: Path, checks: Checks) -> None:
    with checks.check("venv: final path, Debian's python3.11, no build paths, hash .pyc") as c:
        cfg = (unpacked / VENV / "pyvenv.cfg").read_text()
        assert "home = /usr/bin" in cfg
        assert "include-system-site-packages = false" in cfg
        python = unpacked / VENV / "bin/python3.11"
        assert python.is_symlink()
        assert str(python.readlink()) == "/usr/bin/python3.11"
        for script in ("card-agent", "card-sim"):
            first = (unpacked / VENV / "bin" / script).read_text().splitlines()[0]
            assert first == "#!/opt/card-agent/venv/bin/python", first
        assert not list(unpacked.joinpath(SITE).glob("*.dist-info/direct_url.json"))
        # Nothing names the build's temporary directories or caches.
        leaks = subprocess.run(
            ["grep", "-rlE", "card-agent-deb\\.|card-agent-build|/tmp/pip-", str(unpacked)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert leaks == [], leaks
        # PEP 552: flags 0b01 = hash-based, source not checked (no timestamps inside).
        pycs = list(unpacked.joinpath(SITE).rglob("*.pyc"))
        flags = {int.from_bytes(p.read_bytes()[4:8], "little") for p in pycs}
        assert flags == {1}, flags
        sources = list(unpacked.joinpath(SITE, "agent").rglob("*.py"))
        compiled = {p.name.split(".")[0] for p in unpacked.joinpath(SITE, "agent").rglob("*.pyc")}
        assert {p.stem for p in sources} <= compiled
        c.detail = f"{len(pycs)} .pyc"

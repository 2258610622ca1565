"""System tier: the Debian package, installed with apt into a minimal Debian 12 that
boots under systemd-nspawn with systemd as its PID 1 (issue 11).

`packages` builds the .deb twice from this checkout (scripts/build-deb.sh): this
version and a lower one of the same code, for the upgrade. test_package.py checks the
package itself (reproducible, lintian, contents); test_service.py installs it in a
booted system and checks the service there. Every check is printed with its timing at
the end of the run (and as it happens, with -s).

Prerequisites: root, systemd-nspawn (systemd-container), mmdebstrap, dpkg-deb,
lintian, overlayfs, cgroup v2, and the Debian archive over the network
(scripts/system-deps.sh installs the packages). Locally a missing one skips the tier
with the reason (`-m "not system"` deselects it); under CI (CI=true) it fails it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.system.container import cgroup_roots

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-deb.sh"
TOOLS = ("systemd-nspawn", "mmdebstrap", "dpkg-deb", "lintian", "unshare", "nsenter")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"system tier cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"system tier skipped: {reason} (scripts/system-deps.sh; run as root)")


def missing_prerequisites() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root (systemd-nspawn, mounts, cgroups)")
    if not cgroup_roots():
        missing.append("a cgroup v2 hierarchy")
    with contextlib.suppress(OSError):
        if "overlay" not in Path("/proc/filesystems").read_text():
            missing.append("overlayfs")
    return missing


def require_prerequisites() -> None:
    missing = missing_prerequisites()
    if missing:
        skip_or_fail("missing " + ", ".join(missing))


# --- what was checked, and how long it took ------------------------------------------


@dataclass
class Check:
    name: str
    seconds: float = 0.0
    outcome: str = "running"
    detail: str = ""


@dataclass
class Checks:
    done: list[Check] = field(default_factory=list)

    @contextlib.contextmanager
    def check(self, name: str) -> Iterator[Check]:
        """Times one check; its outcome is "ok" unless the block raises."""
        entry = Check(name)
        self.done.append(entry)
        started = time.monotonic()
        print(f"\n[system] {name} ...", flush=True)
        try:
            yield entry
        except BaseException:
            entry.outcome = "FAILED"
            raise
        else:
            entry.outcome = "ok"
        finally:
            entry.seconds = time.monotonic() - started
            extra = f" ({entry.detail})" if entry.detail else ""
            print(f"[system] {name}: {entry.outcome} in {entry.seconds:.1f} s{extra}", flush=True)


CHECKS = Checks()


@pytest.fixture(scope="session")
def checks() -> Checks:
    return CHECKS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CHECKS.done:
        return
    terminalreporter.section("system tier: checks and timings")
    for entry in CHECKS.done:
        extra = f"  {entry.detail}" if entry.detail else ""
        terminalreporter.write_line(
            f"{entry.outcome:>7}  {entry.seconds:6.1f} s  {entry.name}{extra}"
        )
    total = sum(e.seconds for e in CHECKS.done)
    terminalreporter.write_line(f"{'':>7}  {total:6.1f} s  in all")


# --- the packages --------------------------------------------------------------------


def build_deb(output: Path, version: str | None = None) -> Path:
    args = ["bash", str(BUILD), "--fast", "--output", str(output)]
    if version is not None:
        args += ["--version", version]
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        raise AssertionError(f"build-deb.sh failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def deb_field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass
class Packages:
    current: Path
    previous: Path

    @property
    def version(self) -> str:
        return deb_field(self.current, "Version")

    @property
    def previous_version(self) -> str:
        return deb_field(self.previous, "Version")


@pytest.fixture(scope="session")
def packages(tmp_path_factory: pytest.TempPathFactory, checks: Checks) -> Packages:
    """This checkout as a package, and the same code as a lower version (the upgrade)."""
    require_prerequisites()
    out = tmp_path_factory.mktemp("debs")
    with checks.check("build the package (scripts/build-deb.sh)") as c:
        current = build_deb(out / "current")
        c.detail = f"{current.name}, {current.stat().st_size / 1e6:.1f} MB"
    version = deb_field(current, "Version")
    with checks.check("build a lower version of the same checkout") as c:
        previous = build_deb(out / "previous", f"{version}~previous")
        c.detail = previous.name
    return Packages(current, previous)

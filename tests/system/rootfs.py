"""The system tier's base rootfs: a minimal Debian 12 that boots, cached between runs.

`mmdebstrap --variant=minbase` with systemd, dbus and iproute2 only: what card-agent
needs (pcscd, polkitd, python3.11, ...) is NOT in it, so that installing the package
with apt resolves its dependencies from the archive, as on a kiosk. Cached in
/var/cache/card-agent-tests/rootfs-<hash of the mmdebstrap command>: a changed recipe
builds a new one (about 40 s); runs only ever read it (container.py overlays it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from pathlib import Path

CACHE = Path("/var/cache/card-agent-tests")
MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://deb.debian.org/debian-security"
SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = ("systemd", "systemd-sysv", "dbus", "iproute2")
SOURCES = (
    f"deb {MIRROR} bookworm main",
    f"deb {MIRROR} bookworm-updates main",
    f"deb {SECURITY} bookworm-security main",
)
REVISION = 1  # bump to rebuild with the same recipe (e.g. to pick up archive updates)


def mmdebstrap_command(target: Path) -> list[str]:
    return [
        "mmdebstrap",
        f"--variant={VARIANT}",
        "--include=" + ",".join(INCLUDE),
        SUITE,
        str(target),
        *SOURCES,
    ]


def recipe_key() -> str:
    recipe = {"command": mmdebstrap_command(Path("ROOTFS")), "revision": REVISION}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def base_rootfs(log: list[str] | None = None) -> Path:
    """The cached rootfs for this recipe, built first if missing (under a lock: concurrent
    runs from other checkouts wait for one build)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"rootfs-{recipe_key()}"
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "usr/lib/systemd/systemd").exists():
            return target
        started = time.monotonic()
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            mmdebstrap_command(partial),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise RuntimeError(f"mmdebstrap failed:\n{result.stderr[-3000:]}")
        partial.rename(target)
        if log is not None:
            log.append(f"built {target} in {time.monotonic() - started:.0f} s")
        return target

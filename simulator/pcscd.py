"""A private pcscd with vpcd readers, for the test tiers, benchmarks and demos.

pcsc-lite's daemon always puts its socket at /run/pcscd/pcscd.comm (Debian's pcscd
ignores PCSCLITE_CSOCK_NAME; only the client library honours it). To run one of our own
without touching the system's, pcscd starts in a new mount namespace where a directory
of ours is bind-mounted over /run/pcscd, and clients find it through
PCSCLITE_CSOCK_NAME. Its vpcd readers get their own ports from a private reader.conf.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
DEFAULT_VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")

# Runs inside the new mount namespace: give pcscd our directory as its /run/pcscd.
NAMESPACE_SCRIPT = r"""
set -e
sock_dir=$1; shift
if [ ! -d /run/pcscd ]; then
  mkdir /run/pcscd 2>/dev/null || { mount -t tmpfs -o mode=0755 none /run; mkdir /run/pcscd; }
fi
mount --bind "$sock_dir" /run/pcscd
exec "$@"
"""


def vpcd_driver() -> Path | None:
    """The vpcd driver named by the installed reader.conf (any distro layout)."""
    conf = Path("/etc/reader.conf.d/vpcd")
    candidates: list[Path] = []
    if conf.is_file():
        for line in conf.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == "LIBPATH":
                candidates.append(Path(parts[1]))
    candidates.append(DEFAULT_VPCD_DRIVER)
    return next((p for p in candidates if p.exists()), None)


def free_port_pair() -> int:
    """An even base port with base and base+1 free (vpcd binds INADDR_ANY)."""
    for _ in range(100):
        base = random.randrange(20000, 60000, 2)  # noqa: S311 - a port, not a secret
        socks: list[socket.socket] = []
        try:
            for port in (base, base + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))  # noqa: S104 - probing what vpcd will bind
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port pair for vpcd")


def write_vpcd_conf(conf_dir: Path, base_port: int, driver: Path) -> None:
    """A reader.conf.d for pcscd --config: two vpcd readers on base_port, base_port+1."""
    conf_dir.mkdir(parents=True, exist_ok=True)
    (conf_dir / "vpcd").write_text(
        'FRIENDLYNAME "Virtual PCD"\n'
        f"DEVICENAME   /dev/null:{base_port}\n"
        f"LIBPATH      {driver}\n"
        f"CHANNELID    {base_port}\n"
    )


def unshare_prefix(*, probe: bool = True) -> list[str] | None:
    """The command prefix that runs a command in a private mount namespace, if this
    machine lets us (root, or unprivileged user namespaces); None otherwise."""
    unshare = shutil.which("unshare", path=SBIN_PATH)
    if unshare is None:
        return None
    cmd = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        cmd.insert(1, "--map-root-user")  # unprivileged user namespace
    if not probe:
        return cmd
    probe_dir = tempfile.mkdtemp(prefix="ca-probe-")
    try:
        result = subprocess.run(  # noqa: S603 - our own fixed command
            [*cmd, "sh", "-c", NAMESPACE_SCRIPT, "sh", probe_dir, "true"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    return cmd if result.returncode == 0 else None


def pcscd_command(conf_dir: Path, sock_dir: Path | None, prefix: list[str] | None) -> list[str]:
    """pcscd in the foreground with our readers; in its own namespace when `prefix` and
    `sock_dir` are given (unshare and sh exec into pcscd, so the pid is pcscd's)."""
    pcscd = shutil.which("pcscd", path=SBIN_PATH)
    if pcscd is None:
        raise FileNotFoundError("pcscd is not installed (scripts/system-deps.sh)")
    cmd = [pcscd, "--foreground", "--config", str(conf_dir)]
    if prefix is not None and sock_dir is not None:
        cmd = [*prefix, "sh", "-c", NAMESPACE_SCRIPT, "sh", str(sock_dir), *cmd]
    return cmd

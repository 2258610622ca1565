"""What card-agent.service's sandbox lets a process do, as JSON (stdlib only).

    python sandbox_probe.py OUTPUT PORT HOST...
    python sandbox_probe.py --connect-only - PORT HOST...

Run inside the booted test system as an ExecStartPre= of the real card-agent.service
(a drop-in the test adds and removes): same user, namespaces, seccomp filter, IP
firewall and mount options as the agent. It tries to write where the agent must not,
to connect to HOST:PORT for each HOST, to open netlink and packet sockets, to use a
@resources system call and writable+executable memory, and records every outcome
(errno names, never a traceback), then writes OUTPUT. It always exits 0: judging is
the test's job, and a failing ExecStartPre= would hide the results.

OUTPUT "-" prints the JSON instead. --connect-only tries the connections only: the
test's control run outside the sandbox (as root, where writes prove nothing).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import secrets
import socket
import sys
from typing import Any

WRITE_TARGETS = (
    "/",
    "/etc",
    "/etc/card-agent",
    "/etc/systemd/system",
    "/opt/card-agent",
    "/opt/card-agent/venv/lib/python3.11/site-packages",
    "/usr/local/bin",
    "/var/lib",
    "/var/cache",
    "/var/log",
    "/srv",
    "/run",
    "/root",
    "/home",
    "/var/lib/card-agent",  # the state directory: the one place that must work
    "/tmp",  # PrivateTmp: writable, but the agent's own
    "/var/tmp",
    "/dev/shm",
)
CONNECT_TIMEOUT_S = 2.0


def outcome(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc))


def try_write(directory: str, marker: str) -> str:
    path = os.path.join(directory, marker)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return outcome(exc)
    os.close(fd)
    if directory == "/var/lib/card-agent":
        os.unlink(path)  # the markers elsewhere stay: the test looks for them outside
    return "written"


def try_connect(host: str, port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(CONNECT_TIMEOUT_S)
        try:
            sock.connect((host, port))
        except TimeoutError:
            return "timeout"  # the firewall drops the SYN: nothing answers
        except OSError as exc:
            return outcome(exc)
        return "connected"


def try_socket(family: int, kind: int, proto: int = 0) -> str:
    try:
        socket.socket(family, kind, proto).close()
    except OSError as exc:
        return outcome(exc)
    return "opened"


def try_setpriority() -> str:
    # Raising one's own niceness needs no privilege: only the seccomp filter
    # (SystemCallFilter=~@resources) can refuse it.
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + 1)
    except OSError as exc:
        return outcome(exc)
    return "allowed"


def try_wx_memory() -> str:
    prot = mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC
    try:
        mmap.mmap(-1, mmap.PAGESIZE, prot=prot).close()
    except OSError as exc:
        return outcome(exc)
    return "mapped"


def proc_status() -> dict[str, str]:
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    wanted = ("Uid", "Gid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")
    return {k: fields.get(k, "") for k in wanted}


def probe(port: int, hosts: list[str], *, connect_only: bool = False) -> dict[str, Any]:
    connect = {h: try_connect(h, port) for h in hosts}
    if connect_only:
        return {"connect": connect}
    marker = f"card-agent-probe-{secrets.token_hex(6)}"
    return {
        "marker": marker,
        "status": proc_status(),
        "writes": {d: try_write(d, marker) for d in WRITE_TARGETS},
        "connect": connect,
        "sockets": {
            "AF_NETLINK": try_socket(socket.AF_NETLINK, socket.SOCK_RAW),
            "AF_PACKET": try_socket(socket.AF_PACKET, socket.SOCK_RAW),
            "AF_UNIX": try_socket(socket.AF_UNIX, socket.SOCK_STREAM),
        },
        "setpriority": try_setpriority(),
        "wx_memory": try_wx_memory(),
    }


def main() -> None:
    args = sys.argv[1:]
    connect_only = args[:1] == ["--connect-only"]
    if connect_only:
        args = args[1:]
    output, port, hosts = args[0], int(args[1]), args[2:]
    data = json.dumps(probe(port, hosts, connect_only=connect_only), indent=1)
    if output == "-":
        print(data)
    else:
        with open(output, "w") as out:
            out.write(data)


if __name__ == "__main__":
    main()

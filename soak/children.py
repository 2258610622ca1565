"""The processes around the agent: a private pcscd with vpcd readers, the software card
in one of its readers (`card-sim vpcd`), and a mosquitto broker. Each on free ports, each
stopped only by the pid we started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from simulator.pcscd import (
    SBIN_PATH,
    free_port_pair,
    pcscd_command,
    unshare_prefix,
    vpcd_driver,
    write_vpcd_conf,
)

READER = "Virtual PCD 00 00"  # slot 0 of the private pcscd's vpcd driver
DEFAULT_PCSCD_SOCKET = Path("/run/pcscd/pcscd.comm")
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0


class SetupError(Exception):
    """A prerequisite is missing or a child did not come up; the message says which."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def venv_tool(name: str) -> str:
    """A console script of this virtualenv (card-agent, card-sim)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise SetupError(f"{path} not found: run scripts/bootstrap.sh")
    return str(path)


def _spawn(cmd: list[str], log_path: Path, *, stdin: int | None = None) -> subprocess.Popen[bytes]:
    """Our own session (a Ctrl-C to the soak does not reach it), output to `log_path`."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd, stdin=stdin, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _end(proc: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal our child and reap it; SIGKILL if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(STOP_TIMEOUT_S)


def _can_connect_unix(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class PrivatePcscd:
    """pcscd in its own mount namespace with our socket directory as /run/pcscd, and
    two vpcd readers on free ports (simulator/pcscd.py has the recipe and the why)."""

    def __init__(self, workdir: Path) -> None:
        if shutil.which("pcscd", path=SBIN_PATH) is None:
            raise SetupError("pcscd is not installed (scripts/system-deps.sh)")
        driver = vpcd_driver()
        if driver is None:
            raise SetupError("the vpcd driver is not installed (Debian: vsmartcard-vpcd)")
        self.base_port = free_port_pair()
        self._conf_dir = workdir / "reader.conf.d"
        write_vpcd_conf(self._conf_dir, self.base_port, driver)
        self._prefix = unshare_prefix()
        self._sock_dir: Path | None = None
        if self._prefix is not None:
            # Short: a socket path must fit in sun_path (108 bytes).
            self._sock_dir = Path(tempfile.mkdtemp(prefix="soak-pcscd-"))
            self.socket = self._sock_dir / "pcscd.comm"
        else:
            if _can_connect_unix(DEFAULT_PCSCD_SOCKET):
                raise SetupError(
                    "another pcscd owns /run/pcscd/pcscd.comm and mount namespaces are not "
                    "available here to run a private one: stop it first"
                )
            self.socket = DEFAULT_PCSCD_SOCKET
        self.log_path = workdir / "pcscd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped by us

    @property
    def client_env(self) -> dict[str, str]:
        """What a PC/SC client (the agent) needs to find this pcscd."""
        return {} if self._sock_dir is None else {"PCSCLITE_CSOCK_NAME": str(self.socket)}

    @property
    def card_port(self) -> int:
        return self.base_port  # vpcd slot 0 = READER

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("pcscd is already running")
        cmd = pcscd_command(self._conf_dir, self._sock_dir, self._prefix)
        self.proc = _spawn(cmd, self.log_path)  # unshare and sh exec into pcscd
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _can_connect_unix(self.socket):
            if self.proc.poll() is not None:
                raise SetupError(f"pcscd exited at start; see {self.log_path}")
            if time.monotonic() > deadline:
                raise SetupError(f"pcscd did not listen in {START_TIMEOUT_S:g} s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: pcscd vanishes under the agent."""
        proc, self.proc = self.proc, None
        self.stopped = False
        _end(proc, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: alive, holding every socket, answering nothing."""
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("pcscd is not running")
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True

    def thaw(self) -> None:
        if self.proc is not None and self.stopped:
            self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        _end(proc)
        if self._sock_dir is not None:
            shutil.rmtree(self._sock_dir, ignore_errors=True)


class SoftCard:
    """The simulator's E-Port card in the private pcscd's reader, with the real card's
    timing (`card-sim vpcd --timing realistic`) in a process of its own, so that the
    soak's own load generator never slows the card down. Pulled and inserted through
    its command input."""

    def __init__(self, workdir: Path, vpcd_port: int, profile: str = "legal-person-sm2") -> None:
        self._cmd = [
            venv_tool("card-sim"),
            "vpcd",
            profile,
            "--port",
            str(vpcd_port),
            "--timing",
            "realistic",
        ]
        self.log_path = workdir / "card-sim.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = _spawn(self._cmd, self.log_path, stdin=subprocess.PIPE)

    def _command(self, line: str) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"card-sim is not running; see {self.log_path}")
        stdin: IO[bytes] | None = proc.stdin
        assert stdin is not None
        stdin.write(line.encode("ascii") + b"\n")
        stdin.flush()

    def pull(self) -> None:
        self._command("remove")

    def insert(self) -> None:
        self._command("insert")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        _end(proc)


class Mosquitto:
    """A broker on a free loopback port. Persistence on (saved when it stops), so that
    the collector's persistent session and its queued messages survive an outage."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "mosquitto"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        exe = shutil.which("mosquitto", path=SBIN_PATH)
        if exe is None:
            raise SetupError("mosquitto is not installed (scripts/system-deps.sh)")
        self._exe = exe
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 0",  # saved at exit
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 1000000",
            "set_tcp_nodelay true",
        ]
        if os.getuid() == 0:
            lines.append("user root")  # otherwise it drops to "mosquitto" and cannot write
        self.conf_path = self.root / "mosquitto.conf"
        self.conf_path.write_text("\n".join(lines) + "\n")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            raise RuntimeError("mosquitto is already running")
        self.proc = _spawn([self._exe, "-c", str(self.conf_path)], self.log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise SetupError(f"mosquitto exited at start; see {self.log_path}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            if time.monotonic() > deadline:
                raise SetupError(f"mosquitto did not listen in {START_TIMEOUT_S:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: a broker going down for maintenance (it saves its sessions)."""
        proc, self.proc = self.proc, None
        _end(proc)

"""A throw-away Debian system booted under systemd-nspawn, with systemd as its PID 1.

The cached base rootfs (tests/system/rootfs.py) is never written to: each run mounts
an overlay over it (upper and work directories in the run directory) inside a private
mount namespace (`unshare --mount`) that holds nothing but the overlay and the nspawn
process, so the mount vanishes with it.

* `run(...)`: a command in the rootfs without booting it (like a chroot), with the
  host's network: the package install that resolves dependencies from the archive.
* `boot()`: systemd as PID 1, on a private network (loopback only). Commands then run
  inside it with `nsenter` into its namespaces (`exec(...)`), as root.
* `shutdown()`: poweroff, then SIGKILL of the container's init if it lingers; the
  overlay, the cgroups and the run directory are removed. Every process here is one we
  started, killed by its pid.

Two settings make the container a faithful systemd host on these machines:

* The host runs no systemd and mounts cgroups in "hybrid" mode; the container gets the
  unified (v2) hierarchy (SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1), as a Debian 12 kiosk
  has. nspawn is first moved into a cgroup of its own, so everything the container's
  systemd creates lives under it and is removed with it.
* nspawn's default seccomp filter refuses bpf(): systemd inside would then run
  IPAddressDeny=/IPAddressAllow= units WITHOUT their IP firewall, silently (checked:
  a transient unit with IPAddressDeny=any still connects). --system-call-filter=bpf
  lets systemd attach its cgroup BPF programs, as it does on a real kiosk.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

RUNS = Path("/var/cache/card-agent-tests/runs")
# nspawn's per-machine directory on the host; it cannot remove it itself when /run is
# not a tmpfs (as here) and it was killed.
PROPAGATE = Path("/run/systemd/nspawn/propagate")
NAME_PREFIX = "ca-sys-"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT_S = 90.0
SHUTDOWN_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1


class ContainerError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (nspawn then powers
    the container off), so that a killed test run leaves no container behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def cgroup_roots() -> list[Path]:
    """Where nspawn's own cgroup goes: the v2 hierarchy, and name=systemd in hybrid mode."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():  # unified host
        return [base]
    roots = [base / "unified"] if (base / "unified" / "cgroup.controllers").exists() else []
    if (base / "systemd" / "cgroup.procs").exists():
        roots.append(base / "systemd")
    return roots


def _remove_cgroup(path: Path) -> None:
    if not path.is_dir():
        return
    kill = path / "cgroup.kill"
    if kill.exists():
        with contextlib.suppress(OSError):
            kill.write_text("1")
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_stale_runs() -> list[str]:
    """Remove what runs killed without teardown left (their pid is gone)."""
    removed = []
    names: set[str] = set()
    for parent in (RUNS, PROPAGATE):
        if parent.is_dir():
            names |= {p.name for p in parent.iterdir()}
    for root in cgroup_roots():
        names |= {p.name for p in root.iterdir() if p.is_dir()}
    for name in sorted(names):
        match = re.fullmatch(rf"{NAME_PREFIX}(\d+)(-\w+)?", name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        for root in cgroup_roots():
            _remove_cgroup(root / name)
        shutil.rmtree(RUNS / name, ignore_errors=True)
        shutil.rmtree(PROPAGATE / name, ignore_errors=True)
        removed.append(name)
    return removed


class Container:
    def __init__(
        self,
        lower: Path,
        name: str,
        *,
        ro_binds: Mapping[Path, str] | None = None,
        rw_binds: Mapping[Path, str] | None = None,
    ) -> None:
        self.lower = lower
        self.name = name
        self.dir = RUNS / name
        self.ro_binds = dict(ro_binds or {})
        self.rw_binds = dict(rw_binds or {})
        self.console_log = self.dir / "console.log"
        self._nspawn: subprocess.Popen[bytes] | None = None
        self.leader: int | None = None  # the container's init, as the host sees it
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        # The upper directory gives the container's `/` its mode; mkdir's follows the
        # test process's umask, which an in-process agent may have left at 0o077 (then
        # no service user can traverse `/`).
        (self.dir / "upper").chmod(stat.S_IMODE(lower.stat().st_mode))

    # --- starting nspawn -------------------------------------------------------------

    def _command(self, nspawn_args: Sequence[str]) -> list[str]:
        d = self.dir
        overlay = f"lowerdir={self.lower},upperdir={d / 'upper'},workdir={d / 'work'}"
        binds = [f"--bind-ro={src}:{dst}" for src, dst in self.ro_binds.items()]
        binds += [f"--bind={src}:{dst}" for src, dst in self.rw_binds.items()]
        nspawn = [
            "systemd-nspawn",
            "--quiet",
            f"--directory={d / 'merged'}",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            *binds,
            *nspawn_args,
        ]
        cgroups = " ".join(str(root / self.name) for root in cgroup_roots())
        # sh: into our cgroups; unshare: a private mount namespace; sh: the overlay;
        # then nspawn. Each step execs the next: the pid we hold ends up nspawn's.
        script = (
            f'for cg in {cgroups}; do mkdir -p "$cg" && echo $$ > "$cg/cgroup.procs"; done; '
            "exec unshare --mount --propagation private sh -c "
            + _quote(
                f"mount -t overlay overlay -o {overlay} {d / 'merged'} && "
                "exec env SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 " + " ".join(map(_quote, nspawn))
            )
        )
        return ["sh", "-c", script]

    def run(
        self,
        *command: str,
        env: Mapping[str, str] | None = None,
        extra: Sequence[str] = (),
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """`command` in the (not booted) rootfs, with the host's network."""
        setenv = [f"--setenv={k}={v}" for k, v in (env or {}).items()]
        try:
            return subprocess.run(
                [*self._command([*setenv, *extra, "--", *command])],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                preexec_fn=_die_with_parent,
            )
        finally:
            for root in cgroup_roots():
                _remove_cgroup(root / self.name)

    def boot(self, timeout: float = BOOT_TIMEOUT_S) -> float:
        """Boot; returns the seconds until systemd reported the boot finished."""
        assert self._nspawn is None, "already booted"
        started = time.monotonic()
        with self.console_log.open("ab") as log:
            self._nspawn = subprocess.Popen(
                self._command(
                    [
                        "--boot",
                        "--console=pipe",
                        "--private-network",
                        "--system-call-filter=bpf",
                    ]
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        deadline = started + timeout
        self.leader = self._find_leader(deadline)
        # Until systemd listens on its private socket, systemctl says "offline" (or
        # cannot connect); then --wait blocks until the boot is over.
        state = "offline"
        while time.monotonic() < deadline:
            try:
                state = self.exec(
                    "systemctl",
                    "is-system-running",
                    "--wait",
                    check=False,
                    timeout=max(1.0, deadline - time.monotonic()),
                ).stdout.strip()
            except subprocess.TimeoutExpired:
                state = "still starting at the boot timeout"
                break
            if state in ("running", "degraded"):
                return time.monotonic() - started
            if state not in ("", "offline", "initializing", "starting"):
                break
            time.sleep(0.1)
        raise ContainerError(
            f"boot ended {state!r}:\n{self._jobs()}\n{self.journal(lines=60)}\n{self.console()}"
        )

    def _jobs(self) -> str:
        """What the boot still waits for (the units systemd has not finished)."""
        try:
            jobs = self.exec("systemctl", "list-jobs", "--no-pager", check=False, timeout=10)
        except subprocess.TimeoutExpired:
            return "systemctl list-jobs: no answer"
        return "pending jobs:\n" + jobs.stdout

    def _find_leader(self, deadline: float) -> int:
        assert self._nspawn is not None
        while time.monotonic() < deadline:
            if self._nspawn.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited {self._nspawn.returncode}:\n{self.console()}"
                )
            for pid in _children(self._nspawn.pid):
                if _nspid(pid)[-1:] == [1]:
                    return pid
            time.sleep(0.05)
        raise ContainerError(f"no container init after the boot timeout:\n{self.console()}")

    @property
    def booted(self) -> bool:
        return self._nspawn is not None and self._nspawn.poll() is None

    # --- inside the booted system ----------------------------------------------------

    def exec(
        self,
        *command: str,
        input: str | bytes | None = None,
        check: bool = True,
        timeout: float = 120,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`command` as root inside the booted system (all its namespaces but the user's)."""
        assert self.leader is not None, "not booted"
        assert self.booted, "the container has stopped"
        environment = {
            "PATH": PATH,
            "LANG": "C.UTF-8",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            "DEBIAN_FRONTEND": "noninteractive",
            **(env or {}),
        }
        argv = [
            "nsenter",
            f"--target={self.leader}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--cgroup",
            "--",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in environment.items()),
            *command,
        ]
        binary = isinstance(input, bytes)
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=not binary,
            timeout=timeout,
            check=False,
        )
        if binary:  # decoded for the caller; the payload was bytes, the output is text
            result = subprocess.CompletedProcess(
                result.args,
                result.returncode,
                result.stdout.decode(errors="replace"),
                result.stderr.decode(errors="replace"),
            )
        if check and result.returncode != 0:
            raise ContainerError(
                f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def sh(
        self, script: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.exec("sh", "-c", script, check=check, timeout=timeout)

    def write(self, path: str, content: str | bytes, mode: str = "0644") -> None:
        data = content if isinstance(content, bytes) else content.encode()
        self.exec("install", "-D", "-m", mode, "/dev/stdin", path, input=data)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.exec("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str | None = None, lines: int = 40) -> str:
        args = ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(lines), "-b"]
        if unit:
            args += ["-u", unit]
        try:
            return self.exec(*args, check=False, timeout=30).stdout
        except (subprocess.SubprocessError, AssertionError) as exc:
            return f"(journal not readable: {exc})"

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # --- teardown --------------------------------------------------------------------

    def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT_S) -> float | None:
        """Power off (SIGKILL of init after `timeout`); seconds it took, None if killed."""
        proc, self._nspawn = self._nspawn, None
        leader, self.leader = self.leader, None
        if proc is None:
            return 0.0
        started = time.monotonic()
        if proc.poll() is None and leader is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    [
                        "nsenter",
                        f"--target={leader}",
                        "--mount",
                        "--pid",
                        "--",
                        "systemctl",
                        "poweroff",
                        "--no-block",
                    ],
                    capture_output=True,
                    timeout=10,
                    check=False,
                )
        try:
            proc.wait(timeout)
            took: float | None = time.monotonic() - started
        except subprocess.TimeoutExpired:
            took = None
            if leader is not None:  # init's death ends its whole pid namespace
                with contextlib.suppress(ProcessLookupError):
                    os.kill(leader, signal.SIGKILL)
            proc.kill()
            proc.wait(10)
        for root in cgroup_roots():
            _remove_cgroup(root / self.name)
        return took

    def remove(self) -> None:
        self.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(PROPAGATE / self.name, ignore_errors=True)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [int(p) for p in path.read_text().split()]
    except (OSError, ValueError):
        return []


def _nspid(pid: int) -> list[int]:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []

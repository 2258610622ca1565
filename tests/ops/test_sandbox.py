"""The unit's sandbox, reproduced without systemd as PID 1 (see sandbox_exec.py):

* MemoryDenyWriteExecute=yes and the SystemCallFilter= allow-list as the seccomp filters
  systemd 252 installs, around the real agent, the CLI selftest, SM2 and RSA signing and
  the PC/SC path through a real pcscd;
* ProtectSystem=strict's read-only /run: pcscd's socket directory bind-mounted read-only;
* ProtectProc=invisible + ProcSubset=pid: /proc mounted hidepid=invisible,subset=pid.

The finding behind MemoryDenyWriteExecute=yes is pinned here too: cffi's ABI-mode
`ffi.callback()` needs writable+executable memory and fails under it, ctypes callbacks
(libffi static trampolines) do not, and no dependency of the agent uses the former.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.pcscd import free_port_pair, pcscd_command, vpcd_driver, write_vpcd_conf
from tests.ops.conftest import (
    PIN,
    SANDBOX,
    AgentProcess,
    by_id,
    clean_env,
    cli,
    report_of,
    skip_or_fail,
    start_agent,
    write_config,
)
from tests.ops.sandbox_exec import libseccomp_available

SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"


def seccomp(*flags: str) -> list[str]:
    if not libseccomp_available():
        skip_or_fail("libseccomp.so.2 missing (Debian package libseccomp2)")
    if shutil.which("systemd-analyze") is None:
        skip_or_fail("systemd-analyze missing (Debian package systemd)")
    default = ("--mdwe", "--families", "--syscalls", "--kill")
    return [sys.executable, str(SANDBOX), *(flags or default), "--"]


def unshare(*args: str) -> list[str]:
    """A private mount namespace (root only here: no user namespace mapping)."""
    binary = shutil.which("unshare", path=SBIN)
    if binary is None:
        skip_or_fail("unshare missing (util-linux)")
    assert binary is not None
    probe = subprocess.run(
        [binary, "--mount", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        skip_or_fail(f"cannot create mount namespaces here: {probe.stderr.decode().strip()}")
    return [binary, "--mount", "--propagation", "private", *args]


NOBODY = 65534


@pytest.fixture
def service_tmp() -> Iterator[Path]:
    """A directory the service user can use (pytest's tmp_path is root's, 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ca-ops-svc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _hidden_ancestor(path: Path) -> Path | None:
    """The first directory above `path` that other users cannot traverse (e.g. /root
    holding a pyenv Python), or None."""
    for parent in reversed(path.parents):
        if parent != Path("/") and not parent.stat().st_mode & 0o001:
            return parent
    return None


def sandboxed(
    directory: Path, *, read_only: Path | None = None, proc_subset: bool = False
) -> list[str]:
    """The prefix that runs a command as the unit would: an unprivileged user (nobody,
    owning `directory`, when we are root), under the unit's seccomp filters, optionally
    with `read_only` bind-mounted read-only (ProtectSystem=strict's /run) and /proc
    mounted hidepid=invisible,subset=pid (ProtectProc=invisible, ProcSubset=pid)."""
    steps: list[str] = []
    if read_only is not None:
        ro = shlex.quote(str(read_only))
        steps.append(f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} {ro}")
    if proc_subset:
        steps.append("mount -t proc -o hidepid=invisible,subset=pid proc /proc")
    user: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv", path=SBIN)
        if setpriv is None:
            skip_or_fail("setpriv missing (util-linux)")
        assert setpriv is not None
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        hidden = _hidden_ancestor(Path(os.path.realpath(sys.executable)))
        if hidden is not None:
            # The test Python lives in a private home (pyenv under /root): show the
            # service user that Python only, as a real install under /opt would be.
            inner = Path(os.path.realpath(sys.executable)).relative_to(hidden).parts[0]
            keep = tempfile.mkdtemp(prefix=".keep-", dir=directory)  # removed with it
            h, k, i = (shlex.quote(str(x)) for x in (hidden, keep, hidden / inner))
            steps.append(
                f"mount --bind {h} {k} && mount -t tmpfs -o mode=0755 none {h} && "
                f"mkdir -p {i} && mount --bind {k}/{shlex.quote(inner)} {i}"
            )
        user = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    elif read_only is not None or proc_subset:
        skip_or_fail("mount namespaces need root here")
    if not steps:
        return [*user, *seccomp()]
    ns = unshare("--pid", "--fork", "--kill-child=SIGTERM") if proc_subset else unshare()
    script = " && ".join(steps) + ' && exec "$@"'
    return [*ns, "sh", "-c", script, "sh", *user, *seccomp()]


PROBE = r"""
import ctypes, json
out = {}
CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
INT = ctypes.POINTER(ctypes.c_int)
def by_int(a, b):
    return ctypes.cast(a, INT)[0] - ctypes.cast(b, INT)[0]
arr = (ctypes.c_int * 3)(3, 1, 2)
ctypes.CDLL(None).qsort(arr, 3, 4, CMP(by_int))
out["ctypes"] = list(arr)
import cffi
ffi = cffi.FFI()
try:
    ffi.callback("int(int)", lambda x: x)
    out["cffi_callback"] = "ok"
except MemoryError as exc:
    out["cffi_callback"] = "MemoryError"
from card.crypto.sm2 import Sm2PrivateKey, sm2_verify
key = Sm2PrivateKey.generate()
out["sm2"] = sm2_verify(key.public_point, b"m", key.sign(b"m"))
print(json.dumps(out))
"""


def probe(prefix: list[str]) -> dict[str, object]:
    result = subprocess.run(
        [*prefix, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=Path(__file__).resolve().parents[2],
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_memory_deny_write_execute_finding() -> None:
    assert probe([]) == {"ctypes": [1, 2, 3], "cffi_callback": "ok", "sm2": True}
    assert probe(seccomp("--mdwe")) == {
        "ctypes": [1, 2, 3],
        "cffi_callback": "MemoryError",  # cffi ABI-mode callbacks need W+X memory
        "sm2": True,
    }


def test_address_family_filter() -> None:
    code = (
        "import socket\n"
        "socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()\n"
        "socket.socket(socket.AF_INET6).close()\n"
        "try:\n"
        "    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
        "except OSError as exc:\n"
        "    print(exc.errno)\n"
    )
    result = subprocess.run(
        [*seccomp("--families"), sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(errno.EAFNOSUPPORT)


def test_no_dependency_uses_cffi_abi_callbacks() -> None:
    """What makes MemoryDenyWriteExecute=yes safe: nothing calls ffi.callback()."""
    import cryptography
    import smartcard
    import tongsuopy

    import agent
    import card
    import simulator

    pattern = re.compile(r"\bffi\.callback\s*\(|@\w*ffi\.callback\b")
    hits = []
    for package in (tongsuopy, smartcard, cryptography, agent, card, simulator):
        for path in Path(package.__file__).parent.rglob("*.py"):
            if pattern.search(path.read_text(errors="replace")):
                hits.append(str(path))
    assert hits == []


def test_agent_and_selftest_under_the_unit_seccomp_filters(
    service_tmp: Path, agent_process: list[AgentProcess]
) -> None:
    config = write_config(service_tmp / "sm2")
    rsa = write_config(service_tmp / "rsa", profile="rsa2048")
    prefix = sandboxed(service_tmp)
    start_agent(agent_process, config, prefix=prefix)
    result = cli(
        "selftest",
        "--json",
        "--sign",
        "--pin-stdin",
        config=config,
        input=PIN + "\n",
        prefix=prefix,
    )
    report = report_of(result)
    assert result.returncode == 0, json.dumps(report, indent=1)
    assert report["mode"] == "agent"
    assert by_id(report)["sign"]["status"] == "pass"  # signed by the sandboxed agent
    # RSA signing in a sandboxed process (the card opened directly).
    result = cli(
        "selftest",
        "--json",
        "--sign",
        "--pin-stdin",
        "--skip",
        "api",
        config=rsa,
        input="00000000\n",
        prefix=prefix,
    )
    sign = by_id(report_of(result))["sign"]
    assert sign["status"] == "pass", sign
    assert sign["details"]["algorithm"] == "RSA-SHA256"
    assert result.returncode == 0


def test_selftest_with_proc_subset_pid_and_hidepid(service_tmp: Path) -> None:
    config = write_config(service_tmp)
    prefix = sandboxed(service_tmp, proc_subset=True)
    result = cli("selftest", "--json", "--skip", "api", config=config, prefix=prefix)
    report = report_of(result)
    assert result.returncode == 0, json.dumps(report, indent=1)


# --- PC/SC through a real pcscd, socket directory read-only ----------------------------------


@pytest.fixture
def pcscd(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A private pcscd (own mount namespace) with vpcd readers; (socket dir, vpcd port)."""
    pytest.importorskip("smartcard")
    driver = vpcd_driver()
    if shutil.which("pcscd", path=SBIN) is None or driver is None:
        skip_or_fail("pcscd or vsmartcard-vpcd missing (scripts/system-deps.sh)")
    assert driver is not None
    prefix = unshare()
    sock_dir = Path(tempfile.mkdtemp(prefix="ca-ops-"))  # short: sun_path is 108 bytes
    port = free_port_pair()
    conf = tmp_path / "reader.conf.d"
    write_vpcd_conf(conf, port, driver)
    log = (tmp_path / "pcscd.log").open("wb")
    proc = subprocess.Popen(
        pcscd_command(conf, sock_dir, prefix), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while not (sock_dir / "pcscd.comm").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "pcscd.log").read_text())
            time.sleep(0.02)
        yield sock_dir, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_pcsc_path_under_the_sandbox(
    tmp_path: Path,
    service_tmp: Path,
    pcscd: tuple[Path, int],
    agent_process: list[AgentProcess],
) -> None:
    from simulator.card_os import SimulatedCard
    from simulator.vpcd import VpcdLink

    sock_dir, port = pcscd
    card = SimulatedCard.create("legal-person-sm2")
    link = VpcdLink(card, port=port)
    link.start()
    try:
        assert link.wait_connected(10), "vpcd did not take the card"
        ca = service_tmp / "eport-ca.pem"
        sm2_ca = card.state.ca("SM2")
        assert sm2_ca is not None
        ca.write_text(sm2_ca.certificate_pem)
        card_extra = f'reader = "Virtual PCD 00 00"\nca_bundle = "{ca}"\ndemo = true'
        config = write_config(service_tmp / "demo", backend="pcsc", card_extra=card_extra)
        env = {"PCSCLITE_CSOCK_NAME": str(sock_dir / "pcscd.comm")}
        # ProtectSystem=strict: the socket's directory is read-only for the agent.
        prefix = sandboxed(service_tmp, read_only=sock_dir)
        start_agent(agent_process, config, prefix=prefix, **env)
        result = cli(
            "selftest",
            "--json",
            "--sign",
            "--pin-stdin",
            config=config,
            input=PIN + "\n",
            prefix=prefix,
            env=clean_env(**env),
        )
        report = report_of(result)
        checks = by_id(report)
        assert result.returncode == 0, json.dumps(report, indent=1)
        assert checks["pcscd"]["status"] == "pass"
        assert checks["reader"]["message"] == "Virtual PCD 00 00"
        assert checks["card"]["details"]["known_atr"] == "card-agent simulated E-Port card"
        assert checks["chain"]["status"] == "pass"
        assert checks["sign"]["status"] == "pass"
        assert report["mode"] == "agent"
        # The same kiosk without demo mode: the virtual reader is a warning.
        production = config.with_name("production.toml")
        production.write_text(config.read_text().replace("demo = true", "demo = false"))
        warned = cli("selftest", "--json", config=production, env=clean_env(**env))
        virtual = by_id(report_of(warned))["virtual_reader"]
        assert warned.returncode == 1
        assert virtual["status"] == "warn"
        assert "vsmartcard-vpcd" in virtual["hint"]
        # readers lists both vpcd slots, card and ATR, while the agent holds the card.
        readers = json.loads(
            cli("readers", "--json", config=production, env=clean_env(**env)).stdout
        )
        assert [r["name"] for r in readers] == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
        assert readers[0]["card_present"] is True
        assert readers[0]["card"] == "card-agent simulated E-Port card"
    finally:
        link.stop()

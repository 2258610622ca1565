"""The package on a booted Debian 12, systemd as PID 1: install, upgrade, run, purge.

One system for the whole module, in this order (each test builds on the one before):

1. apt installs the LOWER version into a minimal rootfs (dependencies from the
   archive), the operator edits the configuration; first boot; a client is paired
   and a signature is logged.
2. apt upgrades to this version in the running system: restarted, pairings, audit
   chain and the edited configuration kept.
3. reboot: card-agent.service active with Type=notify as its own user; the selftest
   passes through pcscd (socket-activated) with the simulated card behind vpcd; the
   polkit rule; `systemd-analyze security`; the sandbox probed from inside the unit;
   a broken configuration fails the start, and the failure carries the journal.
4. the watchdog (SIGSTOP) and a kill -9: restarted, audit chain intact.
5. apt remove keeps the state, a reinstall starts the service, apt purge leaves
   nothing.

Inside the container: the agent on 127.0.0.1:17321, vpcd on 35963, a TCP listener for
the firewall probe on LISTEN_PORT of 127.0.0.1, 192.0.2.10 and .11 (TEST-NET-1
addresses on the container's own loopback: its network is private, nothing leaves it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.system.conftest import ROOT, Checks, Packages, require_prerequisites
from tests.system.container import Container, prune_stale_runs
from tests.system.rootfs import CACHE, base_rootfs

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(900)]

UNIT = "card-agent.service"
PIN = "88888888"  # the simulated legal-person-sm2 card's
ORIGIN = "chrome-extension://abcdefghijklmnopabcdefghijklmnop"
STATE = "/var/lib/card-agent"
CONFIG = "/etc/card-agent/config.toml"
WATCHDOG_S = 30  # WatchdogSec= in systemd/card-agent.service
START_S = 30  # TimeoutStartSec=
LISTEN_PORT = 9077
ALLOWED_ADDRESS = "192.0.2.10"  # in the shipped mqtt-broker.conf example drop-in
OTHER_ADDRESS = "192.0.2.11"
PROBE_DROPIN = "/run/systemd/system/card-agent.service.d/zz-sandbox-probe.conf"
MQTT_DROPIN = "/etc/systemd/system/card-agent.service.d/mqtt-broker.conf"
LISTENER = f"""
import socket
srv = socket.create_server(("0.0.0.0", {LISTEN_PORT}))
while True:
    conn, _ = srv.accept()
    conn.close()
"""


@dataclass
class Kiosk:
    box: Container
    packages: Packages
    checks: Checks
    facts: dict[str, Any] = field(default_factory=dict)

    # --- the service -----------------------------------------------------------------

    def wait_active(self, *, not_pid: str | None = None, timeout: float = START_S + 15) -> str:
        """card-agent's main pid once it is active (a new one if `not_pid`); fails with
        the journal's last lines when it does not come up."""
        deadline = time.monotonic() + timeout
        props: dict[str, str] = {}
        while time.monotonic() < deadline:
            props = self.box.show(UNIT, "ActiveState", "SubState", "MainPID")
            pid = props.get("MainPID", "0")
            if props.get("ActiveState") == "active" and pid not in ("0", not_pid):
                return pid
            time.sleep(0.2)
        raise AssertionError(
            f"{UNIT} not active within {timeout:.0f} s ({props}); journal:\n"
            + self.box.journal(UNIT, lines=40)
        )

    def cli(self, *args: str, input: str | None = None, check: bool = True) -> Any:
        result = self.box.exec("card-agent", *args, input=input, check=check, timeout=60)
        return json.loads(result.stdout) if "--json" in args else result

    def selftest(self, *extra: str, input: str | None = None) -> dict[str, Any]:
        result = self.box.exec(
            "card-agent", "selftest", "--json", *extra, input=input, check=False, timeout=60
        )
        report: dict[str, Any] = json.loads(result.stdout)
        report["_rc"] = result.returncode
        return report

    def audit_log(self) -> bytes:
        return self.box.exec("cat", f"{STATE}/audit.log").stdout.encode()

    def audit_verify(self) -> dict[str, Any]:
        result = self.box.exec("card-agent", "audit", "verify", "--json", check=False)
        verdict: dict[str, Any] = json.loads(result.stdout)
        assert result.returncode == 0, verdict
        assert verdict["ok"], verdict
        return verdict

    def pairings(self) -> dict[str, str]:
        return {c["client_id"]: c["client_name"] for c in self.cli("pair", "list", "--json")}

    def config_sha256(self) -> str:
        return self.box.exec("sha256sum", CONFIG).stdout.split()[0]

    def apt(self, *args: str) -> str:
        with apt_lock():
            result = self.box.exec("apt-get", "-y", "-q", *args, check=False, timeout=300)
        assert result.returncode == 0, f"apt-get {' '.join(args)}:\n{result.stdout}{result.stderr}"
        return result.stdout + result.stderr

    def uid_of(self, pid: str) -> str:
        status = self.box.exec("cat", f"/proc/{pid}/status").stdout
        match = re.search(r"^Uid:\s+(\d+)", status, re.M)
        assert match, status
        return match.group(1)


@contextlib.contextmanager
def apt_lock() -> Iterator[None]:
    """apt in every run's container shares the host's archive cache (and its lock file,
    which apt does not wait for): one checkout's apt at a time."""
    with (CACHE / "apt-archives.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def newly_installed(apt_output: str) -> list[str]:
    match = re.search(r"The following NEW packages will be installed:\n((?:  .*\n)+)", apt_output)
    return match.group(1).split() if match else []


@pytest.fixture(scope="module")
def kiosk(packages: Packages, checks: Checks) -> Iterator[Kiosk]:
    require_prerequisites()
    prune_stale_runs()
    with checks.check("base rootfs: minimal bookworm (mmdebstrap, cached)") as c:
        built: list[str] = []
        lower = base_rootfs(built)
        c.detail = built[0] if built else f"cached: {lower.name}"
    archives = CACHE / "apt-archives"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    box = Container(
        lower,
        f"ca-sys-{os.getpid()}",
        ro_binds={packages.current.parent.parent: "/srv/debs", ROOT / "tests/system": "/srv/test"},
        rw_binds={archives: "/var/cache/apt/archives"},
    )
    previous = f"/srv/debs/{packages.previous.parent.name}/{packages.previous.name}"
    kiosk = Kiosk(box, packages, checks)
    kiosk.facts["current_deb"] = f"/srv/debs/{packages.current.parent.name}/{packages.current.name}"
    try:
        name = packages.previous.name
        with checks.check(f"apt install {name} (dependencies from the archive)") as c:
            env = {"DEBIAN_FRONTEND": "noninteractive"}
            with apt_lock():
                update = box.run("apt-get", "-q", "update", env=env)
                assert update.returncode == 0, update.stdout + update.stderr
                install = box.run("apt-get", "install", "-y", "-q", previous, env=env)
            assert install.returncode == 0, install.stdout + install.stderr
            new = newly_installed(install.stdout)
            for dependency in ("pcscd", "polkitd", "python3.11", "libpcsclite1", "libccid"):
                assert dependency in new, f"{dependency} not installed from the archive: {new}"
            c.detail = f"{len(new)} packages"
        with checks.check("test pieces: vsmartcard-vpcd, simulated card, operator's config edits"):
            with apt_lock():
                vpcd = box.run(
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "vsmartcard-vpcd",
                    env=env,
                )
            assert vpcd.returncode == 0, vpcd.stdout + vpcd.stderr
            prepared = box.run("sh", "-eu", "/srv/test/files/prepare.sh")
            assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        with checks.check("first boot (systemd as PID 1 under systemd-nspawn)") as c:
            c.detail = f"booted in {box.boot():.1f} s"
        yield kiosk
    finally:
        with checks.check("tear the container down") as c:
            took = box.shutdown()
            c.detail = "killed" if took is None else f"powered off in {took:.1f} s"
            box.remove()


# --- 1. the previous version, with state to keep --------------------------------------


def test_previous_version_serves_pairs_and_signs(kiosk: Kiosk) -> None:
    with kiosk.checks.check(f"{kiosk.packages.previous_version}: active after boot; pair; sign"):
        kiosk.wait_active()
        request = kiosk.cli("pair", "request", "--name", "system-test", "--json")
        kiosk.cli("pair", "approve", request["code"])
        claim = kiosk.box.exec(
            "/opt/card-agent/venv/bin/python",
            "-c",
            "import json, sys, urllib.request\n"
            "req = urllib.request.Request('http://127.0.0.1:17321/v1/pair/claim',\n"
            "    data=json.dumps({'request_id': sys.argv[1]}).encode(),\n"
            "    headers={'Content-Type': 'application/json'})\n"
            "print(json.load(urllib.request.urlopen(req, timeout=10))['token'] != '')\n",
            request["request_id"],
        )
        assert claim.stdout.strip() == "True"
        report = kiosk.selftest("--sign", "--pin-stdin", input=PIN + "\n")
        assert report["_rc"] == 0, report
        assert {c["id"]: c["status"] for c in report["checks"]}["sign"] == "pass"
        kiosk.audit_verify()
        kiosk.facts.update(
            pairings=kiosk.pairings(),
            audit=kiosk.audit_log(),
            config=kiosk.config_sha256(),
        )
        assert "system-test" in kiosk.facts["pairings"].values()


# --- 2. the upgrade, in the running system ---------------------------------------------


def test_upgrade_restarts_and_keeps_pairings_audit_and_config(kiosk: Kiosk) -> None:
    with kiosk.checks.check(f"apt upgrade to {kiosk.packages.version}: restarted, state kept") as c:
        old_pid = kiosk.wait_active()
        started = time.monotonic()
        kiosk.apt("install", kiosk.facts["current_deb"])
        took = time.monotonic() - started
        version = kiosk.box.exec("dpkg-query", "-W", "-f=${Version}", "card-agent").stdout
        assert version == kiosk.packages.version
        kiosk.wait_active(not_pid=old_pid)
        assert kiosk.pairings() == kiosk.facts["pairings"]
        assert kiosk.audit_log().startswith(kiosk.facts["audit"])
        kiosk.audit_verify()
        assert kiosk.config_sha256() == kiosk.facts["config"], "the edited config.toml changed"
        override = kiosk.box.exec("dpkg-statoverride", "--list", CONFIG)
        assert override.stdout.split()[:3] == ["root", "card-agent", "640"], override.stdout
        c.detail = f"apt {took:.1f} s; {len(kiosk.facts['pairings'])} pairings kept"


# --- 3. after a reboot: the service as it runs on a kiosk -------------------------------


def test_after_reboot_the_service_is_ready_as_its_own_user(kiosk: Kiosk) -> None:
    with kiosk.checks.check("reboot: card-agent.service active, Type=notify, READY") as c:
        kiosk.box.shutdown()
        booted = kiosk.box.boot()
        pid = kiosk.wait_active()
        props = kiosk.box.show(
            UNIT, "Type", "NotifyAccess", "WatchdogUSec", "NRestarts", "StatusText", "User"
        )
        assert props["Type"] == "notify"
        assert props["NotifyAccess"] == "main"
        assert props["WatchdogUSec"] == f"{WATCHDOG_S}s"
        assert props["NRestarts"] == "0"
        assert props["User"] == "card-agent"
        # STATUS= only comes from the agent's own sd_notify messages; READY=1 is what made
        # a Type=notify unit "active".
        deadline = time.monotonic() + 10
        while "card present" not in props["StatusText"] and time.monotonic() < deadline:
            time.sleep(0.2)
            props = kiosk.box.show(UNIT, "StatusText")
        assert props["StatusText"] == "serving http://127.0.0.1:17321; card present", props
        uid = kiosk.box.exec("id", "-u", "card-agent").stdout.strip()
        assert kiosk.uid_of(pid) == uid != "0"
        c.detail = f"booted in {booted:.1f} s; {props['StatusText']!r}; uid {uid}"


def test_selftest_passes_through_socket_activated_pcscd(kiosk: Kiosk) -> None:
    with kiosk.checks.check("card-agent selftest --json: every check passes via pcscd") as c:
        report = kiosk.selftest()
        statuses = {check["id"]: check["status"] for check in report["checks"]}
        assert report["_rc"] == 0, statuses
        assert report["status"] == "pass", statuses
        assert report["mode"] == "agent"
        for check in ("config", "pcscd", "reader", "card", "certificate", "chain", "pin", "api"):
            assert statuses[check] == "pass", (check, report)
        messages = {check["id"]: check["message"] for check in report["checks"]}
        assert messages["reader"] == "Virtual PCD 00 00"
        assert "pcsc backend" in messages["config"]
        pcscd = kiosk.box.show("pcscd.service", "ActiveState", "TriggeredBy")
        assert pcscd == {"ActiveState": "active", "TriggeredBy": "pcscd.socket"}, pcscd
        assert kiosk.box.show("pcscd.socket", "ActiveState")["ActiveState"] == "active"
        passed = sum(s == "pass" for s in statuses.values())
        c.detail = f"{passed} passed in {report['duration_ms']} ms"


def test_polkit_rule_authorises_the_service_user_only(kiosk: Kiosk) -> None:
    with kiosk.checks.check("polkit rule: pcsc-lite actions for card-agent, not others") as c:
        features = kiosk.box.exec("pcscd", "--version").stdout
        pid = kiosk.wait_active()

        def pkcheck(action: str, process: str) -> int:
            return kiosk.box.exec(
                "pkcheck",
                "--action-id",
                f"org.debian.pcsc-lite.{action}",
                "--process",
                process,
                check=False,
            ).returncode

        assert pkcheck("access_pcsc", pid) == 0
        assert pkcheck("access_card", pid) == 0
        # The control: a session-less user without a rule, as card-agent would be without it.
        kiosk.box.exec("systemd-run", "--unit=ca-test-nobody", "-p", "User=nobody", "sleep", "60")
        try:
            other = kiosk.box.show("ca-test-nobody.service", "MainPID")["MainPID"]
            assert pkcheck("access_pcsc", other) != 0
            assert pkcheck("access_card", other) != 0
        finally:
            kiosk.box.exec("systemctl", "stop", "ca-test-nobody.service", check=False)
        c.detail = (
            "pcscd built with polkit"
            if "polkit" in features
            else "Debian 12's pcscd asks no polkit: checked with pkcheck against polkitd"
        )


def test_security_exposure_matches_the_docs(kiosk: Kiosk) -> None:
    with kiosk.checks.check("systemd-analyze security (online) equals docs/operations.md") as c:
        docs = (ROOT / "docs" / "operations.md").read_text()
        scores = {}
        for unit in (UNIT, "card-agent-demo.service"):
            out = kiosk.box.exec("systemd-analyze", "security", "--no-pager", unit).stdout
            match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", out)
            assert match, out
            scores[unit] = match.group(1)
        claim = re.search(
            r"under\s+systemd\s+as\s+PID\s+1\s+\(tests/system\):\s+`card-agent\.service`\s+"
            r"(\d+\.\d+),\s+`card-agent-demo\.service`\s+(\d+\.\d+)",
            docs,
        )
        assert claim, "docs/operations.md must record the score measured under real systemd"
        assert (claim.group(1), claim.group(2)) == (scores[UNIT], scores["card-agent-demo.service"])
        c.detail = ", ".join(f"{u} {s}" for u, s in scores.items())


@contextlib.contextmanager
def listener(kiosk: Kiosk) -> Iterator[None]:
    """A plain TCP listener (no sandbox) on every test address of the container."""
    box = kiosk.box
    for address in (ALLOWED_ADDRESS, OTHER_ADDRESS):
        box.exec("ip", "address", "add", f"{address}/32", "dev", "lo", check=False)
    box.exec("systemd-run", "--unit=ca-test-listener", "/usr/bin/python3.11", "-c", LISTENER)
    try:
        box.sh(
            f"for i in $(seq 50); do ss -Htln 'sport = :{LISTEN_PORT}' | grep -q . && exit 0;"
            " sleep 0.1; done; exit 1"
        )
        yield
    finally:
        box.exec("systemctl", "stop", "ca-test-listener.service", check=False)


def test_sandbox_holds_under_real_systemd(kiosk: Kiosk) -> None:
    with kiosk.checks.check("sandbox: writes only to its state, loopback + drop-in only") as c:
        box = kiosk.box
        hosts = ("127.0.0.1", ALLOWED_ADDRESS, OTHER_ADDRESS)
        output = f"{STATE}/sandbox-probe.json"
        with listener(kiosk):
            # The control: outside the unit every address answers.
            control = json.loads(
                box.exec(
                    "/usr/bin/python3.11",
                    "/srv/test/sandbox_probe.py",
                    "--connect-only",
                    "-",
                    str(LISTEN_PORT),
                    *hosts,
                ).stdout
            )
            assert set(control["connect"].values()) == {"connected"}, control["connect"]
            # The operator's documented drop-in for an MQTT broker at 192.0.2.10, and the
            # probe as an ExecStartPre= of the real unit: same sandbox as the agent.
            box.exec(
                "install",
                "-D",
                "-m",
                "0644",
                "/opt/card-agent/share/examples/mqtt-broker.conf",
                MQTT_DROPIN,
            )
            box.write(
                PROBE_DROPIN,
                "[Service]\nExecStartPre=/opt/card-agent/venv/bin/python "
                f"/srv/test/sandbox_probe.py {output} {LISTEN_PORT} {' '.join(hosts)}\n",
            )
            try:
                old = kiosk.wait_active()
                box.exec("systemctl", "daemon-reload")
                box.exec("systemctl", "restart", UNIT, timeout=90)
                kiosk.wait_active(not_pid=old)
                probe = json.loads(box.exec("cat", output).stdout)
            finally:
                box.exec("rm", "-f", PROBE_DROPIN, MQTT_DROPIN, output)
                box.exec("systemctl", "daemon-reload")
                box.exec("systemctl", "restart", UNIT, timeout=90)
        kiosk.wait_active()

        uid = box.exec("id", "-u", "card-agent").stdout.strip()
        status = probe["status"]
        assert status["Uid"].split()[0] == uid, status
        assert status["CapEff"] == "0000000000000000", status
        assert status["NoNewPrivs"] == "1", status
        assert status["Seccomp"] == "2", status
        writes = probe["writes"]
        assert writes.pop(STATE) == "written"
        private = {d: writes.pop(d) for d in ("/tmp", "/var/tmp")}  # PrivateTmp=
        leaked = [d for d, outcome in writes.items() if outcome == "written"]
        assert leaked == [], f"the sandbox let the agent write to {leaked}"
        # Whatever it could write outside the state directory is its own private mount:
        # invisible to the rest of the system.
        for directory, outcome in private.items():
            if outcome == "written":
                seen = box.exec("test", "-e", f"{directory}/{probe['marker']}", check=False)
                assert seen.returncode != 0, f"{directory} is not private to the unit"
        assert probe["connect"]["127.0.0.1"] == "connected"
        assert probe["connect"][ALLOWED_ADDRESS] == "connected", probe["connect"]
        assert probe["connect"][OTHER_ADDRESS] in ("timeout", "EPERM"), probe["connect"]
        assert probe["sockets"] == {
            "AF_NETLINK": "EAFNOSUPPORT",
            "AF_PACKET": "EAFNOSUPPORT",
            "AF_UNIX": "opened",
        }, probe["sockets"]
        assert probe["setpriority"] == "EPERM"
        assert probe["wx_memory"] == "EPERM"
        c.detail = (
            f"{len(writes)} paths refused ({'/'.join(sorted(set(writes.values())))}), "
            f"{OTHER_ADDRESS}: {probe['connect'][OTHER_ADDRESS]}"
        )


def test_a_service_that_does_not_come_up_fails_with_its_journal(kiosk: Kiosk) -> None:
    with kiosk.checks.check("a broken config: the start fails, the failure shows the journal"):
        box = kiosk.box
        box.exec("cp", "-p", CONFIG, f"{CONFIG}.keep")
        try:
            box.sh(f"printf '\\n[no_such_section]\\nkey = 1\\n' >> {CONFIG}")
            old = kiosk.wait_active()
            restart = box.exec("systemctl", "restart", UNIT, check=False, timeout=90)
            assert restart.returncode != 0
            with pytest.raises(AssertionError) as failure:
                kiosk.wait_active(not_pid=old, timeout=5)
            message = str(failure.value)
            assert "not active within 5 s" in message
            assert "no_such_section" in message, message  # the agent's own error, from the journal
        finally:
            box.exec("mv", f"{CONFIG}.keep", CONFIG)
            box.exec("systemctl", "reset-failed", UNIT, check=False)
            box.exec("systemctl", "restart", UNIT, timeout=90)
        kiosk.wait_active()


# --- 4. the watchdog and a crash ------------------------------------------------------


def test_watchdog_restarts_a_frozen_agent(kiosk: Kiosk) -> None:
    what = f"watchdog: SIGSTOP -> restarted within WatchdogSec={WATCHDOG_S}s + margin"
    with kiosk.checks.check(what) as c:
        pid = kiosk.wait_active()
        restarts = int(kiosk.box.show(UNIT, "NRestarts")["NRestarts"])
        kiosk.box.sh(f"kill -STOP {pid}")
        started = time.monotonic()
        new = kiosk.wait_active(not_pid=pid, timeout=WATCHDOG_S + 20)
        took = time.monotonic() - started
        assert took <= WATCHDOG_S + 15, took
        assert int(kiosk.box.show(UNIT, "NRestarts")["NRestarts"]) == restarts + 1
        journal = kiosk.box.journal(UNIT, lines=80)
        assert f"Watchdog timeout (limit {WATCHDOG_S}s)" in journal, journal
        assert "Failed with result 'watchdog'" in journal
        c.detail = f"pid {pid} -> {new} after {took:.1f} s"


def test_kill_9_restarts_and_the_audit_chain_holds(kiosk: Kiosk) -> None:
    with kiosk.checks.check("kill -9: restarted; audit chain verifies; signs again") as c:
        pid = kiosk.wait_active()
        before = kiosk.audit_log()
        kiosk.box.sh(f"kill -KILL {pid}")
        started = time.monotonic()
        new = kiosk.wait_active(not_pid=pid, timeout=30)
        took = time.monotonic() - started
        report = kiosk.selftest("--sign", "--pin-stdin", input=PIN + "\n")
        assert report["_rc"] == 0, report
        after = kiosk.audit_log()
        assert after.startswith(before)
        assert len(after) > len(before)
        verdict = kiosk.audit_verify()
        c.detail = f"restarted in {took:.1f} s (pid {new}); {verdict['records']} records valid"


# --- 5. remove, reinstall, purge -------------------------------------------------------


def test_remove_stops_and_keeps_state_reinstall_starts(kiosk: Kiosk) -> None:
    with kiosk.checks.check("apt remove: stopped, state kept; apt install: started") as c:
        box = kiosk.box
        audit = kiosk.audit_log()
        kiosk.apt("remove", "card-agent")
        assert box.show(UNIT, "ActiveState")["ActiveState"] == "inactive"
        assert box.exec("test", "-e", "/opt/card-agent/venv", check=False).returncode != 0
        assert kiosk.audit_log() == audit
        assert box.exec("test", "-f", f"{STATE}/pairing.json", check=False).returncode == 0
        assert box.exec("getent", "passwd", "card-agent", check=False).returncode == 0
        assert box.exec("test", "-f", CONFIG, check=False).returncode == 0
        started = time.monotonic()
        kiosk.apt("install", kiosk.facts["current_deb"])
        kiosk.wait_active()
        took = time.monotonic() - started
        assert kiosk.pairings() == kiosk.facts["pairings"]
        kiosk.audit_verify()
        c.detail = f"reinstalled and active in {took:.1f} s"


def test_purge_leaves_no_user_state_or_unit(kiosk: Kiosk) -> None:
    with kiosk.checks.check("apt purge: no user, no state, no unit left") as c:
        box = kiosk.box
        kiosk.apt("purge", "card-agent")
        assert box.show(UNIT, "LoadState")["LoadState"] == "not-found"
        assert box.show("card-agent-demo.service", "LoadState")["LoadState"] == "not-found"
        for missing in ("getent passwd card-agent", "getent group card-agent"):
            assert box.exec(*missing.split(), check=False).returncode != 0, missing
        leftovers = box.sh(
            "find / -xdev \\( -path /proc -o -path /srv \\) -prune -o -name '*card-agent*' -print"
        ).stdout.split()
        # The CA bundle is the operator's file (prepare.sh put it there): it stays.
        assert leftovers == ["/etc/card-agent"], leftovers
        assert box.exec("ls", "/etc/card-agent").stdout.split() == ["eport-ca.pem"]
        assert "card-agent" not in box.exec("dpkg-statoverride", "--list").stdout
        assert box.exec("dpkg-query", "-W", "card-agent", check=False).returncode != 0
        c.detail = "only the operator's /etc/card-agent/eport-ca.pem remains"


def test_journal_has_no_tracebacks(kiosk: Kiosk) -> None:
    with kiosk.checks.check("journal: no Python traceback from card-agent"):
        journal = kiosk.box.exec(
            "journalctl", "--no-pager", "-o", "cat", "-t", "card-agent", check=False
        ).stdout
        assert "Traceback" not in journal, journal[-3000:]

"""A kiosk as it boots: Chromium started by itself on a fresh profile, straight on the
Single Window page, with managed policy as an operator installs it.

- `SingleWindowSite`: https://www.singlewindow.cn as the tests map it: a TLS server on
  127.0.0.1 with a throwaway certificate, serving a card-login page that uses a stand-in
  for the official page library (tests/e2e/singlewindow/) and reports what its first
  call got back (POST /report).
- `KioskChromium`: /usr/bin/chromium as a subprocess (not launched by Playwright, whose
  own flags include --disable-extensions and a first about:blank tab), with the
  page as its first URL, the host mapped by --host-resolver-rules (every other name
  resolves to nothing, so no request leaves 127.0.0.1), and its managed policy in a
  private mount namespace: `unshare --mount` bind-mounts a test directory over
  /etc/chromium for Chromium alone, so nothing of the machine's own /etc/chromium is
  changed or read, and nothing outlives the process. DevTools listen on a free port on
  127.0.0.1 (Playwright attaches for screenshots) unless the policy forbids them.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import CHROMIUM, PIN, free_port
from tests.support.server import ServerThread

SITE_DIR = Path(__file__).resolve().parent / "singlewindow"
SINGLE_WINDOW_HOST = "www.singlewindow.cn"
SINGLE_WINDOW_URL = f"https://{SINGLE_WINDOW_HOST}/"
OFFICIAL_CLIENT_HOST = "wss.singlewindow.cn"  # the official client's wss:// name, port 61231
# What a kiosk starts Chromium with (the policy does the rest); DevTools for the test.
KIOSK_FLAGS = [
    "--headless",
    "--kiosk",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--lang=zh-CN",
    "--window-size=1100,900",
    "--remote-debugging-port=0",
    "--ignore-certificate-errors",  # the throwaway certificate; tests only
]


def make_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `hosts` (Chromium runs with certificate errors
    ignored: only the name mapping matters)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "site.crt", directory / "site.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class SingleWindowSite:
    """The Single Window stand-in; `reports` collects what each page load reported."""

    port: int
    cert: Path
    key: Path
    pin: str = PIN
    loads: int = 0
    reports: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import HTMLResponse, Response
        from starlette.routing import Mount, Route
        from starlette.staticfiles import StaticFiles

        template = (SITE_DIR / "index.html").read_text(encoding="utf-8")

        async def index(_: Request) -> HTMLResponse:
            self.loads += 1
            page = (
                template.replace("{challenge}", secrets.token_hex(16).upper())
                .replace("{pin}", self.pin)
                .replace("{load}", str(self.loads))
            )
            return HTMLResponse(page, headers={"cache-control": "no-store"})

        async def report(request: Request) -> Response:
            self.reports.append(await request.json())
            return Response(status_code=204)

        async def favicon(_: Request) -> Response:
            return Response(status_code=204)

        return Starlette(
            routes=[
                Route("/", index),
                Route("/report", report, methods=["POST"]),
                Route("/favicon.ico", favicon),
                Mount("/static", StaticFiles(directory=str(SITE_DIR))),
            ]
        )

    def wait_for_report(self, timeout_s: float, *, ok: bool = True) -> dict[str, Any]:
        """The first report (a successful one when `ok`), or AssertionError with all."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = [r for r in self.reports if r.get("ok") or not ok]
            if done:
                return done[0]
            time.sleep(0.05)
        what = "successful report" if ok else "report"
        raise AssertionError(f"no {what} in {timeout_s} s: {self.reports}")


@contextlib.contextmanager
def single_window_site(directory: Path) -> Iterator[SingleWindowSite]:
    cert, key = make_certificate(directory, [SINGLE_WINDOW_HOST, OFFICIAL_CLIENT_HOST])
    site = SingleWindowSite(free_port(), cert, key)
    with ServerThread.on_port(site.app(), site.port, ssl_certfile=str(cert), ssl_keyfile=str(key)):
        yield site


def resolver_rules(site_port: int, official_client_port: int | None = None) -> str:
    """Names as the kiosk test sees them: the Single Window on our TLS server, the
    official client's name on a stand-in (when given), everything else nowhere."""
    rules = [f"MAP {SINGLE_WINDOW_HOST}:443 127.0.0.1:{site_port}"]
    if official_client_port is not None:
        rules.append(f"MAP {OFFICIAL_CLIENT_HOST}:61231 127.0.0.1:{official_client_port}")
    rules += ["MAP * ~NOTFOUND", "EXCLUDE 127.0.0.1"]
    return ", ".join(rules)


def mount_namespaces_work() -> str | None:
    """None if `unshare --mount` can bind-mount here (root or CAP_SYS_ADMIN), else why not."""
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount --bind / /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.strip()}"
    if not Path("/etc/chromium").is_dir():
        return "/etc/chromium does not exist (Debian's chromium package creates it)"
    return None


@dataclass
class KioskChromium:
    process: subprocess.Popen[bytes]
    profile: Path
    log: Path

    def devtools_port(self, timeout_s: float = 20) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"Chromium exited ({self.process.returncode}): {self.tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(active.read_text().split()[0])
            time.sleep(0.05)
        raise AssertionError(f"Chromium's DevTools did not start: {self.tail()}")

    def devtools_targets(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.devtools_port()}/json/list"
        with urllib.request.urlopen(url, timeout=5) as answer:
            targets: list[dict[str, Any]] = json.load(answer)
        return targets

    def attach_error(self, target_id: str) -> str | None:
        """Try to attach DevTools to a target: None if allowed, else Chromium's refusal."""
        from websockets.sync.client import connect

        url = f"http://127.0.0.1:{self.devtools_port()}/json/version"
        with urllib.request.urlopen(url, timeout=5) as answer:
            endpoint = json.load(answer)["webSocketDebuggerUrl"]
        with connect(endpoint, max_size=None, open_timeout=5) as ws:
            ws.send(
                json.dumps(
                    {
                        "id": 1,
                        "method": "Target.attachToTarget",
                        "params": {"targetId": target_id, "flatten": True},
                    }
                )
            )
            while True:
                reply = json.loads(ws.recv(timeout=10))
                if reply.get("id") == 1:
                    break
        if "error" in reply:
            return str(reply["error"].get("message", reply["error"]))
        return None

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()
            return "\n".join(line for line in text if "dbus" not in line)[-4000:]
        return ""


@contextlib.contextmanager
def kiosk_chromium(
    directory: Path,
    *,
    first_url: str,
    policy: dict[str, Any],
    resolver: str,
    extension_dir: Path | None = None,
    background_networking: bool = False,
) -> Iterator[KioskChromium]:
    """Chromium on a fresh profile in `directory`, started on `first_url` with `policy`
    as its only managed policy file. `extension_dir`: also load that folder unpacked.
    `background_networking`: needed for force-installation from an update URL (names
    still resolve to 127.0.0.1 or nowhere)."""
    etc = directory / "etc-chromium"
    (etc / "policies" / "managed").mkdir(parents=True)
    (etc / "policies" / "recommended").mkdir()
    (etc / "policies" / "managed" / "kiosk.json").write_text(json.dumps(policy, indent=2))
    master = Path("/etc/chromium/master_preferences")
    if master.exists():
        shutil.copy(master, etc / "master_preferences")
    profile = directory / "profile"
    log = directory / "chromium.log"
    args = [
        str(CHROMIUM),
        *KIOSK_FLAGS,
        f"--user-data-dir={profile}",
        f"--host-resolver-rules={resolver}",
    ]
    if not background_networking:
        args.append("--disable-background-networking")
    if extension_dir is not None:
        args += [
            f"--load-extension={extension_dir}",
            f"--disable-extensions-except={extension_dir}",
        ]
    args.append(first_url)
    # /etc/chromium is replaced for this process tree only; the namespace ends with it.
    script = 'mount --bind "$0" /etc/chromium && exec "$@"'
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(etc), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    browser = KioskChromium(process, profile, log)
    try:
        yield browser
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Chromium and its helpers: they share the session this test started for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # helpers left behind by a crash


def screenshot_page(browser: KioskChromium, url_prefix: str, path: Path) -> None:
    """Attach Playwright to the running Chromium and photograph the page at `url_prefix`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        connected = p.chromium.connect_over_cdp(f"http://127.0.0.1:{browser.devtools_port()}")
        try:
            every = [pg for c in connected.contexts for pg in c.pages]
            pages = [pg for pg in every if pg.url.startswith(url_prefix)]
            assert pages, f"no page at {url_prefix}: {[pg.url for pg in every]}"
            pages[0].screenshot(path=str(path), full_page=True)
        finally:
            # Drop the DevTools connection only: the test stops Chromium itself.
            with contextlib.suppress(Exception):
                connected.close()

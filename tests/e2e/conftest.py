"""End-to-end tier: real headless Chromium -> the extension -> the agent -> the card.

Fixtures:
- `agent_config`: the agent's configuration (a free port, a temporary state directory,
  the pinned extension origin allowed, the built-in simulated card). Override it (or
  `card_config`) to run the same tests on another backend, e.g. pcscd + vpcd.
- `agent`: the running agent (uvicorn in a thread); `.runtime` exposes the runtime, so
  `agent.runtime.backend.pull_card()` / `insert_card()` work on the simulated card.
- `practice`: the practice Single Window on a free port.
- `kiosk`: Chromium with the unpacked extension, configured to use the agent above;
  helpers for the extension's window, pairing and screenshots.

Chromium is Debian's (/usr/bin/chromium), driven by the `playwright` pip package; no
browser is downloaded. Screenshots go to artifacts/screenshots/<test>/ (<test>-pcsc/ for
the PC/SC runs).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.config import Config
from agent.pairing import PairingStore
from tests.support.audit import audit_records, signatures
from tests.support.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
EXTENSION_DIR = ROOT / "extension"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = Path(os.environ.get("CARD_AGENT_CHROMIUM", "/usr/bin/chromium"))
# Pinned by the manifest's "key" (docs/extension.md); test_extension_id checks it.
EXTENSION_ID = "omaiijkcfgofenpjejlmcgioghailfol"
EXTENSION_ORIGIN = f"chrome-extension://{EXTENSION_ID}"
DIALOG_PREFIX = f"{EXTENSION_ORIGIN}/ui/dialog.html"
PIN = "88888888"  # the simulated legal-person card's factory PIN
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--lang=zh-CN",
]


def _missing() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (Debian: chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("playwright (pip install '.[test]')")
    return missing


@pytest.fixture(scope="session")
def _prerequisites() -> None:
    missing = _missing()
    if missing:
        message = "e2e tier needs: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- the agent -------------------------------------------------------------------------


@pytest.fixture
def card_config() -> dict[str, Any]:
    """The [card] section; the simulated card, in memory (fresh for every test)."""
    return {"backend": "simulated", "profile": "legal-person-sm2", "sim_state_file": ""}


@pytest.fixture
def agent_config(tmp_path: Path, card_config: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "server": {"port": free_port()},
        "security": {"allowed_origins": [EXTENSION_ORIGIN]},
        "card": card_config,
        "paths": {"state_dir": str(tmp_path / "agent-state")},
    }
    if "compat" in Config.model_fields:
        # The official-protocol endpoint; the extension's bridge connects with its own
        # origin (the bridge itself checks which pages may use it).
        data["compat"] = {
            "enabled": True,
            "port": free_port(),
            "allowed_origins": [EXTENSION_ORIGIN],
            "allow_singlewindow": False,
        }
    return Config.model_validate(data)


@dataclass
class AgentHandle:
    config: Config
    runtime: Any  # agent.runtime.Runtime

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config.server.port}"

    @property
    def compat_url(self) -> str | None:
        compat = getattr(self.config, "compat", None)
        if compat is None or not getattr(compat, "enabled", False):
            return None
        return f"ws://127.0.0.1:{compat.port}"

    def pairing_store(self) -> PairingStore:
        """A separate store on the same file: what `card-agent pair ...` uses."""
        from agent.runtime import pairing_path

        return PairingStore(pairing_path(self.config))

    # Card handling for tests; the simulated backend does it in process. A PC/SC variant
    # of these fixtures overrides these two (vpcd: disconnect / connect a virtual card).
    def pull_card(self) -> None:
        self.runtime.backend.pull_card()

    def insert_card(self, profile: str | None = None) -> None:
        card = None
        if profile is not None:
            from simulator.card_os import SimulatedCard

            card = SimulatedCard.create(profile)
        self.runtime.backend.insert_card(card)

    def sim_card(self) -> Any:
        """The software card behind the agent (simulator.card_os.SimulatedCard): in
        process here, behind vpcd in the PC/SC variant."""
        return self.runtime.backend.card

    def audit_records(self) -> list[dict[str, Any]]:
        from agent.runtime import audit_path

        return audit_records(audit_path(self.config), self.runtime.audit)

    def signatures(self) -> list[dict[str, Any]]:
        """Each signature as one record: its request merged with its outcome."""
        return signatures(self.audit_records())


@pytest.fixture
def agent(agent_config: Config) -> Iterator[AgentHandle]:
    from agent.runtime import build_runtime

    runtime = build_runtime(agent_config)
    with ServerThread.on_port(runtime.app, agent_config.server.port):
        yield AgentHandle(agent_config, runtime)


# --- the practice Single Window ----------------------------------------------------------


@dataclass
class PracticeHandle:
    port: int

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"


@pytest.fixture
def practice_read_seconds() -> float:
    return 2.0


@pytest.fixture
def practice(practice_read_seconds: float) -> Iterator[PracticeHandle]:
    from practice.app import create_practice_app

    port = free_port()
    app = create_practice_app(read_seconds=practice_read_seconds, approval_delay_s=0.5)
    with ServerThread.on_port(app, port):
        yield PracticeHandle(port)


# --- an integrator's page (allowed origin) framing a foreign page (unlisted origin) ----------

HOST_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<title>集成方页面</title>
<style>body{font-family:"Noto Sans CJK SC",sans-serif;font-size:18px;margin:24px}
iframe{width:100%;height:220px;border:2px dashed #c62828}</style></head>
<body><h1>集成方页面（允许的来源）</h1>
<p>下面的框架来自未列入允许名单的网站：</p><iframe id="foreign" src="FRAME_URL"></iframe>
<script type="module">
import { CardAgentClient } from "/card-agent-client.js";
window.client = new CardAgentClient();
window.events = [];
window.client.onEvent((e) => window.events.push(e));
</script></body></html>"""

FRAME_PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"></head>
<body style="font-family:'Noto Sans CJK SC',sans-serif;background:#fdecea">
<p>未列入名单的网站（框架内）</p><script>
window.heard = [];
window.addEventListener("message", (e) => window.heard.push(e.data));
</script></body></html>"""


@dataclass
class IntegratorHandle:
    host_port: int
    frame_port: int

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.host_port}"

    @property
    def frame_origin(self) -> str:
        return f"http://127.0.0.1:{self.frame_port}"


def _integrator_app(frame_url: str) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, HTMLResponse
    from starlette.routing import Route

    client_js = ROOT / "practice" / "static" / "card-agent-client.js"

    async def host(_: Any) -> HTMLResponse:
        return HTMLResponse(HOST_PAGE.replace("FRAME_URL", frame_url))

    async def frame(_: Any) -> HTMLResponse:
        return HTMLResponse(FRAME_PAGE)

    async def script(_: Any) -> FileResponse:
        return FileResponse(client_js, media_type="text/javascript")

    return Starlette(
        routes=[
            Route("/", host),
            Route("/frame", frame),
            Route("/card-agent-client.js", script),
        ]
    )


@pytest.fixture
def integrator() -> Iterator[IntegratorHandle]:
    handle = IntegratorHandle(free_port(), free_port())
    app = _integrator_app(f"{handle.frame_origin}/frame")
    with ServerThread.on_port(app, handle.host_port), ServerThread.on_port(app, handle.frame_port):
        yield handle


# --- Chromium with the extension ----------------------------------------------------------


@dataclass
class Kiosk:
    context: Any  # playwright BrowserContext
    worker: Any  # the extension's service worker
    agent: AgentHandle
    shots: Path
    seen: set[int] = field(default_factory=set)
    counter: int = 0

    def shot(self, page: Any, name: str) -> Path:
        self.counter += 1
        path = self.shots / f"{self.counter:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def pump(self, ms: float = 50) -> None:
        """Let Playwright process browser events (time.sleep would not: the sync API
        only dispatches them while a call is in flight)."""
        pages = [p for p in self.context.pages if not p.is_closed()]
        if pages:
            pages[0].wait_for_timeout(ms)
        else:
            time.sleep(ms / 1000)

    def next_dialog(self, timeout_s: float = 15) -> Any:
        """The extension's next window (pairing or signing)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for page in self.context.pages:
                if id(page) not in self.seen and page.url.startswith(DIALOG_PREFIX):
                    self.seen.add(id(page))
                    page.set_viewport_size({"width": 560, "height": 820})  # the popup's size
                    page.wait_for_load_state("domcontentloaded")
                    return page
            self.pump()
        raise AssertionError("the extension's window did not open")

    def no_dialog(self, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if any(
                p.url.startswith(DIALOG_PREFIX) and id(p) not in self.seen
                for p in self.context.pages
            ):
                return False
            self.pump()
        return True

    def approve_pairing(self, dialog: Any, name: str = "pairing") -> str:
        """Read the code the extension shows and approve it as the operator would."""
        code_el = dialog.locator("[data-testid=pair-code]")
        dialog.wait_for_function(
            "() => /^[0-9]{4}-[0-9]{4}$/.test(document.querySelector('#pair-code').textContent)"
        )
        code = code_el.inner_text().strip()
        self.shot(dialog, name)
        self.agent.pairing_store().approve(code)
        return code

    def confirm_sign(self, dialog: Any, pin: str | None = PIN, name: str | None = None) -> None:
        """In the signing window: type the PIN if asked, confirm, wait for it to close."""
        dialog.wait_for_selector("#view-sign:not([hidden])")
        if pin is not None and dialog.locator("#pin-section").is_visible():
            dialog.fill("#pin", pin)
        if name:
            self.shot(dialog, name)
        with dialog.expect_event("close", timeout=15000):
            dialog.click("#confirm")

    def configure(self, **settings: Any) -> None:
        self.worker.evaluate(
            "async (s) => { await chrome.storage.local.set({settings: s});"
            " await globalThis.reconfigure(); }",
            settings,
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def screenshots_dir(request: pytest.FixtureRequest) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    if request.node.get_closest_marker("pcsc") is not None:
        name += "-pcsc"  # the same flow again through pcscd + vpcd: keep both sets
    path = SCREENSHOTS / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def chromium_context(_prerequisites: None, screenshots_dir: Path) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="card-agent-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                profile,
                executable_path=str(CHROMIUM),
                headless=True,
                args=[
                    *CHROMIUM_FLAGS,
                    f"--load-extension={EXTENSION_DIR}",
                    f"--disable-extensions-except={EXTENSION_DIR}",
                ],
                viewport={"width": 1100, "height": 900},
                locale="zh-CN",
            )
            context.set_default_timeout(15000)
            try:
                yield context
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def extension_worker(context: Any) -> Any:
    for worker in context.service_workers:
        if worker.url.startswith(EXTENSION_ORIGIN):
            return worker
    return context.wait_for_event(
        "serviceworker", predicate=lambda w: w.url.startswith(EXTENSION_ORIGIN), timeout=15000
    )


@pytest.fixture
def kiosk_settings(agent: AgentHandle, practice: PracticeHandle) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "agentUrl": agent.url,
        "pageOrigins": [practice.origin],
        "bridgeOrigins": [practice.origin],
        "keypad": "off",
    }
    if agent.compat_url:
        settings["compatUrl"] = agent.compat_url
    return settings


@pytest.fixture
def kiosk(
    chromium_context: Any,
    agent: AgentHandle,
    kiosk_settings: dict[str, Any],
    screenshots_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Kiosk]:
    kiosk = Kiosk(chromium_context, extension_worker(chromium_context), agent, screenshots_dir)
    kiosk.configure(**kiosk_settings)
    yield kiosk
    if request.node.stash.get(_FAILED, False):  # what every window showed at the failure
        for n, page in enumerate(p for p in chromium_context.pages if not p.is_closed()):
            with contextlib.suppress(Exception):
                page.screenshot(path=str(screenshots_dir / f"failed-{n}.png"), full_page=True)

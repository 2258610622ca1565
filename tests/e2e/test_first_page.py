"""The kiosk as it really starts (issue 12): Chromium starts by itself on a fresh
profile, straight on https://www.singlewindow.cn, and the page's library opens
wss://wss.singlewindow.cn:61231 while the page is still loading. That very first
document must already be bridged: its first call gets the card number, the
certificate and a login signature that verifies.

The extension is loaded unpacked (its pinned ID); its settings (the agent's ports, free
ones here) come from managed policy, as on a kiosk. wss.singlewindow.cn resolves to
nothing: only the extension's bridge can answer the page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from card.crypto.certs import parse_certificate
from card.crypto.sm2 import sm2_verify
from tests.e2e.conftest import EXTENSION_DIR, EXTENSION_ID, EXTENSION_ORIGIN, AgentHandle, free_port
from tests.e2e.kiosk_start import (
    SINGLE_WINDOW_URL,
    SingleWindowSite,
    kiosk_chromium,
    mount_namespaces_work,
    resolver_rules,
    screenshot_page,
    single_window_site,
)

pytestmark = pytest.mark.e2e

FIRST_CALL_TIMEOUT_S = 30


@pytest.fixture
def kiosk_prerequisites(_prerequisites: None) -> None:
    reason = mount_namespaces_work()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SingleWindowSite]:
    with single_window_site(tmp_path) as s:
        yield s


def extension_policy(agent: AgentHandle, extension_id: str, **settings: Any) -> dict[str, Any]:
    """The extension's managed settings (its 3rd-party policy, managed_schema.json)."""
    values: dict[str, Any] = {"agentUrl": agent.url, "keypad": "off", **settings}
    if agent.compat_url:
        values["compatUrl"] = agent.compat_url
    return {"3rdparty": {"extensions": {extension_id: values}}}


def check_first_call(report: dict[str, Any], agent: AgentHandle) -> None:
    """The page's first call, checked against the card itself."""
    card = agent.sim_card()
    assert report["ok"], report
    assert report["cardId"] == card.state.card_number
    cert_der = base64.b64decode(report["certificate"])
    assert cert_der == card.state.sign_cert
    cert = parse_certificate(cert_der)
    assert report["certificateNumber"] == cert.serial_hex
    assert cert.sm2_point is not None
    signature = base64.b64decode(report["signature"])
    challenge = report["challenge"].encode()
    assert sm2_verify(cert.sm2_point, challenge, signature)
    assert not sm2_verify(cert.sm2_point, challenge + b"x", signature)


def test_first_page_after_start_is_bridged(
    kiosk_prerequisites: None,
    agent: AgentHandle,
    site: SingleWindowSite,
    tmp_path: Path,
    screenshots_dir: Path,
) -> None:
    assert agent.compat_url is not None
    with kiosk_chromium(
        tmp_path,
        first_url=SINGLE_WINDOW_URL,
        policy=extension_policy(agent, EXTENSION_ID),
        resolver=resolver_rules(site.port),
        extension_dir=EXTENSION_DIR,
    ) as browser:
        try:
            report = site.wait_for_report(FIRST_CALL_TIMEOUT_S, ok=False)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{browser.tail()}") from None
        screenshot_page(browser, SINGLE_WINDOW_URL, screenshots_dir / "01-first-page.png")
    # The very first document, never reloaded, had the bridge before its scripts ran,
    # and its first connection attempt went through.
    assert report["load"] == 1, report
    assert site.loads == 1
    assert report["bridgedAtStart"] is True, report
    assert report["url"] == "wss://wss.singlewindow.cn:61231"
    assert report["connects"] == 1, report
    check_first_call(report, agent)
    # The endpoint saw the extension on the socket; the bridge named the page.
    signs = [a for a in agent.signatures() if a["result"] == "ok"]
    assert len(signs) == 1
    assert signs[0]["origin"] == EXTENSION_ORIGIN
    assert signs[0]["purpose"] == "login"
    assert "https://www.singlewindow.cn" in signs[0]["title"]


# --- a Single Window origin the policy does not bridge keeps the browser's socket -----


class OfficialClientStandIn:
    """Something answering at wss://wss.singlewindow.cn:61231 the way the official
    Windows client would, with a card number no test card has."""

    CARD_ID = "NATIVE-CLIENT-0001"

    def __init__(self, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.origins: list[str | None] = []
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _serve(self, ws: Any) -> None:
        self.origins.append(ws.request.headers.get("Origin"))
        ok = {"Result": True, "Data": ["握手成功"], "Error": []}
        await ws.send(json.dumps({"_id": 0, "_method": "open", "_status": "00", "_args": ok}))
        async for frame in ws:
            request = json.loads(frame)
            answer = {"Result": False, "Data": [], "Error": ["stand-in", "Err:Custom51590"]}
            if request["_method"] == "cus-sec_SpcGetCardID":
                answer = {"Result": True, "Data": [self.CARD_ID], "Error": []}
            reply = {"_id": request["_id"], "_method": request["_method"], "_status": "00"}
            await ws.send(json.dumps({**reply, "_args": answer}))

    def __enter__(self) -> OfficialClientStandIn:
        from websockets.asyncio.server import serve

        self._thread.start()

        async def start() -> Any:
            return await serve(self._serve, "127.0.0.1", self.port, ssl=self._context)

        self._server = asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self._server.close()
            await self._server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def test_unbridged_single_window_origin_keeps_the_native_socket(
    kiosk_prerequisites: None,
    agent: AgentHandle,
    site: SingleWindowSite,
    tmp_path: Path,
    screenshots_dir: Path,
) -> None:
    """The manifest puts the wrapper on every Single Window page; a policy that leaves
    www.singlewindow.cn off `bridgeOrigins` gets the page the browser's own socket to
    the official client's address (here a stand-in), not card-agent."""
    policy = extension_policy(
        agent, EXTENSION_ID, bridgeOrigins=["https://swapp.singlewindow.cn"], pageOrigins=[]
    )
    with (
        OfficialClientStandIn(site.cert, site.key) as official,
        kiosk_chromium(
            tmp_path,
            first_url=SINGLE_WINDOW_URL,
            policy=policy,
            resolver=resolver_rules(site.port, official.port),
            extension_dir=EXTENSION_DIR,
        ) as browser,
    ):
        report = site.wait_for_report(FIRST_CALL_TIMEOUT_S, ok=False)
        screenshot_page(browser, SINGLE_WINDOW_URL, screenshots_dir / "01-native-socket.png")
    assert report["bridgedAtStart"] is True  # the wrapper is there ...
    assert report.get("cardId") == OfficialClientStandIn.CARD_ID, report  # ... and stood aside
    assert report["error"] == ["stand-in", "Err:Custom51590"]
    assert official.origins == ["https://www.singlewindow.cn"]  # the page itself, not the extension
    assert agent.signatures() == []

"""Pairing the extension (the real flow: it asks, shows the code, the operator
approves), re-pairing after revocation, and the pinned extension ID."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest

from tests.e2e.conftest import (
    EXTENSION_DIR,
    EXTENSION_ID,
    ROOT,
    AgentHandle,
    IntegratorHandle,
    Kiosk,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def kiosk_settings(agent: AgentHandle, integrator: IntegratorHandle) -> dict[str, Any]:
    return {"agentUrl": agent.url, "pageOrigins": [integrator.origin], "bridgeOrigins": []}


def extension_id_from_key(key_b64: str) -> str:
    digest = hashlib.sha256(base64.b64decode(key_b64)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def test_extension_id_is_pinned(kiosk: Kiosk) -> None:
    manifest = json.loads((EXTENSION_DIR / "manifest.json").read_text())
    assert extension_id_from_key(manifest["key"]) == EXTENSION_ID
    assert kiosk.worker.url.startswith(f"chrome-extension://{EXTENSION_ID}/")
    assert EXTENSION_ID in (ROOT / "docs" / "extension.md").read_text()


def test_pairing_and_repairing_after_revocation(
    kiosk: Kiosk, integrator: IntegratorHandle, agent: AgentHandle
) -> None:
    page = kiosk.context.new_page()
    page.goto(f"{integrator.origin}/")
    page.wait_for_function("() => window.client !== undefined")
    page.evaluate("() => { window.card = window.client.call('card'); }")
    code = kiosk.approve_pairing(kiosk.next_dialog(), "first-pairing")
    card = page.evaluate("() => window.card")
    assert card["holder_name"] == "张伟"
    clients = agent.pairing_store().list_clients()
    assert [c.origin for c in clients] == [f"chrome-extension://{EXTENSION_ID}"]
    assert code  # the code the window showed was the one the operator approved

    # The operator revokes the extension (card-agent pair revoke ID): its next call is
    # refused with 401, and it goes back to pairing on its own.
    assert agent.pairing_store().revoke(clients[0].client_id)
    page.evaluate("() => { window.card = window.client.call('card'); }")
    dialog = kiosk.next_dialog()
    dialog.wait_for_selector("#view-pair:not([hidden])")
    kiosk.approve_pairing(dialog, "re-pairing")
    card = page.evaluate("() => window.card")
    assert card["company_name"] == "深圳市前海示例贸易有限公司"
    clients_after = agent.pairing_store().list_clients()
    assert len(clients_after) == 1
    assert clients_after[0].client_id != clients[0].client_id

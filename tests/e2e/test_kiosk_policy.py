"""The kiosk set-up as an operator applies it: examples/kiosk/chromium-policy.json as
the managed policy of a fresh profile, the extension force-installed from an update
manifest (examples/kiosk/updates.xml), its settings from its 3rd-party policy.

Packing needs the private key behind the manifest's pinned ID, which is not in the
repository. The test packs with a throwaway key (Chromium's own packer) and puts that
key's ID everywhere the example names the pinned one; everything else in the file is
used as shipped, the install folder and the agent's test ports aside. So this checks
the policy and the install path, not the pinned ID (tests/e2e/test_pairing.py does).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.config import Config
from tests.e2e.conftest import CHROMIUM, EXTENSION_DIR, EXTENSION_ID, ROOT, AgentHandle
from tests.e2e.kiosk_start import (
    SINGLE_WINDOW_URL,
    SingleWindowSite,
    kiosk_chromium,
    resolver_rules,
    single_window_site,
)
from tests.e2e.test_first_page import check_first_call, kiosk_prerequisites
from tests.e2e.test_pairing import extension_id_from_key

pytestmark = pytest.mark.e2e

__all__ = ["kiosk_prerequisites"]

POLICY_FILE = ROOT / "examples" / "kiosk" / "chromium-policy.json"
UPDATES_FILE = ROOT / "examples" / "kiosk" / "updates.xml"
INSTALL_DIR_URL = "file:///opt/card-agent/extension"  # where the example expects the files
INSTALL_TIMEOUT_S = 45


@dataclass
class PackedExtension:
    crx: Path
    extension_id: str

    @property
    def origin(self) -> str:
        return f"chrome-extension://{self.extension_id}"


@pytest.fixture
def packed(tmp_path: Path) -> PackedExtension:
    """extension/ packed into a .crx by Chromium, with a throwaway RSA-2048 key."""
    work = tmp_path / "pack"
    work.mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_path = work / "throwaway.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    source = work / "card-agent"
    shutil.copytree(EXTENSION_DIR, source)
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            f"--user-data-dir={work / 'profile'}",
            f"--pack-extension={source}",
            f"--pack-extension-key={key_path}",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    crx = work / "card-agent.crx"
    assert crx.exists(), "Chromium did not pack the extension"
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PackedExtension(crx, extension_id_from_key(base64.b64encode(der).decode()))


@pytest.fixture
def agent_config(agent_config: Config, packed: PackedExtension) -> Config:
    """The agent allows the packed extension's origin (its ID is the throwaway key's)."""
    origins = (packed.origin,)
    return agent_config.model_copy(
        update={
            "security": agent_config.security.model_copy(update={"allowed_origins": origins}),
            "compat": agent_config.compat.model_copy(update={"allowed_origins": origins}),
        }
    )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[SingleWindowSite]:
    with single_window_site(tmp_path) as s:
        yield s


def install_files(packed: PackedExtension, directory: Path) -> str:
    """The .crx and the example's update manifest in an install folder, as the
    operator puts them in /opt/card-agent/extension; returns that folder's file:// URL."""
    directory.mkdir()
    shutil.copy(packed.crx, directory / "card-agent.crx")
    url = directory.as_uri()
    updates = UPDATES_FILE.read_text().replace(EXTENSION_ID, packed.extension_id)
    (directory / "updates.xml").write_text(updates.replace(INSTALL_DIR_URL, url))
    return url


def example_policy(packed: PackedExtension, install_url: str, agent: AgentHandle) -> dict[str, Any]:
    """The shipped policy file with the test's extension ID, folder and agent ports."""
    text = POLICY_FILE.read_text().replace(EXTENSION_ID, packed.extension_id)
    policy: dict[str, Any] = json.loads(text.replace(INSTALL_DIR_URL, install_url))
    settings = policy["3rdparty"]["extensions"][packed.extension_id]
    settings["agentUrl"] = agent.url
    settings["compatUrl"] = agent.compat_url
    return policy


def test_example_policy_force_installs_and_bridges_the_first_page(
    kiosk_prerequisites: None,
    agent: AgentHandle,
    packed: PackedExtension,
    site: SingleWindowSite,
    tmp_path: Path,
) -> None:
    install_url = install_files(packed, tmp_path / "opt-card-agent-extension")
    policy = example_policy(packed, install_url, agent)
    assert policy["DeveloperToolsAvailability"] == 2
    started = time.monotonic()
    with kiosk_chromium(
        tmp_path,
        first_url=SINGLE_WINDOW_URL,
        policy=policy,
        resolver=resolver_rules(site.port),
        background_networking=True,  # the download of a force-installed extension
    ) as browser:
        try:
            report = site.wait_for_report(INSTALL_TIMEOUT_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{browser.tail()}") from None
        elapsed = time.monotonic() - started
        # Installed by policy (no --load-extension), under the key's ID, from the folder.
        installed = browser.profile / "Default" / "Extensions" / packed.extension_id
        assert installed.is_dir(), sorted(p.name for p in installed.parent.iterdir())
        # DeveloperToolsAvailability 2 is in force: DevTools may not attach to the page
        # (where a bridged page's PIN is typed) nor to the extension.
        targets = browser.devtools_targets()
        page = next(t for t in targets if t["url"].startswith(SINGLE_WINDOW_URL))
        assert browser.attach_error(page["id"]) is not None
    print(f"first successful call {elapsed:.1f} s after start; page loads: {site.loads}")
    # The extension arrives a moment after the first page started loading; it reloads
    # that page, whose first call then goes through the bridge with the policy's ports.
    assert report["load"] == site.loads, (report, site.reports)
    assert report["bridgedAtStart"] is True
    assert report["connects"] == 1
    check_first_call(report, agent)
    signs = [a for a in agent.signatures() if a["result"] == "ok"]
    assert [a["origin"] for a in signs] == [packed.origin]


def policy_rows(page: Any) -> dict[str, str]:
    """chrome://policy as {policy name: the row's text} (rows live in shadow roots)."""
    rows: dict[str, str] = page.evaluate(
        """() => {
            const rows = {};
            const walk = (node) => {
                if (node.shadowRoot) walk(node.shadowRoot);
                for (const child of node.children || []) walk(child);
                if (node.tagName === 'POLICY-ROW') {
                    const text = (node.shadowRoot || node).textContent.replace(/\\s+/g, ' ').trim();
                    const name = text.split(' ')[0];
                    if (!text.includes('Not set.')) rows[name] = text;
                }
            };
            walk(document.documentElement);
            return rows;
        }"""
    )
    return rows


def test_example_policy_is_valid_for_this_chromium(
    kiosk_prerequisites: None,
    agent: AgentHandle,
    packed: PackedExtension,
    site: SingleWindowSite,
    tmp_path: Path,
) -> None:
    """Every policy in the example is known to this Chromium and accepted, the
    extension's own included (checked against managed_schema.json). Reading
    chrome://policy needs DevTools, so this run allows them."""
    from playwright.sync_api import sync_playwright

    install_url = install_files(packed, tmp_path / "opt-card-agent-extension")
    policy = example_policy(packed, install_url, agent)
    policy["DeveloperToolsAvailability"] = 1
    # One unknown name in each part, to see that a mistake would show.
    policy["CardAgentNoSuchPolicy"] = True
    policy["3rdparty"]["extensions"][packed.extension_id]["noSuchSetting"] = "x"
    with kiosk_chromium(
        tmp_path,
        first_url=SINGLE_WINDOW_URL,
        policy=policy,
        resolver=resolver_rules(site.port),
        background_networking=True,
    ) as browser:
        site.wait_for_report(INSTALL_TIMEOUT_S)  # installed and working
        with sync_playwright() as p:
            connected = p.chromium.connect_over_cdp(f"http://127.0.0.1:{browser.devtools_port()}")
            page = connected.contexts[0].new_page()
            page.goto("chrome://policy")
            deadline = time.monotonic() + 15
            rows = policy_rows(page)
            while packed.extension_id not in str(rows) and time.monotonic() < deadline:
                page.wait_for_timeout(200)  # the tables fill in after load
                rows = policy_rows(page)
            connected.close()
    example = json.loads(POLICY_FILE.read_text())
    chromium_policies = [name for name in example if name != "3rdparty"]
    extension_policies = list(example["3rdparty"]["extensions"][EXTENSION_ID])
    assert len(extension_policies) >= 6
    for name in chromium_policies + extension_policies:
        assert name in rows, (name, sorted(rows))
        assert " Status OK " in rows[name], rows[name]
    # A misspelt name would fail the loop above: Chromium flags an unknown policy, and
    # the extension's schema drops an unknown setting.
    assert "Unknown policy" in rows["CardAgentNoSuchPolicy"]
    assert "noSuchSetting" not in rows

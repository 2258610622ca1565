"""The Chromium policy example the package ships (examples/kiosk/chromium-policy.json, as
/opt/card-agent/share/examples/chromium-policy.json; tests/e2e/test_kiosk_policy.py runs
Chromium with it) is the one the docs name, and its managed settings fit the extension's
schema (extension/managed_schema.json)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "kiosk" / "chromium-policy.json"
SCHEMA = ROOT / "extension" / "managed_schema.json"
TYPES = {"string": str, "array": list, "integer": int}


def test_the_docs_name_the_shipped_example() -> None:
    assert "examples/kiosk/chromium-policy.json" in (ROOT / "docs" / "extension.md").read_text(
        encoding="utf-8"
    )
    assert "chromium-policy.json" in (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def test_managed_settings_fit_the_schema() -> None:
    policy = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    properties = json.loads(SCHEMA.read_text(encoding="utf-8"))["properties"]
    (extension_id,) = policy["3rdparty"]["extensions"]
    settings = policy["3rdparty"]["extensions"][extension_id]
    assert any(extension_id in entry for entry in policy["ExtensionInstallForcelist"])
    for key, value in settings.items():
        assert key in properties, f"{key} is not in managed_schema.json"
        spec = properties[key]
        assert isinstance(value, TYPES[spec["type"]]), key
        if "enum" in spec:
            assert value in spec["enum"], key
        if spec["type"] == "array":
            assert all(isinstance(v, str) for v in value), key

"""The Chromium policy example the package ships (extension/managed_policy.example.json,
/opt/card-agent/share/examples/chromium-policy.json) is the one docs/extension.md shows,
and its managed settings fit the extension's schema (extension/managed_schema.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "extension" / "managed_policy.example.json"
SCHEMA = ROOT / "extension" / "managed_schema.json"
TYPES = {"string": str, "array": list, "integer": int}


def test_the_shipped_example_is_the_documented_one() -> None:
    doc = (ROOT / "docs" / "extension.md").read_text(encoding="utf-8")
    block = re.search(r"managed/\*\.json`:\n\n```json\n(.*?)\n```", doc, re.S)
    assert block, "docs/extension.md lost its policy example"
    assert json.loads(block.group(1)) == json.loads(EXAMPLE.read_text(encoding="utf-8"))


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

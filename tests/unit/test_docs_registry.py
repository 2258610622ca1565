"""The driver registry example in docs/card-profile.md is a valid registry file."""

from __future__ import annotations

import re
from pathlib import Path

from card.registry import Observation, Registry, SkfLibraryDriver, parse_registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "card-profile.md"


def test_the_documented_example_loads_and_matches() -> None:
    text = DOC.read_text(encoding="utf-8")
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", text, re.S) if "[[driver]]" in b]
    registry = Registry(parse_registry(example, "docs/card-profile.md"))
    key = registry.match(Observation(skf_device="GM3000 #1")).entry
    assert key is not None
    assert isinstance(key.driver, SkfLibraryDriver)
    atr = bytes.fromhex("3B8C8001") + b"EPORT-V20001" + bytes([0x5A])  # 17 bytes with TCK
    seen = Observation(atr=atr, reader="ACS ACR39U ICC Reader 00 00")
    entry = registry.match(seen).entry
    assert entry is not None
    assert entry.name == "eport-card-v2"
    # Each of its two ATR patterns matches on its own.
    assert all(pattern.matches(atr) for pattern in entry.atrs)

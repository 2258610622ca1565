"""Keep docs/operations.md true to the configuration model: every key is documented."""

from __future__ import annotations

from pathlib import Path

from agent.config import Config

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_configuration_key_is_in_the_operations_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for section, field in Config.model_fields.items():
        model = field.annotation
        assert model is not None
        for key in model.model_fields:
            if f"`{section}.{key}`" not in text and f"`{key}`" not in text:
                missing.append(f"{section}.{key}")
    assert missing == []

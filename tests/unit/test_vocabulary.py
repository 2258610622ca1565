"""One vocabulary for the agent and the extension (agent/vocabulary.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from agent import vocabulary
from agent.compat.methods import compat_error
from agent.errors import WireError
from agent.vocabulary import ErrorCode, Purpose

ROOT = Path(__file__).resolve().parents[2]


def test_the_extensions_copy_is_generated_from_the_enums() -> None:
    shipped = json.loads((ROOT / "extension/lib/vocabulary.json").read_text(encoding="utf-8"))
    assert shipped == vocabulary.vocabulary(), "run: python -m agent.vocabulary"
    assert vocabulary.main(["--check"]) == 0


def test_docs_list_every_error_code() -> None:
    api = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    table = api[api.index("## Error codes") :]
    documented = set(re.findall(r"`([a-z_]+)`", table))
    assert {code.value for code in ErrorCode} <= documented


def test_docs_list_every_purpose() -> None:
    api = (ROOT / "docs/api.md").read_text(encoding="utf-8")
    for purpose in Purpose:
        assert f"`{purpose.value}`" in api


def test_every_code_has_a_kiosk_message_on_the_official_protocol() -> None:
    for code in ErrorCode:
        message, err = compat_error(WireError(code, 400, "m"))
        assert err.startswith("Err:")
        assert message != "操作失败" or code is ErrorCode.INVALID_INPUT or code in _GENERIC_OK


# Codes a page can never see on the official protocol (it has no pairing, no Host/CORS).
_GENERIC_OK = {
    ErrorCode.HOST_FORBIDDEN,
    ErrorCode.ORIGIN_FORBIDDEN,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    ErrorCode.METHOD_NOT_ALLOWED,
    ErrorCode.PAIRING_ERROR,
}

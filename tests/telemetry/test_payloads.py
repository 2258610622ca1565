"""Payload building and masking, the remote command allowlist, the [mqtt] configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli import main as cli
from agent.config import ConfigError, load_config
from agent.telemetry.commands import CommandHandler
from agent.telemetry.payloads import REDACTED, event_payload, is_critical, sanitize
from agent.telemetry.publisher import backoff_delay

HOLDER = "张伟"
COMPANY = "深圳市前海示例贸易有限公司"
CARD_NUMBER = "8900000012345"


def test_known_events_carry_only_their_fields() -> None:
    sign = event_payload(
        "k1",
        "sign",
        {
            "ok": True,
            "purpose": "agreement",
            "algorithm": "SM2_SM3",
            "duration_ms": 41.5,
            "audit_id": "a-0123456789ab",
            "title": "secret title",  # not in the allowlist: never copied
            "card": CARD_NUMBER,
        },
    )
    assert sign is not None
    assert {k: sign[k] for k in ("type", "purpose", "algorithm", "duration_ms", "audit_id")} == {
        "type": "signature",
        "purpose": "agreement",
        "algorithm": "SM2_SM3",
        "duration_ms": 41.5,
        "audit_id": "a-0123456789ab",
    }
    assert set(sign) == {"v", "id", "kiosk", "ts", "type", "purpose", "algorithm",
                         "duration_ms", "audit_id"}  # fmt: skip
    assert is_critical(sign)
    failed = event_payload("k1", "sign", {"ok": False, "code": "card_changed", "purpose": "x"})
    assert failed is not None
    assert (failed["type"], failed["operation"], failed["code"], failed["purpose"]) == (
        "error", "sign", "card_changed", "other")  # fmt: skip
    pin = event_payload("k1", "pin_verify", {"ok": False, "code": "pin_incorrect"})
    assert pin is not None
    assert pin["result"] == "failed"
    assert pin["code"] == "pin_incorrect"
    card = event_payload("k1", "card_inserted", {})
    assert card is not None
    assert card["type"] == "card_inserted"
    assert not is_critical(card)
    # An identifier that is really a number (a card number as "code") is not copied.
    odd = event_payload("k1", "pin_verify", {"ok": False, "code": CARD_NUMBER})
    assert odd is not None
    assert odd["code"] == "unknown"
    assert event_payload("k1", "not a name!", {}) is None


def test_sanitize_drops_personal_keys_and_masks_numbers() -> None:
    raw: dict[str, Any] = {
        "ok": True,
        "checks": [
            {"name": "reader", "ok": True, "ms": 12},
            {"name": "card", "ok": True, "card_number": CARD_NUMBER, "holder_name": HOLDER},
            {"name": "certificate", "days_left": 300, "subject": f"CN={HOLDER}"},
        ],
        "company_name": COMPANY,
        "note": f"card {CARD_NUMBER} ok",
        "label": HOLDER,  # innocent key, personal value: redacted because not ASCII
        "pin": "88888888",
        "PIN_retries": 3,
        "data": "document",
        "nested": {"a": {"b": {"c": {"d": {"e": {"f": {"g": "deep"}}}}}}},
    }
    clean = sanitize(raw)
    text = json.dumps(clean, ensure_ascii=False)
    for secret in (HOLDER, COMPANY, CARD_NUMBER, "88888888", "document", "deep"):
        assert secret not in text
    assert clean["checks"][0] == {"name": "reader", "ok": True, "ms": 12}
    assert clean["checks"][1]["card_number"] == "*********2345"
    assert "holder_name" not in clean["checks"][1]
    assert "subject" not in clean["checks"][2]
    assert clean["note"] == "card *********2345 ok"
    assert clean["label"] == REDACTED
    assert "pin" not in clean
    assert "PIN_retries" not in clean
    assert "data" not in clean


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    import random

    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 30.0, rng) for n in range(10)]
    for n, d in enumerate(delays):
        cap = min(30.0, 2.0**n)
        assert cap / 2 <= d <= cap
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


def _handler(hook: Any = None) -> CommandHandler:
    return CommandHandler("k1", status=lambda: {"state": "online"}, selftest_hook=hook)


@pytest.mark.parametrize(
    "request_",
    [
        {"id": "r1", "command": "verify_pin", "pin": "123456"},
        {"id": "r1", "command": "sign", "data": "aGVsbG8="},
        {"id": "r1", "command": "123456"},
        {"id": "r1", "command": "shell; rm -rf /"},
        {"id": "r1"},
        ["status"],
    ],
)
def test_commands_outside_the_allowlist_are_refused(
    request_: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.telemetry")
    handler = _handler()
    response = asyncio.run(handler.handle(json.dumps(request_).encode()))
    assert response["ok"] is False
    assert response["error"] == "command_refused"
    assert handler.refused == 1
    assert "refused remote command" in caplog.text
    for secret in ("123456", "aGVsbG8=", "rm -rf"):
        assert secret not in caplog.text
        assert secret not in json.dumps(response)


def test_garbage_is_refused() -> None:
    for raw in (b"\xff\xfe", b"not json", b"x" * 10000):
        response = asyncio.run(_handler().handle(raw))
        assert response["error"] == "command_refused"


def test_selftest_without_hook_and_with_hook() -> None:
    response = asyncio.run(_handler().handle(b'{"id": "q", "command": "selftest"}'))
    assert response["ok"] is False
    assert response["message"] == "selftest not available"

    async def hook() -> dict[str, Any]:
        return {"ok": True, "holder": HOLDER, "card_number": CARD_NUMBER}

    response = asyncio.run(_handler(hook).handle(b'{"id": "q", "command": "selftest"}'))
    assert response["ok"] is True
    assert response["id"] == "q"
    assert response["result"] == {"ok": True, "card_number": "*********2345"}


# --- configuration --------------------------------------------------------------------


def test_mqtt_is_off_by_default_and_validated() -> None:
    assert load_config(env={}).mqtt.enabled is False
    with pytest.raises(ConfigError, match="kiosk_id is required"):
        load_config(env={"CARD_AGENT_MQTT__ENABLED": "true"})
    with pytest.raises(ConfigError, match="kiosk_id"):
        load_config(env={"CARD_AGENT_MQTT__KIOSK_ID": "a/+/#"})
    with pytest.raises(ConfigError, match="go together"):
        load_config(env={"CARD_AGENT_MQTT__TLS_CERT": "c.pem"})
    cfg = load_config(
        env={
            "CARD_AGENT_MQTT__ENABLED": "true",
            "CARD_AGENT_MQTT__KIOSK_ID": "kiosk-7",
            "CARD_AGENT_MQTT__USERNAME": "kiosk-7",
            "CARD_AGENT_MQTT__PASSWORD": "s3cret-pw",
            "CARD_AGENT_MQTT__TLS_CA": "/etc/ca.pem",
        }
    )
    assert cfg.mqtt.use_tls
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret-pw"
    assert "s3cret-pw" not in repr(cfg)
    assert "s3cret-pw" not in str(cfg.mqtt)


def test_config_show_redacts_the_password(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[mqtt]\nenabled = true\nkiosk_id = "kiosk-7"\nusername = "kiosk-7"\n'
        'password = "file-pw-123"\n'
    )
    outputs = []
    for extra in ([], ["--json"]):
        result = CliRunner().invoke(
            cli,
            ["config", "show", "--config", str(conf), *extra],
            env={"CARD_AGENT_MQTT__PASSWORD": "env-pw-456"},
        )
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    for output in outputs:
        assert "file-pw-123" not in output
        assert "env-pw-456" not in output
        assert "kiosk-7" in output
    shown = json.loads(outputs[1])
    assert set(shown["mqtt"]["password"]) == {"*"}
    assert shown["mqtt"]["kiosk_id"] == "kiosk-7"

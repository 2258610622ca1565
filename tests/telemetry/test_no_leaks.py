"""Nothing sensitive leaves the kiosk: the real runtime (build_runtime with [mqtt]
enabled, simulated card) verifies PINs, signs documents, loses its card, answers
commands and stops; a subscriber to `card-agent/#` keeps EVERY message, and each
payload the kiosk published is searched for the PINs, the card number, the holder,
the company, the USCC, the documents, their titles and digests."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import CardConfig, Config, PathsConfig
from agent.runtime import build_runtime
from agent.service import Caller
from agent.telemetry import TelemetryPublisher
from simulator.profiles import get_profile
from tests.telemetry.conftest import Broker, Collector, mqtt_config, until

PIN = "88888888"
WRONG_PIN = "13572468"
DOCUMENT = "投保单 DOC-7f3a9 保额 USD 120000 买方 ACME-BUYER-0042".encode()
TITLE = "小微政策保单 TITLE-SECRET-77"
DIGEST = hashlib.sha256(b"another document DOC-88b1").digest()
KIOSK = "kiosk-leak"


def secrets_for(profile: Any) -> list[str]:
    doc_sha = hashlib.sha256(DOCUMENT).hexdigest()
    return [
        PIN,
        WRONG_PIN,
        profile.card_number,
        profile.holder_name,
        profile.company_name,
        profile.uscc,
        profile.enterprise_code or profile.uscc,
        DOCUMENT.decode(),
        "DOC-7f3a9",
        "ACME-BUYER-0042",
        TITLE,
        "TITLE-SECRET",
        doc_sha,
        DIGEST.hex(),
        base64.b64encode(DOCUMENT).decode(),
        base64.b64encode(DIGEST).decode(),
    ]


def test_no_sensitive_data_in_any_published_payload(
    broker: Broker,
    collect: Callable[..., Collector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sub = collect(broker.port, topic="card-agent/#")
    config = Config(
        card=CardConfig(sim_state_file=""),
        paths=PathsConfig(state_dir=tmp_path / "state"),
        mqtt=mqtt_config(broker.port, KIOSK, username="kiosk-leak", password="mqtt-pw-9931"),
    )
    runtime = build_runtime(config)
    telemetry = [c for c in runtime.components if isinstance(c, TelemetryPublisher)]
    assert len(telemetry) == 1, "build_runtime appends the telemetry component"
    publisher = telemetry[0]
    profile = get_profile(config.card.profile)
    caller = Caller("client-1", "chrome-extension://" + "a" * 32)
    signed: list[str] = []

    async def selftest() -> dict[str, Any]:
        # A careless selftest reporting everything it read from the card.
        info = await runtime.service.card_info()
        return {
            "ok": True,
            "card_number": info.card_number,
            "holder_name": info.holder_name,
            "company": info.company_name,
            "summary": f"{info.card_number} {info.holder_name} {info.company_name}",
            "uscc_value": info.uscc,
            "checks": [{"name": "card", "ok": True, "detail": info.holder_name}],
        }

    publisher.selftest_hook = selftest

    async def main() -> None:
        service = runtime.service
        await service.start()  # and the card owner thread
        for component in runtime.components:
            await component.start()
        try:
            await until(lambda: runtime.owner.state.card_present, "card present")
            with pytest.raises(Exception, match=r"(?i)pin"):
                await service.verify_pin(caller, WRONG_PIN, confirm_final_try=False)
            await service.verify_pin(caller, PIN, confirm_final_try=False)
            out = await service.sign(caller, purpose="agreement", title=TITLE, data=DOCUMENT)
            signed.append(out.audit_id)
            out = await service.sign(caller, purpose="seal", title=TITLE, digest=DIGEST)
            signed.append(out.audit_id)
            runtime.backend.card.knobs.fail_next(0x6F00)  # type: ignore[attr-defined]
            with pytest.raises(Exception):  # noqa: B017 - the card fails: an error event
                await service.sign(caller, purpose="agreement", title=TITLE, data=DOCUMENT)
            runtime.backend.pull_card()  # type: ignore[attr-defined]
            await until(lambda: sub.events("card_removed"), "card removed")
            runtime.backend.insert_card()  # type: ignore[attr-defined]
            await until(lambda: runtime.owner.state.card_present, "card back")
            for request in (
                {"id": "q1", "command": "status"},
                {"id": "q2", "command": "selftest"},
                {"id": "q3", "command": "verify_pin", "pin": PIN},
            ):
                sub._client.publish(f"card-agent/v1/{KIOSK}/cmd", json.dumps(request), qos=1)
            await until(lambda: len(sub.payloads("response")) == 3, "3 responses")
            publisher.enqueue_metrics()
            await until(lambda: sub.payloads("metrics"), "metrics")
            await until(lambda: publisher.outbox_stats().pending == 0, "outbox drained")
        finally:
            for component in reversed(runtime.components):
                await component.stop()
            await service.stop()
            await runtime.owner.stop()

    asyncio.run(main())

    # What the kiosk published (the test's own command messages excluded).
    published = [m for m in sub.snapshot() if not m.topic.endswith("/cmd")]
    kinds = {p["type"] for p in sub.events()}
    assert {
        "pin_verify",
        "signature",
        "error",
        "card_removed",
        "card_inserted",
        "selftest",
    } <= kinds
    assert [e["audit_id"] for e in sub.events("signature")] == signed
    assert any(m.topic.endswith("/metrics") for m in published)
    assert any(m.topic.endswith("/status") for m in published)
    responses = {r["id"]: r for r in sub.payloads("response")}
    assert responses["q2"]["ok"] is True
    assert responses["q2"]["result"]["card_number"] == "*********2345"
    assert responses["q3"]["error"] == "command_refused"
    assert sub.last_status()["state"] == "offline"

    leaks = []
    for message in published:
        text = message.payload.decode("utf-8")
        for secret in secrets_for(profile):
            if secret in text:
                leaks.append((message.topic, secret))
    assert not leaks, leaks
    assert len(published) >= 15
    # And the logs: no MQTT password, no PIN.
    for secret in ("mqtt-pw-9931", PIN, WRONG_PIN):
        assert secret not in caplog.text

"""The example broker configuration (examples/mosquitto/) on a real mosquitto: the ACL
keeps each kiosk to its own id, and the TLS listener with client certificates works
with the agent's tls_* settings."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import logging
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from agent.telemetry import TelemetryPublisher
from tests.telemetry.conftest import Broker, Collector, mqtt_config, until, wait_sync

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "mosquitto"
PASSWORDS = {"kiosk-a": "pw-kiosk-a-51", "kiosk-b": "pw-kiosk-b-52", "fleet-backend": "pw-fleet"}


def password_file(root: Path) -> Path:
    path = root / "passwd"
    for user, password in PASSWORDS.items():
        flags = ["-b"] if path.exists() else ["-c", "-b"]
        subprocess.run(["mosquitto_passwd", *flags, str(path), user, password], check=True)
    return path


def connect_result(port: int, username: str | None, password: str | None) -> Any:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{username}")
    if username is not None:
        client.username_pw_set(username, password)
    result: list[Any] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: result.append(rc)
    client.connect("127.0.0.1", port)

    def connack() -> list[Any]:
        # Driven by hand: a network thread would sit in its reconnect delay at the end.
        client.loop(0.05)
        return result

    try:
        wait_sync(connack, "CONNACK")
    finally:
        client.disconnect()
    return result[0]


def test_example_acl_keeps_each_kiosk_to_its_own_id(
    make_broker: Callable[..., Broker],
    collect: Callable[..., Collector],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    conf = f"password_file {password_file(tmp_path)}\nacl_file {EXAMPLES / 'acl'}\n"
    broker = make_broker(extra_conf=conf, anonymous=False)
    # Only known users with their password get in.
    assert connect_result(broker.port, None, None).is_failure
    assert connect_result(broker.port, "kiosk-a", "wrong").is_failure
    assert not connect_result(broker.port, "kiosk-a", PASSWORDS["kiosk-a"]).is_failure

    fleet = collect(
        broker.port,
        topic="card-agent/v1/+/events",
        username="fleet-backend",
        password=PASSWORDS["fleet-backend"],
    )
    statuses = collect(
        broker.port,
        topic="card-agent/v1/+/status",
        username="fleet-backend",
        password=PASSWORDS["fleet-backend"],
    )
    responses = collect(
        broker.port,
        topic="card-agent/v1/+/cmd/response",
        username="fleet-backend",
        password=PASSWORDS["fleet-backend"],
    )

    async def main() -> None:
        # A kiosk configured as itself: telemetry flows, commands reach it.
        honest = TelemetryPublisher(
            mqtt_config(broker.port, "kiosk-a", username="kiosk-a", password=PASSWORDS["kiosk-a"]),
            state_dir=tmp_path / "a",
            version="1",
        )
        # A kiosk whose credentials are kiosk-a's but which claims to be kiosk-b.
        impostor = TelemetryPublisher(
            mqtt_config(broker.port, "kiosk-b", username="kiosk-a", password=PASSWORDS["kiosk-a"]),
            state_dir=tmp_path / "b",
            version="1",
        )
        await honest.start()
        await impostor.start()
        await until(lambda: honest.connected and impostor.connected, "both connected")
        impostor.on_event("card_inserted", {})
        await until(lambda: impostor.outbox_stats().pending == 0, "impostor 'sent' its event")
        honest.on_event("card_removed", {})
        await until(lambda: fleet.events("card_removed"), "honest kiosk's event")

        fleet._client.publish(
            "card-agent/v1/kiosk-a/cmd", json.dumps({"id": "c1", "command": "status"}), qos=1
        )
        await until(lambda: responses.payloads("response"), "command response")
        await impostor.stop()
        await honest.stop()

    asyncio.run(main())

    # A raw client with kiosk-a's credentials publishing under kiosk-b, then a marker
    # under its own id: the marker arrives, the forgery never does (QoS 1, in order).
    forger = paho.Client(CallbackAPIVersion.VERSION2, client_id="forger")
    forger.username_pw_set("kiosk-a", PASSWORDS["kiosk-a"])
    forger.connect("127.0.0.1", broker.port)
    forger.loop_start()
    try:
        forger.publish(
            "card-agent/v1/kiosk-b/events", b'{"type":"forged"}', qos=1
        ).wait_for_publish(5)
        forger.publish(
            "card-agent/v1/kiosk-a/events", b'{"type":"marker"}', qos=1
        ).wait_for_publish(5)
        wait_sync(lambda: fleet.events("marker"), "marker")
    finally:
        forger.disconnect()
        forger.loop_stop()

    topics = {m.topic for m in fleet.snapshot() + statuses.snapshot()}
    assert "card-agent/v1/kiosk-a/events" in topics
    assert "card-agent/v1/kiosk-a/status" in topics
    assert not [t for t in topics if "/kiosk-b/" in t], topics
    assert not fleet.events("forged")
    assert [r["id"] for r in responses.payloads("response")] == ["c1"]
    for password in PASSWORDS.values():
        assert password not in caplog.text


# --- TLS with the example mosquitto.conf ---------------------------------------------


def _cert(
    path: Path,
    name: str,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    ip: str | None = None,
) -> tuple[x509.Name, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return subject, key


def test_example_conf_tls_with_client_certificate(
    make_broker: Callable[..., Broker], tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = _cert(certs / "fleet-ca", "card-agent test CA", None, ca=True)
    _cert(certs / "broker", "broker", ca, ip="127.0.0.1")
    _cert(certs / "kiosk-a", "kiosk-a", ca)
    passwd = password_file(tmp_path)

    broker = make_broker(start=False)
    # The example file as shipped, with its paths pointed at this test's files.
    conf = (EXAMPLES / "mosquitto.conf").read_text()
    conf = conf.replace("/etc/mosquitto/card-agent.passwd", str(passwd))
    conf = conf.replace("/etc/mosquitto/card-agent.acl", str(EXAMPLES / "acl"))
    conf = conf.replace("/etc/mosquitto/certs/", f"{certs}/")
    conf = conf.replace("/var/lib/mosquitto/", f"{broker.root}/")
    conf = conf.replace("log_dest syslog", "log_dest stderr")
    conf = re.sub(r"^listener 8883$", f"listener {broker.port} 127.0.0.1", conf, flags=re.M)
    settings = [line for line in conf.splitlines() if not line.startswith("#")]
    assert not [line for line in settings if "/etc/" in line or "/var/" in line]
    broker.write_conf = lambda: broker.conf_path.write_text(  # type: ignore[method-assign]
        conf + ("user root\n" if __import__("os").getuid() == 0 else "")
    )
    broker.start()

    async def main() -> None:
        base = {
            "username": "kiosk-a",
            "password": PASSWORDS["kiosk-a"],
            "tls_ca": certs / "fleet-ca.pem",
        }
        good = TelemetryPublisher(
            mqtt_config(
                broker.port,
                "kiosk-a",
                **base,
                tls_cert=certs / "kiosk-a.pem",
                tls_key=certs / "kiosk-a.key",
            ),
            state_dir=tmp_path / "good",
            version="1",
        )
        await good.start()
        good.on_event("card_inserted", {})
        await until(lambda: good.connected and good.outbox_stats().pending == 0, "TLS delivery")
        await good.stop()
        # Without a client certificate the broker (require_certificate) refuses it.
        bare = TelemetryPublisher(
            mqtt_config(broker.port, "kiosk-a", **base),
            state_dir=tmp_path / "bare",
            version="1",
        )
        await bare.start()
        bare.on_event("card_inserted", {})
        await until(lambda: bare.outbox_stats().stored_total == 1, "stored")
        await until(
            lambda: "did not return a certificate" in broker.tail(), "the broker refusing it"
        )
        assert not bare.connected
        assert bare.outbox_stats().pending == 1
        await bare.stop()

    asyncio.run(main())

"""The fleet's MQTT broker (mqtt.*): connect as the agent would, then disconnect."""

from __future__ import annotations

import secrets

from agent.selftest.context import SelftestContext
from agent.selftest.registry import Outcome, check

NETWORK_TIMEOUT_S = 2.0

# CONNACK refusals (MQTT 3.1.1 return code, what it means), by paho's reason-code name.
_REFUSALS = {
    "Unsupported protocol version": (1, "unacceptable protocol version"),
    "Client identifier not valid": (2, "client identifier rejected"),
    "Server unavailable": (3, "server unavailable"),
    "Bad user name or password": (4, "bad user name or password"),
    "Not authorized": (5, "not authorised"),
}


@check("mqtt", "MQTT broker", order=140)
async def mqtt(ctx: SelftestContext) -> Outcome:
    settings = ctx.config.mqtt
    if not settings.enabled or not settings.host:
        return Outcome("skip", "not configured")
    try:
        import aiomqtt
    except ImportError:
        return Outcome(
            "fail",
            "aiomqtt is not installed",
            "reinstall with the agent extra: pip install 'card-agent[agent]'",
        )
    tls = None
    if settings.use_tls:
        tls = aiomqtt.TLSParameters(
            ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
        )
    kiosk = settings.kiosk_id or "card-agent"
    where = f"{settings.host}:{settings.port}" + (" (TLS)" if tls else "")
    client = aiomqtt.Client(
        settings.host,
        settings.port,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        identifier=f"{kiosk}-selftest-{secrets.token_hex(3)}",
        clean_session=True,
        keepalive=10,
        timeout=NETWORK_TIMEOUT_S,
        tls_params=tls,
    )
    try:
        async with client:
            pass  # connected (CONNACK accepted); leaving disconnects
    except aiomqtt.MqttCodeError as exc:  # the broker answered CONNECT with a refusal
        code, meaning = _REFUSALS.get(str(exc.rc), (None, str(exc.rc)))
        return Outcome(
            "fail",
            f"broker {where} refused CONNECT: {meaning}",
            "check mqtt.username / mqtt.password and the broker's ACL",
            {"connack": code},
        )
    except (aiomqtt.MqttError, OSError) as exc:  # refused, unreachable, TLS, timeout
        return Outcome(
            "fail",
            f"broker {where} not reachable: {exc or type(exc).__name__}",
            "check mqtt.host/port, the network, and the IPAddressAllow= drop-in for it",
        )
    return Outcome("pass", f"broker {where} accepted CONNECT")

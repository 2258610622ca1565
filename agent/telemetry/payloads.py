"""Telemetry payloads: what leaves the kiosk, and nothing else.

Every payload is built here from an allowlist of fields. Service events carry no
personal data to begin with; this module still checks every value it copies, because
the fields come from other modules (and the selftest) that may grow:

* known events: only the listed fields, each checked (identifiers, numbers, booleans);
* anything else (unknown events, selftest results): `sanitize` — keys naming secrets or
  personal data are dropped (PIN, password, token, holder, company, document, data,
  title, subject, ...), a key naming a card number keeps only its masked form, strings
  must be short printable ASCII (a Chinese holder or company name is redacted as a
  whole), and any run of 8 or more digits is masked to its last four.

Schemas are in docs/telemetry.md.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

from card.eport.driver import mask_card_number

TOPIC_ROOT = "card-agent/v1"
SCHEMA_VERSION = 1

REDACTED = "[redacted]"

# Event names forwarded from CardService listeners (card events come through it too).
CARD_EVENTS = frozenset(
    {"card_inserted", "card_removed", "card_reset", "reader_added", "reader_removed"}
)
# Critical messages are dropped last when the outbox overflows.
CRITICAL_TYPES = frozenset({"pin_verify", "signature", "error", "selftest"})

_IDENT = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
_SAFE_TEXT = re.compile(r"^[\x20-\x7e]{0,200}$")
_DIGIT_RUN = re.compile(r"\d{8,}")
_AUDIT_ID = re.compile(r"^[a-z]{1,8}-[0-9a-f]{6,64}$")  # agent.audit: "a-" + hex
_SENSITIVE_KEY_PARTS = (
    "pin",
    "puk",
    "unblock",
    "pass",
    "secret",
    "token",
    "holder",
    "company",
    "uscc",
    "enterprise",
    "document",
    "title",
    "subject",
    "signature",
    "private",
    "cookie",
    "auth",
)
_SENSITIVE_KEYS = frozenset({"data", "digest", "message", "body", "content", "payload"})
_CARD_NUMBER_KEYS = frozenset({"card_number", "card_no", "cardno", "masked_card_number"})
_MAX_DEPTH = 6
_MAX_ITEMS = 64
PURPOSES = frozenset(
    {"seal", "agreement", "data_authorisation", "application", "receipt", "login", "other"}
)


def topic(kiosk_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{kiosk_id}/{leaf}"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ident(value: Any, default: str = "unknown") -> str:
    """An identifier-like string (code, algorithm, audit id) or `default`."""
    if isinstance(value, str) and _IDENT.match(value) and not _DIGIT_RUN.search(value):
        return value
    return default


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


def _is_sensitive_key(key: str) -> bool:
    low = key.lower()
    return low in _SENSITIVE_KEYS or any(part in low for part in _SENSITIVE_KEY_PARTS)


def safe_text(value: str) -> str:
    """Short printable ASCII with long digit runs masked; anything else is redacted."""
    if not _SAFE_TEXT.match(value):
        return REDACTED
    return _DIGIT_RUN.sub(lambda m: mask_card_number(m.group(0)), value)


def sanitize(value: Any, *, _depth: int = 0) -> Any:
    """A copy of `value` (JSON-like) with nothing personal or secret left in it."""
    if _depth > _MAX_DEPTH:
        return REDACTED
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in list(value.items())[:_MAX_ITEMS]:
            if not isinstance(key, str) or not _IDENT.match(key):
                continue
            if _is_sensitive_key(key):
                continue
            if key.lower() in _CARD_NUMBER_KEYS and isinstance(item, str):
                out[key] = mask_card_number(item)
                continue
            out[key] = sanitize(item, _depth=_depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [sanitize(item, _depth=_depth + 1) for item in list(value)[:_MAX_ITEMS]]
    return REDACTED


def envelope(kiosk_id: str, kind: str) -> dict[str, Any]:
    """Common fields of every outbox message (`seq` is added by the outbox)."""
    return {
        "v": SCHEMA_VERSION,
        "id": uuid.uuid4().hex,
        "kiosk": kiosk_id,
        "ts": now_iso(),
        "type": kind,
    }


def event_payload(kiosk_id: str, name: str, fields: Mapping[str, Any]) -> dict[str, Any] | None:
    """The `events` payload for a service event, or None when it is not forwarded."""
    if name in CARD_EVENTS:
        return envelope(kiosk_id, name)
    if name == "pin_verify":
        payload = envelope(kiosk_id, "pin_verify")
        if fields.get("ok") is True:
            payload["result"] = "ok"
        else:
            payload["result"] = "failed"
            payload["code"] = ident(fields.get("code"))
        return payload
    if name == "sign":
        purpose = fields.get("purpose")
        purpose = purpose if isinstance(purpose, str) and purpose in PURPOSES else "other"
        if fields.get("ok") is True:
            payload = envelope(kiosk_id, "signature")
            payload["purpose"] = purpose
            payload["algorithm"] = ident(fields.get("algorithm"))
            payload["duration_ms"] = _number(fields.get("duration_ms"))
            audit_id = fields.get("audit_id")
            payload["audit_id"] = (
                audit_id if isinstance(audit_id, str) and _AUDIT_ID.match(audit_id) else ""
            )
            return payload
        payload = envelope(kiosk_id, "error")
        payload["operation"] = "sign"
        payload["purpose"] = purpose
        payload["code"] = ident(fields.get("code"))
        return payload
    if name == "selftest":
        payload = envelope(kiosk_id, "selftest")
        payload["result"] = sanitize(dict(fields))
        return payload
    if name == "error":
        payload = envelope(kiosk_id, "error")
        payload["operation"] = ident(fields.get("operation"))
        payload["code"] = ident(fields.get("code"))
        return payload
    kind = ident(name, default="")
    if not kind:
        return None
    payload = envelope(kiosk_id, "other")
    payload["name"] = kind
    payload["fields"] = sanitize(dict(fields))
    return payload


def is_critical(payload: Mapping[str, Any]) -> bool:
    return payload.get("type") in CRITICAL_TYPES


def status_payload(
    kiosk_id: str,
    *,
    online: bool,
    version: str,
    presence: Mapping[str, Any] | None,
    outbox: Mapping[str, Any] | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The retained `status` payload (also the last will, with `online` False)."""
    payload: dict[str, Any] = {
        "v": SCHEMA_VERSION,
        "kiosk": kiosk_id,
        "state": "online" if online else "offline",
        "ts": now_iso(),
        "version": ident(version),
    }
    if reason is not None:
        payload["reason"] = ident(reason)
    if presence is not None:
        payload["reader_present"] = bool(presence.get("reader_present"))
        payload["card_present"] = bool(presence.get("card_present"))
    if outbox is not None:
        payload["outbox"] = sanitize(dict(outbox))
    return payload

"""Balancing the books: audit records and telemetry events against what clients were told.

Audit (docs/security.md): every signature a client received must name a `sign_request`
record on disk (native: its `audit_id`; compat: its unique title), and no received
signature may have a *failed* outcome. Requests without an outcome record are only
possible when the agent died between the card's answer and the outcome's group commit:
each one must lie just before an agent kill.

Telemetry (docs/telemetry.md): the outbox gives every stored message the next `seq`
(never reused, no gaps unless the overflow policy dropped rows, which it counts). So the
messages stored during the run are exactly seq 1..last; each must have been delivered
to the subscriber, or still be in the outbox. Messages lost *before* storage (the
in-memory window between a service event and its batch's commit) have no seq; they are
found from the other side: every signature the audit log or a client knows of must have
a `signature` event naming its audit id, and the `pin_verify` events must match the
audit log's `pin_verify` records in number. What is missing must lie just before an
agent kill, or it is a defect.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from soak.collector import Received
from soak.recorder import SignAck

# The in-memory window is milliseconds; these allow for clocks read on either side.
PRE_STORAGE_BEFORE_KILL_S = 3.0
AFTER_KILL_SLACK_S = 1.0
OUTCOME_GRACE_S = 5.0  # beyond card.job_timeout_s, for a request waiting on the card


def record_time(rec: dict[str, Any]) -> float:
    """The audit record's `time` (RFC 3339, UTC) as a Unix timestamp."""
    return datetime.fromisoformat(str(rec["time"])).timestamp()


def just_before_a_kill(t: float, kills: Iterable[float], window_s: float) -> bool:
    """True if an agent kill came at most `window_s` after `t` (or just before it)."""
    return any(t - AFTER_KILL_SLACK_S <= k <= t + window_s for k in kills)


# --- audit -----------------------------------------------------------------------------


def audit_books(
    records: Sequence[dict[str, Any]],
    verify: dict[str, Any],
    acks: Sequence[SignAck],
    kills: Sequence[float],
    *,
    job_timeout_s: float,
) -> dict[str, Any]:
    requests = {r["id"]: r for r in records if r.get("event") == "sign_request"}
    by_title = {r.get("title"): r["id"] for r in requests.values()}
    outcomes = {r["request"]: r for r in records if r.get("event") == "sign" and "request" in r}

    acked_ids: set[str] = set()
    without_record: list[str] = []
    failed_outcome: list[str] = []
    for ack in acks:
        request_id = ack.audit_id if ack.via == "native" else by_title.get(ack.title)
        if request_id is None or request_id not in requests:
            without_record.append(ack.audit_id or ack.title)
            continue
        acked_ids.add(request_id)
        outcome = outcomes.get(request_id)
        if outcome is not None and outcome.get("result") != "ok":
            failed_outcome.append(request_id)

    ok_ids = {rid for rid, o in outcomes.items() if o.get("result") == "ok"}
    not_acked = sorted(ok_ids - acked_ids)
    window = job_timeout_s + OUTCOME_GRACE_S
    open_ids = [rid for rid in requests if rid not in outcomes]
    unexplained_open = [
        rid for rid in open_ids if not just_before_a_kill(record_time(requests[rid]), kills, window)
    ]
    events = Counter(str(r.get("event")) for r in records)
    return {
        "records": len(records),
        "by_event": dict(sorted(events.items())),
        "verify_ok": bool(verify.get("ok")),
        "verify": verify,
        "acknowledged": {
            "native": sum(1 for a in acks if a.via == "native"),
            "compat": sum(1 for a in acks if a.via == "compat"),
            "total": len(acks),
        },
        "acknowledged_with_request_record": len(acked_ids),
        "acknowledged_without_record": without_record,
        "acknowledged_but_outcome_failed": failed_outcome,
        "sign_requests": len(requests),
        "outcomes_ok": len(ok_ids),
        "outcomes_failed": len(outcomes) - len(ok_ids),
        "signed_not_acknowledged": len(not_acked),
        "requests_without_outcome": len(open_ids),
        "requests_without_outcome_unexplained": unexplained_open,
    }


# --- telemetry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OutboxFacts:
    last_seq: int  # the highest seq ever stored (sqlite_sequence)
    pending: tuple[int, ...]  # seqs still in the outbox
    dropped_total: int
    dropped_critical: int


def read_outbox(path: Path) -> OutboxFacts:
    """The outbox's counters; safe while the agent runs (WAL: readers do not block)."""
    db = sqlite3.connect(path, timeout=10)
    try:
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        pending = tuple(int(s) for (s,) in db.execute("SELECT seq FROM outbox ORDER BY seq"))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return OutboxFacts(
        last_seq=int(row[0]) if row is not None else 0,
        pending=pending,
        dropped_total=int(meta.get("dropped_total", 0)),
        dropped_critical=int(meta.get("dropped_critical", 0)),
    )


def _unique_outbox_messages(received: Sequence[Received]) -> tuple[dict[int, dict[str, Any]], int]:
    """First delivery of each seq, and how many deliveries repeated one."""
    first: dict[int, dict[str, Any]] = {}
    repeats = 0
    for m in received:
        seq = m.payload.get("seq")
        if m.leaf not in ("events", "metrics") or not isinstance(seq, int):
            continue
        if seq in first:
            repeats += 1
        else:
            first[seq] = m.payload
    return first, repeats


def telemetry_books(
    outbox: OutboxFacts,
    received: Sequence[Received],
    records: Sequence[dict[str, Any]],
    acks: Sequence[SignAck],
    kills: Sequence[float],
) -> dict[str, Any]:
    first, repeats = _unique_outbox_messages(received)
    ids_by_seq: dict[int, set[str]] = {}
    for m in received:
        seq = m.payload.get("seq")
        if m.leaf in ("events", "metrics") and isinstance(seq, int):
            ids_by_seq.setdefault(seq, set()).add(str(m.payload.get("id")))
    stored = set(range(1, outbox.last_seq + 1))
    delivered = set(first)
    lost_after_storage = sorted(stored - delivered - set(outbox.pending))
    types = Counter(str(p.get("type")) for p in first.values())

    # Before storage: signatures everyone knows of, against `signature` events.
    requests = {r["id"]: r for r in records if r.get("event") == "sign_request"}
    by_title = {r.get("title"): r["id"] for r in requests.values()}
    known: dict[str, float] = {}  # audit id -> the latest time the agent had emitted it by
    for r in records:
        if r.get("event") == "sign" and r.get("result") == "ok" and "request" in r:
            known[r["request"]] = record_time(r)
    for ack in acks:
        rid = ack.audit_id if ack.via == "native" else by_title.get(ack.title)
        if rid is not None:
            known.setdefault(rid, ack.wall)
    signature_events = {
        str(p.get("audit_id")) for p in first.values() if p.get("type") == "signature"
    }
    missing = sorted(rid for rid in known if rid not in signature_events)
    missing_unexplained = [
        rid
        for rid in missing
        if not just_before_a_kill(known[rid], kills, PRE_STORAGE_BEFORE_KILL_S)
    ]
    naming_no_record = sorted(signature_events - set(requests))

    verifies = [r for r in records if r.get("event") == "pin_verify"]
    verify_events = types.get("pin_verify", 0)
    at_risk = sum(
        1 for r in verifies if just_before_a_kill(record_time(r), kills, PRE_STORAGE_BEFORE_KILL_S)
    )
    verify_missing = len(verifies) - verify_events
    return {
        "stored": outbox.last_seq,
        "delivered_unique": len(delivered & stored),
        "delivered_duplicates": repeats,
        "still_in_outbox": len(outbox.pending),
        "lost_after_storage": lost_after_storage,
        "seq_with_two_ids": sorted(s for s, ids in ids_by_seq.items() if len(ids) > 1),
        "delivered_never_stored": sorted(delivered - stored),
        "dropped_by_overflow": outbox.dropped_total,
        "dropped_critical": outbox.dropped_critical,
        "by_type": dict(sorted(types.items())),
        "before_storage": {
            "signatures_known": len(known),
            "signature_events": len(signature_events),
            "signatures_missing": missing,
            "signatures_missing_unexplained": missing_unexplained,
            "signature_events_naming_no_record": naming_no_record,
            "pin_verify_records": len(verifies),
            "pin_verify_events": verify_events,
            "pin_verify_missing": verify_missing,
            "pin_verify_records_just_before_a_kill": at_risk,
            "pin_verify_missing_unexplained": max(0, verify_missing - at_risk),
        },
    }

"""The soak's own arithmetic: the fault schedule, growth per hour, and the books
(audit and telemetry) on hand-made inputs whose answers are known."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from soak.books import OutboxFacts, audit_books, telemetry_books
from soak.collector import Received
from soak.plan import COMPACT_CYCLE, FAULT_KINDS, FULL_CYCLE, Holds, plan_faults
from soak.recorder import Recorder, SignAck, percentile
from soak.resources import Sample, growth, slope_per_hour

# --- the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", [0.5, 3, 10, 25, 60])
def test_every_fault_kind_once_at_least_one_at_a_time(minutes: float) -> None:
    plan = plan_faults(minutes * 60)
    assert all(plan.count(kind) >= 1 for kind in FAULT_KINDS)
    for fault, after in itertools.pairwise(plan.faults):
        assert fault.at_s + fault.hold_s < after.at_s  # the next starts after recovery
    assert plan.faults[0].at_s == pytest.approx(plan.warmup_s)
    last = plan.faults[-1]
    assert last.at_s + last.hold_s < plan.duration_s - plan.settle_s


def test_the_default_run_has_the_full_cycle_with_nominal_holds() -> None:
    plan = plan_faults(600)
    assert tuple(f.kind for f in plan.faults) == FULL_CYCLE
    holds = {f.kind: f.hold_s for f in plan.faults}
    assert holds["pcscd_stop"] == 20.0
    assert holds["broker_outage"] == 30.0
    assert plan.count("card_pull") == 4


def test_a_smoke_run_has_each_fault_once_with_shortened_holds() -> None:
    plan = plan_faults(30)
    assert tuple(f.kind for f in plan.faults) == COMPACT_CYCLE
    assert all(f.hold_s < 3 for f in plan.faults)


def test_longer_runs_repeat_the_cycle() -> None:
    plan = plan_faults(3600, Holds(pcscd_stop_s=20))
    assert plan.count("agent_kill") == 6
    assert plan.count("pcscd_stop") == 6
    with pytest.raises(ValueError, match="positive"):
        plan_faults(0)


def test_faults_can_be_left_out() -> None:
    plan = plan_faults(1800, skip=frozenset({"agent_kill"}))
    assert plan.count("agent_kill") == 0
    assert plan.kinds == frozenset(FAULT_KINDS) - {"agent_kill"}
    assert plan_faults(30, skip=frozenset(FAULT_KINDS)).faults == ()


# --- resources and latencies ---------------------------------------------------------------


def test_slope_per_hour_of_a_steady_leak_and_of_a_flat_line() -> None:
    leak = [(float(t), 100 + t / 60) for t in range(0, 600, 10)]  # 1 MB a minute
    assert slope_per_hour(leak) == pytest.approx(60.0)
    flat = [(float(t), 100.0) for t in range(0, 600, 10)]
    assert slope_per_hour(flat) == pytest.approx(0.0)
    assert slope_per_hour(leak[:3]) is None  # too few samples
    assert slope_per_hour([(float(t), 1.0) for t in range(10)]) is None  # too short a span


def test_growth_ignores_the_warm_up() -> None:
    samples = [
        Sample(float(t), 40_000 if t < 60 else 80 * 1024, 20 if t < 60 else 25, 9)
        for t in range(0, 600, 5)
    ]
    result = growth(samples)
    assert result["rss_mb"]["first"] == pytest.approx(39.1)
    assert result["rss_mb"]["max"] == 80.0
    assert result["rss_mb"]["growth_per_h_after_warmup"] == 0.0
    assert result["fds"]["growth_per_h_second_half"] == 0.0
    assert growth([]) == {"samples": 0}


def test_recorder_counts_and_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.99) == 4.0
    assert percentile([], 0.5) is None
    rec = Recorder()
    rec.answered("sign", 0.0)
    rec.answered("sign", 0.0, "card_missing")
    rec.answered("sign", 0.0, "internal_error")
    rec.unanswered("sign", ConnectionRefusedError())
    assert rec.totals() == {"answered": 3, "errors": 2, "unanswered": 1}
    assert rec.unexpected() == {"sign:internal_error": 1}
    assert rec.errors_by_code()["no_answer:ConnectionRefusedError"] == 1
    assert rec.by_kind()["sign"]["ok"] == 1


# --- the books -------------------------------------------------------------------------------

KILL = 1_000_000.0  # an agent kill, Unix time


def rec(seq: int, event: str, at: float, **fields: Any) -> dict[str, Any]:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")
    return {"seq": seq, "id": fields.pop("id", f"a-{seq:012x}"), "event": event,
            "time": when.replace("+00:00", "Z"), **fields}  # fmt: skip


def test_audit_books_match_acknowledged_signatures_to_records() -> None:
    records = [
        rec(1, "sign_request", KILL - 100, id="a-000000000001", title="native 1"),
        rec(2, "sign", KILL - 100, request="a-000000000001", result="ok"),
        rec(3, "sign_request", KILL - 90, id="a-000000000002", title="compat 1"),
        rec(4, "sign", KILL - 90, request="a-000000000002", result="ok"),
        rec(5, "sign_request", KILL - 80, id="a-000000000003", title="native 2"),
        rec(6, "sign", KILL - 80, request="a-000000000003", result="failed"),
        rec(7, "sign_request", KILL - 0.2, id="a-000000000004", title="at the kill"),
        rec(8, "sign_request", KILL - 60, id="a-000000000005", title="no outcome, no kill"),
        rec(9, "sign_request", KILL - 50, id="a-000000000006", title="signed, answer lost"),
        rec(10, "sign", KILL - 50, request="a-000000000006", result="ok"),
    ]
    acks = [
        SignAck("native", "native 1", "a-000000000001", KILL - 100),
        SignAck("compat", "compat 1", None, KILL - 90),
        SignAck("native", "native 2", "a-000000000003", KILL - 80),  # failed outcome!
        SignAck("native", "made up", "a-0000000000ff", KILL - 70),  # no record!
        SignAck("compat", "no such title", None, KILL - 70),  # no record!
    ]
    books = audit_books(records, {"ok": True}, acks, [KILL], job_timeout_s=15)
    assert books["acknowledged"] == {"native": 3, "compat": 2, "total": 5}
    assert books["acknowledged_with_request_record"] == 3
    assert books["acknowledged_without_record"] == ["a-0000000000ff", "no such title"]
    assert books["acknowledged_but_outcome_failed"] == ["a-000000000003"]
    assert books["requests_without_outcome"] == 2
    assert books["requests_without_outcome_unexplained"] == ["a-000000000005"]
    assert books["signed_not_acknowledged"] == 1
    assert books["outcomes_ok"] == 3


def message(seq: int, kind: str, msg_id: str | None = None, **fields: Any) -> Received:
    return Received("events", {"seq": seq, "id": msg_id or f"m{seq}", "type": kind, **fields})


def test_telemetry_books_find_what_was_lost_after_and_before_storage() -> None:
    records = [
        rec(1, "sign_request", KILL - 100, id="a-000000000001", title="t1"),
        rec(2, "sign", KILL - 100, request="a-000000000001", result="ok"),
        rec(3, "sign_request", KILL - 1, id="a-000000000002", title="t2"),
        rec(4, "sign", KILL - 0.5, request="a-000000000002", result="ok"),  # then killed
        rec(5, "sign_request", KILL - 50, id="a-000000000003", title="t3"),
        rec(6, "sign", KILL - 50, request="a-000000000003", result="ok"),  # no event, no kill
        rec(7, "pin_verify", KILL - 100, result="ok"),
        rec(8, "pin_verify", KILL - 0.3, result="ok"),  # its event died with the agent
    ]
    received = [
        message(1, "signature", audit_id="a-000000000001"),
        message(1, "signature", audit_id="a-000000000001"),  # a duplicate: fine
        message(2, "pin_verify", result="ok"),
        message(4, "card_removed"),
        message(5, "card_inserted", msg_id="other"),
        message(5, "card_inserted"),  # one seq, two ids: a reused seq
        message(7, "signature", audit_id="a-0000000000ee"),  # names no audit record
    ]
    outbox = OutboxFacts(last_seq=6, pending=(6,), dropped_total=0, dropped_critical=0)
    books = telemetry_books(outbox, received, records, [], [KILL])
    assert books["stored"] == 6
    assert books["lost_after_storage"] == [3]
    assert books["delivered_duplicates"] == 2
    assert books["seq_with_two_ids"] == [5]
    assert books["delivered_never_stored"] == [7]
    before = books["before_storage"]
    assert before["signatures_missing"] == ["a-000000000002", "a-000000000003"]
    assert before["signatures_missing_unexplained"] == ["a-000000000003"]
    assert before["signature_events_naming_no_record"] == ["a-0000000000ee"]
    assert before["pin_verify_missing"] == 1
    assert before["pin_verify_missing_unexplained"] == 0

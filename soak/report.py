"""The soak's result: the must-be-zero checks, and the printout.

The result is one JSON-able dict (`--json` writes it as is); the text is made from it.
"""

from __future__ import annotations

from typing import Any


def checks(result: dict[str, Any]) -> dict[str, int]:
    """Every figure that must be zero for the run to pass."""
    audit = result["audit"]
    tele = result["telemetry"]
    before = tele["before_storage"]
    agent = result["agent"]
    faults = result["faults"]
    return {
        "audit verify failed": 0 if audit["verify_ok"] else 1,
        "acknowledged signatures without an audit record": len(
            audit["acknowledged_without_record"]
        ),
        "acknowledged signatures whose outcome record says failed": len(
            audit["acknowledged_but_outcome_failed"]
        ),
        "requests without outcome not explained by an agent kill": len(
            audit["requests_without_outcome_unexplained"]
        ),
        "telemetry events stored but not delivered": len(tele["lost_after_storage"]),
        "telemetry seqs carrying two message ids": len(tele["seq_with_two_ids"]),
        "telemetry events delivered but never stored": len(tele["delivered_never_stored"]),
        "telemetry events dropped by the outbox overflow": tele["dropped_by_overflow"],
        "signature events lost before storage, not at an agent kill": len(
            before["signatures_missing_unexplained"]
        ),
        "pin_verify events lost before storage, not at an agent kill": before[
            "pin_verify_missing_unexplained"
        ],
        "pin_verify events without an audit record": max(0, -before["pin_verify_missing"]),
        "signature events naming no audit record": len(before["signature_events_naming_no_record"]),
        "agent exits the soak did not cause": len(agent["unexpected_exits"]),
        "supervisor gave up": 0 if agent["gave_up"] is None else 1,
        "unexpected error codes": sum(result["clients"]["unexpected"].values()),
        "faults that failed to inject": sum(1 for f in faults["injected"] if f["error"]),
        "fault kinds planned but never injected": len(faults["kinds_missing"]),
    }


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header), "-" * len(line(header)), *(line(r) for r in rows)]


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"card-agent soak: {result['minutes']:g} min of load ({result['elapsed_s']:.0f} s "
        f"in all), PC/SC backend ({m['reader']}), software card with realistic timing",
        f"machine: {m['cpus']} CPUs, Python {m['python']}, {m['pcscd']}, {m['mosquitto']}; "
        f"load average {m['loadavg_start']} at start, {m['loadavg_end']} at end; CPU used: "
        f"agent {m.get('agent_cpu_s', '-')} s, load generator {m.get('soak_cpu_s', '-')} s",
        f"workdir: {result['workdir']}",
        "",
        "Faults"
        + (
            f" (left out: {', '.join(result['faults']['skipped'])})"
            if result["faults"].get("skipped")
            else ""
        ),
    ]
    rows = [
        [
            f["kind"],
            _fmt(f["at_s"]),
            _fmt(f["hold_s"]),
            _fmt(f["recovered_after_s"]),
            f["error"] or f["detail"],
        ]
        for f in result["faults"]["injected"]
    ]
    out += _table(["fault", "at s", "hold s", "next sig s", "what"], rows)

    out += ["", "Requests (latency of successful answers; sign includes the card)"]
    rows = []
    for kind, k in result["clients"]["by_kind"].items():
        rows.append(
            [
                kind,
                str(k["answered"]),
                str(k["ok"]),
                str(sum(k["errors"].values())),
                str(sum(k["unanswered"].values())),
                _fmt(k["ok_p50_ms"]),
                _fmt(k["ok_p99_ms"]),
                _fmt(k["ok_max_ms"]),
            ]
        )
    out += _table(
        ["kind", "answered", "ok", "errors", "no answer", "p50 ms", "p99 ms", "max ms"], rows
    )
    totals = result["clients"]["totals"]
    out.append(
        f"total: {totals['answered']} answered ({totals['errors']} with an error code), "
        f"{totals['unanswered']} without an answer"
    )
    out += ["", "Errors by code"]
    out += [f"  {n:6d}  {code}" for code, n in result["clients"]["errors_by_code"].items()]
    if result["clients"]["notes"]:
        out += ["", "Client notes"]
        out += [f"  {n:6d}  {what}" for what, n in sorted(result["clients"]["notes"].items())]
    if result["clients"]["events_seen"]:
        seen = ", ".join(f"{k} {v}" for k, v in sorted(result["clients"]["events_seen"].items()))
        out.append(f"/v1/events received: {seen}")

    out += ["", "Agent processes (RSS MB, open fds; growth per hour, extrapolated)"]
    rows = []
    for lt in result["agent"]["lifetimes"]:
        r = lt["resources"]
        rss, fds = r.get("rss_mb", {}), r.get("fds", {})
        rows.append(
            [
                f"#{lt['index']} pid {lt['pid']}",
                _fmt(lt["seconds"], ".0f"),
                lt["exit"] or "running",
                f"{_fmt(rss.get('first'))}/{_fmt(rss.get('last'))}/{_fmt(rss.get('max'))}",
                f"{_fmt(rss.get('growth_per_h_after_warmup'))}",
                f"{_fmt(rss.get('growth_per_h_second_half'))}",
                f"{fds.get('first', '-')}/{fds.get('last', '-')}/{fds.get('max', '-')}",
                f"{_fmt(fds.get('growth_per_h_after_warmup'))}",
                f"{_fmt(fds.get('growth_per_h_second_half'))}",
                f"{r.get('threads', {}).get('first', '-')}/{r.get('threads', {}).get('max', '-')}",
            ]
        )
    out += _table(
        [
            "process",
            "s",
            "exit",
            "RSS first/last/max",
            "MB/h>60s",
            "MB/h 2nd half",
            "fds first/last/max",
            "fds/h>60s",
            "fds/h 2nd half",
            "threads first/max",
        ],
        rows,
    )

    a = result["audit"]
    out += [
        "",
        "Audit log",
        f"  records {a['records']}: " + ", ".join(f"{k} {v}" for k, v in a["by_event"].items()),
        f"  `card-agent audit verify`: {'ok' if a['verify_ok'] else 'FAILED'} "
        f"({a['verify'].get('reason') or 'chain valid'}; torn tails recovered at restarts: "
        f"{a['by_event'].get('log_recovered', 0)})",
        f"  signatures acknowledged to clients: {a['acknowledged']['total']} "
        f"(native {a['acknowledged']['native']}, compat {a['acknowledged']['compat']}); "
        f"with a sign_request record: {a['acknowledged_with_request_record']}; "
        f"without: {len(a['acknowledged_without_record'])}",
        f"  sign_request records {a['sign_requests']}: outcome ok {a['outcomes_ok']}, "
        f"failed {a['outcomes_failed']}, none {a['requests_without_outcome']} "
        f"(unexplained {len(a['requests_without_outcome_unexplained'])})",
        f"  signed (ok outcome) but the answer never reached the client: "
        f"{a['signed_not_acknowledged']}",
    ]
    t = result["telemetry"]
    b = t["before_storage"]
    out += [
        "",
        "Telemetry",
        f"  stored in the outbox (seq 1..{t['stored']}): {t['stored']}; delivered to the "
        f"subscriber: {t['delivered_unique']} (+{t['delivered_duplicates']} duplicates); "
        f"still in the outbox: {t['still_in_outbox']}; lost after storage: "
        f"{len(t['lost_after_storage'])}; dropped by overflow: {t['dropped_by_overflow']}",
        "  by type: " + ", ".join(f"{k} {v}" for k, v in t["by_type"].items()),
        f"  before storage: signatures known {b['signatures_known']} (audit ok outcomes + "
        f"acknowledged), signature events {b['signature_events']}, missing "
        f"{len(b['signatures_missing'])} (not at an agent kill: "
        f"{len(b['signatures_missing_unexplained'])}); pin_verify records "
        f"{b['pin_verify_records']}, events {b['pin_verify_events']}, missing "
        f"{b['pin_verify_missing']} (records just before a kill: "
        f"{b['pin_verify_records_just_before_a_kill']})",
    ]
    out += ["", "Must be zero"]
    failed = 0
    for name, value in result["checks"].items():
        mark = "ok  " if value == 0 else "FAIL"
        failed += value != 0
        out.append(f"  [{mark}] {name}: {value}")
    out.append("")
    out.append("PASS" if failed == 0 else f"FAIL: {failed} check(s) not zero")
    return "\n".join(out)

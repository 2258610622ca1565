"""The selftest's report: one row per check, the verdict, the exit code, the table.

Exit code (and `report["exit_code"]`): 0 all passed, 1 warnings only, 2 at least one
failure; skipped rows never count. The report holds no PIN, no holder name and only
the masked card number: it may travel to the fleet's telemetry.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent import __version__
from agent.selftest.registry import Status, registered


@dataclass
class CheckResult:
    """A row of the report."""

    id: str
    title: str
    status: Status
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0


def exit_code(results: Iterable[CheckResult]) -> int:
    statuses = {r.status for r in results}
    return 2 if "fail" in statuses else 1 if "warn" in statuses else 0


def build_report(
    results: Sequence[CheckResult], mode: str, started: float, started_at: datetime
) -> dict[str, Any]:
    """The JSON-ready report; `started` is a `time.monotonic()` reading."""
    code = exit_code(results)
    counts = {s: sum(1 for r in results if r.status == s) for s in ("pass", "warn", "fail", "skip")}
    return {
        "version": __version__,
        "mode": mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "status": ("pass", "warn", "fail")[code],
        "exit_code": code,
        "counts": counts,
        "checks": [asdict(r) for r in results],
    }


def invalid_config_report(error: str) -> dict[str, Any]:
    """The report when the configuration cannot even be loaded: config fails, every
    other check is skipped."""
    started, started_at = time.monotonic(), datetime.now(UTC)
    first, *rest = registered()
    results = [
        CheckResult(
            first.id,
            first.title,
            "fail",
            error.splitlines()[0],
            "fix the file named above; `card-agent config check` shows every problem",
            {"error": error},
        )
    ]
    results += [CheckResult(s.id, s.title, "skip", "configuration invalid") for s in rest]
    return build_report(results, "none", started, started_at)


_MARK = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def format_table(report: dict[str, Any]) -> str:
    """The human-readable report: one row per check, fix hints under the others."""
    checks = report["checks"]
    width = max(len(c["title"]) for c in checks)
    lines = [f"card-agent {report['version']} selftest ({report['mode']} mode)", ""]
    for c in checks:
        lines.append(f"  {_MARK[c['status']]}  {c['title']:<{width}}  {c['message']}")
        if c["hint"]:
            lines.append(f"        {'':<{width}}  fix: {c['hint']}")
    counts = report["counts"]
    verdict = {0: "all checks passed", 1: "warnings", 2: "FAILED"}[report["exit_code"]]
    lines += [
        "",
        f"{verdict}: {counts['pass']} passed, {counts['warn']} warning(s), "
        f"{counts['fail']} failed, {counts['skip']} skipped in {report['duration_ms']:.0f} ms",
    ]
    return "\n".join(lines)

"""Reading an agent's audit log in tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent.audit import AuditLog


def audit_records(path: Path, log: AuditLog | None = None) -> list[dict[str, Any]]:
    """Every record. With the running agent's `log`, first wait for its writer thread:
    outcome records follow the answer by a moment."""
    if log is not None:
        assert log.flush(10), "the audit writer did not catch up"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def signatures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each signature's request record merged with its outcome record, in order."""
    requests = {r["id"]: r for r in records if r["event"] == "sign_request"}
    return [
        {**requests[r["request"]], **r}
        for r in records
        if r["event"] == "sign" and r.get("request") in requests
    ]

"""What the clients saw: requests answered per kind, errors by code, latencies.

A request is *answered* when the agent sent a response (success or a documented error);
*unanswered* when the client got none (connection refused while the agent restarts, a
reset when it is killed, a client-side timeout). Error codes are the API's `code`, the
compat endpoint's `Err:...` string, or `no_answer:<exception>` for the unanswered.

Codes that no fault explains (a 500, a signature that does not verify, an answer that
is not the documented shape) are *unexpected*: the run fails on them.
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

UNEXPECTED_CODES = frozenset(
    {
        "internal_error",
        "invalid_input",
        "signature_invalid",
        "audit_unavailable",
        "bad_response",  # the answer is not the documented shape
        "Err:CardAgent.internal_error",
        "Err:CardAgent.signature_invalid",
        "Err:Base50000",  # our compat requests are well-formed
    }
)


def percentile(ordered: Any, q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence (q in 0..1)."""
    n = len(ordered)
    if n == 0:
        return None
    return float(ordered[max(0, math.ceil(q * n) - 1)])


@dataclass(frozen=True)
class SignAck:
    """A signature a client received: the native API names its audit record; the compat
    protocol does not, so compat requests carry a unique title to find it by."""

    via: Literal["native", "compat"]
    title: str
    audit_id: str | None
    wall: float  # time.time() when the answer arrived


@dataclass
class _Kind:
    ok_ms: array[float] = field(default_factory=lambda: array("d"))
    error_ms: array[float] = field(default_factory=lambda: array("d"))
    errors: Counter[str] = field(default_factory=Counter)
    unanswered: Counter[str] = field(default_factory=Counter)


class Recorder:
    def __init__(self) -> None:
        self._kinds: dict[str, _Kind] = {}
        self.acks: list[SignAck] = []
        self.events_seen: Counter[str] = Counter()  # /v1/events messages by type
        self.notes: Counter[str] = Counter()  # things worth counting (reconnects, ...)

    def _kind(self, kind: str) -> _Kind:
        found = self._kinds.get(kind)
        if found is None:
            found = self._kinds[kind] = _Kind()
        return found

    def answered(self, kind: str, started: float, code: str | None = None) -> float:
        """An answer arrived; `started` is its time.monotonic() at sending. Returns ms."""
        ms = (time.monotonic() - started) * 1000
        k = self._kind(kind)
        if code is None:
            k.ok_ms.append(ms)
        else:
            k.error_ms.append(ms)
            k.errors[code] += 1
        return ms

    def unanswered(self, kind: str, exc: BaseException | str) -> None:
        what = exc if isinstance(exc, str) else type(exc).__name__
        self._kind(kind).unanswered[f"no_answer:{what}"] += 1

    def ack(self, ack: SignAck) -> None:
        self.acks.append(ack)

    # --- read-outs ------------------------------------------------------------------

    def totals(self) -> dict[str, int]:
        answered = sum(len(k.ok_ms) + len(k.error_ms) for k in self._kinds.values())
        errors = sum(sum(k.errors.values()) for k in self._kinds.values())
        unanswered = sum(sum(k.unanswered.values()) for k in self._kinds.values())
        return {"answered": answered, "errors": errors, "unanswered": unanswered}

    def unexpected(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for name, k in self._kinds.items():
            for code, n in k.errors.items():
                if code in UNEXPECTED_CODES:
                    out[f"{name}:{code}"] += n
        return dict(out)

    def errors_by_code(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for k in self._kinds.values():
            out.update(k.errors)
            out.update(k.unanswered)
        return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))

    def by_kind(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in sorted(self._kinds):
            k = self._kinds[name]
            ok = sorted(k.ok_ms)
            every = sorted([*k.ok_ms, *k.error_ms])
            out[name] = {
                "answered": len(every),
                "ok": len(ok),
                "errors": dict(sorted(k.errors.items())),
                "unanswered": dict(sorted(k.unanswered.items())),
                "ok_p50_ms": _ms(percentile(ok, 0.50)),
                "ok_p99_ms": _ms(percentile(ok, 0.99)),
                "ok_max_ms": _ms(ok[-1] if ok else None),
                "all_p99_ms": _ms(percentile(every, 0.99)),
            }
        return out


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)

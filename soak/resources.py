"""RSS and open file descriptors of a process, from /proc, and their growth per hour.

Growth is the least-squares slope of the samples of ONE process lifetime (a restart
starts from scratch, so lifetimes are never mixed), extrapolated to an hour. A process
grows while it warms up (imports, caches, first connections), so the slope is taken
after a warm-up, and once more over the second half of the lifetime alone: a leak shows
in both, warm-up growth only in the first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GROWTH_WARMUP_S = 60.0
MIN_SPAN_S = 30.0  # a slope over less than this says nothing per hour
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since the process started
    rss_kb: int
    fds: int
    threads: int
    cpu_s: float = 0.0  # user + system time so far


def read_sample(pid: int, t_s: float) -> Sample | None:
    """None if the process is gone (or not readable)."""
    try:
        rss_kb = threads = 0
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kb = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rpartition(")")[2].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    if rss_kb == 0:  # a zombie: exited, not reaped yet
        return None
    return Sample(t_s, rss_kb, fds, threads, cpu_s)


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value), per hour; None without enough data."""
    if len(points) < MIN_SAMPLES:
        return None
    ts = [p[0] for p in points]
    if max(ts) - min(ts) < MIN_SPAN_S:
        return None
    n = len(points)
    mean_t = sum(ts) / n
    mean_v = sum(p[1] for p in points) / n
    var = sum((t - mean_t) ** 2 for t in ts)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return cov / var * 3600.0


def _rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def growth(samples: Sequence[Sample], warmup_s: float = GROWTH_WARMUP_S) -> dict[str, Any]:
    """Summary of one lifetime: first/last/max and growth per hour (after warm-up, and
    over the second half of the lifetime)."""
    if not samples:
        return {"samples": 0}
    span = samples[-1].t_s - samples[0].t_s
    after = [s for s in samples if s.t_s >= warmup_s]
    half = [s for s in samples if s.t_s >= samples[0].t_s + span / 2]

    def mb(s: Sample) -> float:
        return s.rss_kb / 1024

    return {
        "samples": len(samples),
        "span_s": round(span, 1),
        "rss_mb": {
            "first": round(mb(samples[0]), 1),
            "last": round(mb(samples[-1]), 1),
            "max": round(max(mb(s) for s in samples), 1),
            "growth_per_h_after_warmup": _rounded(slope_per_hour([(s.t_s, mb(s)) for s in after])),
            "growth_per_h_second_half": _rounded(slope_per_hour([(s.t_s, mb(s)) for s in half])),
        },
        "fds": {
            "first": samples[0].fds,
            "last": samples[-1].fds,
            "max": max(s.fds for s in samples),
            "growth_per_h_after_warmup": _rounded(slope_per_hour([(s.t_s, s.fds) for s in after])),
            "growth_per_h_second_half": _rounded(slope_per_hour([(s.t_s, s.fds) for s in half])),
        },
        "threads": {"first": samples[0].threads, "max": max(s.threads for s in samples)},
    }

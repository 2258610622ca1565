"""How fast the card layer is in-process: APDU round trips and signatures.

    .venv/bin/python bench/bench_card.py [--quick]

(a) APDU round trips per second for two cheap commands (PIN status: VERIFY without
    data; GET CHALLENGE of 8 bytes), measured three ways on the same card:
      - `card.process(raw)`: the software card alone, the baseline;
      - `ApduExchange.transmit`: + the exchange layer and `InProcessTransport`;
      - `EPortSession`: + the session (generation check, answer decoding).
(b) Signatures per second end to end (`EPortSession.sign` -> exchange -> transport ->
    simulated card, timing model off) for SM2, RSA-1024/SHA-1 and RSA-2048/SHA-256,
    and separately the host-side SM2 cost, e = SM3(Z || M).

Each figure is the median of several timed runs after a warm-up, timed with
`time.perf_counter`. Numbers depend on the machine; the core count is printed with
them (all of this is single-threaded).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from card.apdu import CommandApdu
from card.crypto.sm2 import sm2_e
from card.eport import profile as p
from card.eport.session import EPortSession
from card.exchange import ApduExchange
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.profiles import PROFILES
from simulator.state import CardFactory

TARGET_APDUS_PER_S = 50_000
MESSAGE = bytes(range(256)) * 4  # 1 KiB, about the size of a policy claim to sign


@dataclass(frozen=True)
class Plan:
    runs: int
    apdu_batch: int
    sign_batch: int
    rsa2048_batch: int
    hash_batch: int


FULL = Plan(runs=7, apdu_batch=20_000, sign_batch=200, rsa2048_batch=40, hash_batch=5_000)
QUICK = Plan(runs=3, apdu_batch=3_000, sign_batch=30, rsa2048_batch=8, hash_batch=1_000)


@dataclass(frozen=True)
class Result:
    label: str
    ops_per_s: float  # median over the runs
    spread: float  # (max - min) / median of the per-run rates

    @property
    def us_per_op(self) -> float:
        return 1e6 / self.ops_per_s


def measure(label: str, op: Callable[[], object], batch: int, runs: int) -> Result:
    """Median rate of `runs` timed batches of `batch` calls, after one warm-up batch."""
    for _ in range(max(1, batch // 10)):
        op()
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(batch):
            op()
        rates.append(batch / (time.perf_counter() - start))
    median = statistics.median(rates)
    return Result(label, median, (max(rates) - min(rates)) / median)


def new_session(card: SimulatedCard) -> tuple[EPortSession, InProcessTransport]:
    transport = InProcessTransport(card)
    return EPortSession.open(transport), transport


def bench_apdus(factory: CardFactory, plan: Plan) -> list[tuple[Result, Result]]:
    """Rows of (result, baseline) for the APDU round-trip table."""
    card = SimulatedCard(factory.make_state("legal-person-sm2"))
    session, _ = new_session(card)
    exchange: ApduExchange = session.exchange

    status = CommandApdu(0x00, p.INS_VERIFY, 0x00, p.PIN_REF)
    challenge = CommandApdu(0x00, p.INS_GET_CHALLENGE, 0x00, 0x00, b"", 8)
    status_raw, challenge_raw = status.encode(), challenge.encode()
    assert card.process(status_raw)[-2:] == b"\x63\xca"
    assert card.process(challenge_raw)[-2:] == b"\x90\x00"

    n, runs = plan.apdu_batch, plan.runs
    rows = []
    for name, cmd, raw, session_op in (
        ("PIN status", status, status_raw, session.pin_status),
        ("GET CHALLENGE 8", challenge, challenge_raw, session.get_challenge),
    ):
        base = measure(f"{name}: card.process(raw)", partial(card.process, raw), n, runs)
        via_exchange = measure(
            f"{name}: ApduExchange.transmit", partial(exchange.transmit, cmd), n, runs
        )
        via_session = measure(f"{name}: EPortSession", session_op, n, runs)
        rows += [(base, base), (via_exchange, base), (via_session, base)]
    return rows


def bench_signatures(factory: CardFactory, plan: Plan) -> list[Result]:
    results = []
    point: bytes | None = None
    for name, label, batch in (
        ("legal-person-sm2", "SM2 (e on host, r||s)", plan.sign_batch),
        ("legacy-rsa1024", "RSA-1024 / SHA-1", plan.sign_batch),
        ("rsa2048", "RSA-2048 / SHA-256", plan.rsa2048_batch),
    ):
        card = SimulatedCard(factory.make_state(name))  # TimingModel.INSTANT by default
        assert card.knobs.apdu_delay_s == 0
        session, _ = new_session(card)
        session.verify_pin(PROFILES[name].pin)
        certificate = session.signing_certificate()  # read once, before timing
        point = point or certificate.sm2_point
        results.append(measure(label, partial(session.sign, MESSAGE), batch, plan.runs))
    assert point is not None
    results.append(
        measure(
            f"host only: SM2 e = SM3(Z||M), {len(MESSAGE)} B",
            partial(sm2_e, point, MESSAGE),
            plan.hash_batch,
            plan.runs,
        )
    )
    return results


def machine() -> str:
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {cores} cores ({usable} usable), "
        f"CPU: {platform.processor() or 'unknown'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter runs (smoke test)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    print(f"card-agent bench_card{' (--quick)' if args.quick else ''}")
    print(machine())
    print(f"median of {plan.runs} timed runs after a warm-up; single-threaded; timing model off")
    factory = CardFactory()
    apdu_rows = bench_apdus(factory, plan)
    sign_rows = bench_signatures(factory, plan)

    print()
    print(f"(a) APDU round trips, in-process (batches of {plan.apdu_batch})")
    header = f"  {'path':<44} {'APDUs/s':>10} {'µs/APDU':>8} {'vs raw':>7} {'spread':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for result, base in apdu_rows:
        print(
            f"  {result.label:<44} {result.ops_per_s:>10,.0f} {result.us_per_op:>8.2f}"
            f" {result.ops_per_s / base.ops_per_s:>7.2f} {result.spread:>6.0%}"
        )
    through_exchange = [r for r, _ in apdu_rows if "card.process" not in r.label]
    slowest = min(through_exchange, key=lambda r: r.ops_per_s)
    verdict = "met" if slowest.ops_per_s >= TARGET_APDUS_PER_S else "MISSED"
    print(
        f"  target >= {TARGET_APDUS_PER_S:,}/s through the exchange layer: {verdict} "
        f"(slowest: {slowest.label}, {slowest.ops_per_s:,.0f}/s)"
    )

    print()
    print(f"(b) signatures end to end: EPortSession.sign({len(MESSAGE)}-byte message)")
    header = f"  {'operation':<44} {'ops/s':>10} {'ms/op':>8} {'spread':>7}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for result in sign_rows:
        print(
            f"  {result.label:<44} {result.ops_per_s:>10,.1f} {result.us_per_op / 1000:>8.3f}"
            f" {result.spread:>6.0%}"
        )
    return 0 if verdict == "met" else 1


if __name__ == "__main__":
    raise SystemExit(main())

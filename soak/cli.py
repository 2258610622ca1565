"""`python -m soak`: the command line of the soak run.

Exit status: 0 every must-be-zero figure is zero; 1 one is not (the report says which);
2 usage error; 3 the run could not be set up (a prerequisite missing, a child that did
not start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from soak.children import SetupError
from soak.plan import FAULT_KINDS, Holds
from soak.report import render
from soak.run import Soak, SoakOptions

MAX_MINUTES = 24 * 60


def parse_args(argv: list[str] | None) -> SoakOptions:
    parser = argparse.ArgumentParser(
        prog="python -m soak",
        description="Soak card-agent on the PC/SC backend under load while injecting faults "
        "(card pulls, pcscd kill and SIGSTOP, broker outage, agent kill -9), then check "
        "that no audit record and no telemetry event was lost.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="load duration (default 10)")
    parser.add_argument("--pcscd-stop-seconds", type=float, default=20.0, metavar="S")
    parser.add_argument("--broker-outage-seconds", type=float, default=30.0, metavar="S")
    parser.add_argument("--card-out-seconds", type=float, default=3.0, metavar="S")
    parser.add_argument(
        "--skip-fault",
        action="append",
        default=[],
        choices=FAULT_KINDS,
        metavar="KIND",
        help="leave this fault out (repeatable; e.g. agent_kill for one long agent "
        f"lifetime to watch growth). Kinds: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument("--signers", type=int, default=2, help="native signing clients (2)")
    parser.add_argument("--seed", type=int, help="seed of the load's randomness")
    parser.add_argument("--workdir", type=Path, help="keep state and logs here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workdir")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the result here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES}]")
    if not 1 <= args.signers <= 8:
        parser.error("--signers must be 1..8")
    for name in ("pcscd_stop_seconds", "broker_outage_seconds", "card_out_seconds"):
        if not 0 < getattr(args, name) <= 600:
            parser.error(f"--{name.replace('_', '-')} must be in (0, 600]")
    return SoakOptions(
        minutes=args.minutes,
        holds=Holds(
            card_out_s=args.card_out_seconds,
            broker_outage_s=args.broker_outage_seconds,
            pcscd_stop_s=args.pcscd_stop_seconds,
        ),
        skip_faults=frozenset(args.skip_fault),
        signers=args.signers,
        seed=args.seed,
        workdir=args.workdir,
        keep=args.keep,
        json_path=args.json,
        quiet=args.quiet,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if options.quiet else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    soak = Soak(options)
    try:
        result = asyncio.run(soak.run())
    except SetupError as exc:
        print(f"soak: cannot run: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"soak: interrupted; state and logs in {soak.workdir}", file=sys.stderr)
        return 130
    print(render(result))
    if options.json_path is not None:
        options.json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    passed = all(v == 0 for v in result["checks"].values())
    soak.cleanup(passed)
    if not passed:
        print(f"state and logs kept in {soak.workdir}", file=sys.stderr)
    return 0 if passed else 1

"""How long `card-agent selftest` takes on the simulated card (budget: 1.5 s, no --sign).

Measured, each as the median of N runs after one warm-up run (the first run of a fresh
state directory makes the simulated card, i.e. generates its keys):

  in-process, in-agent   run_selftest(config, ServiceAccess.remote(service)) on the
                         running agent's event loop: what the MQTT remote command does
  in-process, via API    run_selftest over the CLI's way to the card, in another
                         thread while the agent runs: the CLI's path minus interpreter
                         start-up
  in-process, direct     the same with no agent: the CLI's own card service (api check
                         skipped: nothing to probe)
  subprocess, via API    `card-agent selftest --json` against a running
                         `card-agent serve`: what an operator waits for
  subprocess, direct     `card-agent selftest --json --skip api` with no agent

Every run must end with every check passed (or skipped); the script says so and exits
1 otherwise, or when a median is over the budget.

Usage:
    .venv/bin/python bench/bench_selftest.py [-n 15] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.access.service import ServiceAccess  # noqa: E402
from agent.cli.card_access import DeferredCardAccess  # noqa: E402
from agent.config import Config, load_config  # noqa: E402
from agent.runtime import build_runtime  # noqa: E402
from agent.selftest import run_selftest  # noqa: E402
from tests.support.server import ServerThread  # noqa: E402

CARD_AGENT = Path(sys.executable).with_name("card-agent")
ORIGIN = "chrome-extension://" + "abcdefghijklmnop" * 2
BUDGET_S = 1.5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(directory: Path, port: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        f'[server]\nport = {port}\n[security]\nallowed_origins = ["{ORIGIN}"]\n'
        f'[card]\nbackend = "simulated"\n[paths]\nstate_dir = "{directory / "state"}"\n'
    )
    return path


def check(report: dict[str, Any], what: str) -> None:
    if report["exit_code"] != 0:
        bad = [c["id"] for c in report["checks"] if c["status"] not in ("pass", "skip")]
        raise SystemExit(f"{what}: selftest did not pass ({', '.join(bad)})")


def measure(n: int, run: Callable[[], dict[str, Any]], what: str) -> list[float]:
    check(run(), what)  # warm-up
    times = []
    for _ in range(n):
        started = time.perf_counter()
        report = run()
        times.append(time.perf_counter() - started)
        check(report, what)
    return times


async def cli_selftest(config: Config, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """What `card-agent selftest` runs, without the interpreter start-up."""
    async with contextlib.AsyncExitStack() as stack:
        return await run_selftest(config, DeferredCardAccess(config, stack), skip=skip)


def cli_run(config: Path, *extra: str) -> dict[str, Any]:
    result = subprocess.run(
        [str(CARD_AGENT), "selftest", "--json", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(json.loads(result.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=15, help="runs per mode (default 15)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results: dict[str, list[float]] = {}

    with tempfile.TemporaryDirectory(prefix="bench-selftest-") as tmp:
        root = Path(tmp)

        # In-process: the agent on uvicorn in a thread, the selftest on its loop or ours.
        config_path = write_config(root / "inproc", free_port())
        runtime = build_runtime(load_config(config_path, env={}))
        config = runtime.config
        try:
            with ServerThread.on_port(runtime.app, config.server.port) as server:
                results["in-process, in-agent"] = measure(
                    args.n,
                    lambda: server.call(
                        run_selftest(config, ServiceAccess.remote(runtime.service))
                    ),
                    "in-agent",
                )
                results["in-process, via API"] = measure(
                    args.n, lambda: asyncio.run(cli_selftest(config)), "via API"
                )
        finally:
            # The stopped agent's audit log is still open (and locked) in this process;
            # the CLI's own card service needs it.
            runtime.audit.close()
        results["in-process, direct"] = measure(
            args.n, lambda: asyncio.run(cli_selftest(config, skip=("api",))), "direct"
        )

        # Subprocesses: a real `card-agent serve`, then none.
        config_path = write_config(root / "subproc", free_port())
        agent = subprocess.Popen(
            [str(CARD_AGENT), "serve", "--config", str(config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    socket.create_connection(("127.0.0.1", load_port(config_path)), 0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or agent.poll() is not None:
                        raise SystemExit("card-agent serve did not start") from None
                    time.sleep(0.05)
            results["subprocess, via API"] = measure(
                args.n, lambda: cli_run(config_path), "subprocess via API"
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
        results["subprocess, direct"] = measure(
            args.n, lambda: cli_run(config_path, "--skip", "api"), "subprocess direct"
        )

    print(f"card-agent selftest, simulated card, no --sign; median of {args.n} runs")
    print(f"({platform.python_implementation()} {platform.python_version()}, {platform.machine()})")
    print()
    print(f"{'mode':<24} {'median':>9} {'min':>9} {'max':>9}")
    over = False
    summary = {}
    for mode, times in results.items():
        median = statistics.median(times)
        over |= median > BUDGET_S
        summary[mode] = {"median_s": median, "min_s": min(times), "max_s": max(times)}
        print(
            f"{mode:<24} {median * 1000:>7.0f} ms {min(times) * 1000:>6.0f} ms "
            f"{max(times) * 1000:>6.0f} ms"
        )
    print()
    print(f"budget {BUDGET_S * 1000:.0f} ms: {'EXCEEDED' if over else 'met'}")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.n, "modes": summary}, indent=2))
    sys.exit(1 if over else 0)


def load_port(config_path: Path) -> int:
    import tomllib

    return int(tomllib.loads(config_path.read_text())["server"]["port"])


if __name__ == "__main__":
    main()

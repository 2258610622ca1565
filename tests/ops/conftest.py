"""Operations tier: the CLI, the selftest, systemd units, the notifier, the installer.

Agents run as real `card-agent serve` subprocesses (or in-process on uvicorn where a
test needs the runtime), on free loopback ports, with state in tmp directories and the
simulated card unless a test brings a private pcscd. Processes are stopped by the pid
we started, never by name.

Missing system tools (systemd-analyze, unshare, mosquitto, pcscd/vpcd) skip a test
locally with the reason; under CI (CI=1) they fail it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CARD_AGENT = BIN / "card-agent"
SANDBOX = Path(__file__).with_name("sandbox_exec.py")
ORIGIN = "chrome-extension://" + "abcdefghijklmnop" * 2
PIN = "88888888"  # the simulated cards' PIN (rsa2048: 00000000)
START_TIMEOUT_S = 15.0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(
    directory: Path,
    *,
    profile: str = "legal-person-sm2",
    backend: str = "simulated",
    port: int | None = None,
    extra: str = "",
    card_extra: str = "",
    server_extra: str = "",
) -> Path:
    """A TOML config: state in `directory/state`, an allowed origin, a free port."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(
        f"""
[server]
port = {port or free_port()}
{server_extra}

[security]
allowed_origins = ["{ORIGIN}"]

[card]
backend = "{backend}"
profile = "{profile}"
{card_extra}

[paths]
state_dir = "{directory / "state"}"
{extra}
""",
        encoding="utf-8",
    )
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: ours without CARD_AGENT_* and systemd vars."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CARD_AGENT_")
        and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "PCSCLITE_CSOCK_NAME")
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def cli(
    *args: str,
    config: Path | None = None,
    input: str | None = None,
    prefix: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    cmd = [*prefix, str(CARD_AGENT), *args]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run(
        cmd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
        cwd=ROOT,
        check=False,
    )


def port_of(config: Path) -> int:
    import tomllib

    return int(tomllib.loads(config.read_text())["server"]["port"])


def http_status(port: int, timeout: float = 1.0) -> dict[str, Any] | None:
    from agent.access.agent_api import AgentClient

    return AgentClient("127.0.0.1", port).probe(timeout)


@dataclass
class AgentProcess:
    """`card-agent serve` in a subprocess; stopped with SIGTERM by its own pid."""

    config: Path
    prefix: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=clean_env)
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def port(self) -> int:
        return port_of(self.config)

    def start(self, wait: bool = True) -> AgentProcess:
        self.log = self.config.with_name("serve.log")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, str(CARD_AGENT), "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}:\n{self.output()}")
            if http_status(self.port, 0.2) is not None:
                return
            time.sleep(0.02)
        raise RuntimeError(f"agent not answering after {timeout} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode


@pytest.fixture
def agent_process() -> Iterator[list[AgentProcess]]:
    """Collects agents a test starts and stops them all afterwards."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def start_agent(
    registry: list[AgentProcess], config: Path, *, prefix: Sequence[str] = (), **env: str
) -> AgentProcess:
    agent = AgentProcess(config, prefix=prefix, env=clean_env(**env))
    registry.append(agent)
    return agent.start()


# --- in-process agent (the runtime the MQTT remote selftest gets) -------------------------


@dataclass
class InProcessAgent:
    runtime: Any
    server: ServerThread

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run `coro` on the agent's own event loop (as a component would)."""
        return self.server.call(coro, timeout)


@contextlib.contextmanager
def in_process_agent(config_path: Path) -> Iterator[InProcessAgent]:
    from agent.config import load_config
    from agent.runtime import build_runtime

    config = load_config(config_path, env={})
    runtime = build_runtime(config)
    try:
        with ServerThread.on_port(runtime.app, config.server.port) as server:
            yield InProcessAgent(runtime, server)
    finally:
        runtime.audit.close()


def report_of(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        data = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"not JSON:\n{result.stdout}\n{result.stderr}") from None
    assert isinstance(data, dict)
    return data


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}

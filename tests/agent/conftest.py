"""Agent tier: the real API on a real uvicorn server, on a free loopback port.

Every agent runs in-process in a background thread (`uvicorn.Server` with
`should_exit` for shutdown), built by `agent.runtime.build_runtime` from a `Config`
with a temporary state directory and a simulated card kept in memory
(`sim_state_file=""`), so tests reach the card itself and the reader
(`agent.pull_card()` / `insert_card()`), on the simulated backend; marked `pcsc`, on
the PC/SC backend with the same software card behind pcscd + vpcd; marked `skf`, on the
SKF backend with the same card in a softskf token (tests/skf/softskf/plugged.py). Tests
observe the card through `CardHandle`'s backend-neutral methods (tests/pcscd_support.py).

The listening socket is bound before the server starts (port 0), so the port in the
Host allowlist is the one the server really listens on, with no race for a free port.

The agent's logs (`card`, `agent`, `simulator`, `uvicorn`)
go to `agent.log_path` at DEBUG; every response a helper client receives is kept in
`agent.bodies`, so leak tests can grep both.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect as ws_client
from websockets.typing import Origin

from agent.config import CardConfig, Config, PathsConfig, SecurityConfig, ServerConfig
from agent.pairing import PairingStore
from agent.runtime import Runtime, audit_path, build_runtime, pairing_path
from tests.pcscd_support import BACKENDS, CardHandle, PcscCard, plugged_card
from tests.skf.softskf.plugged import SkfCard, plugged_skf_card
from tests.support.constants import CARD_PIN, ORIGIN, OTHER_ORIGIN, UNLISTED_ORIGIN
from tests.support.logs import captured_logs
from tests.support.server import ServerThread, loopback_socket

__all__ = ["CARD_PIN", "ORIGIN", "OTHER_ORIGIN", "UNLISTED_ORIGIN"]

CARD_AGENT = Path(sys.executable).with_name("card-agent")
START_TIMEOUT_S = 10.0
# httpx builds an SSL context per client unless given one (~20 ms each): share one.
# trust_env=False: no proxy from the environment between the tests and 127.0.0.1.
_TLS = ssl.create_default_context()


# --- the running agent ---------------------------------------------------------------


@dataclass
class Agent(CardHandle):
    runtime: Runtime = field(repr=False)
    port: int
    root: Path  # tmp dir of this agent: state dir and log file live under it
    log_path: Path
    # Every response the helper clients got, and every command APDU the card got (PIN
    # blocks included: kept out of repr so that no assertion message prints them).
    bodies: list[bytes] = field(default_factory=list, repr=False)
    apdus: list[bytes] = field(default_factory=list, repr=False)
    # PC/SC backend only: the software card behind vpcd, its link and its reader.
    vpcd: PcscCard | None = field(default=None, repr=False)
    # SKF backend only: the softskf token holding the card.
    skf: SkfCard | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/events"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def state_dir(self) -> Path:
        return self.runtime.config.paths.state_dir

    @property
    def audit_path(self) -> Path:
        return audit_path(self.runtime.config)

    @property
    def pairing_path(self) -> Path:
        return pairing_path(self.runtime.config)

    @contextlib.contextmanager
    def untouched(self) -> Iterator[None]:
        """Asserts that nothing in the block reached a handler that does anything:
        nothing sent to the card, no PIN try spent, no audit record written."""
        operations, tries, records = (
            self.card_operations(),
            self.pin_tries_left(),
            self.audit_size(),
        )
        yield
        assert self.card_operations() == operations
        assert self.pin_tries_left() == tries
        assert self.audit_size() == records

    def audit_size(self) -> int:
        return self.audit_path.stat().st_size if self.audit_path.exists() else 0

    def record(self, response: httpx.Response) -> None:
        response.read()
        self.bodies.append(response.content)

    def client(
        self, origin: str | None = ORIGIN, token: str | None = None, **kwargs: Any
    ) -> httpx.Client:
        """A plain HTTP client; Origin and token are sent when given."""
        headers: dict[str, str] = {}
        if origin is not None:
            headers["Origin"] = origin
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=30,
            verify=_TLS,
            trust_env=False,
            event_hooks={"response": [self.record]},
            **kwargs,
        )

    def async_client(
        self, origin: str | None = ORIGIN, token: str | None = None, **kwargs: Any
    ) -> httpx.AsyncClient:
        headers: dict[str, str] = {}
        if origin is not None:
            headers["Origin"] = origin
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"

        async def record(response: httpx.Response) -> None:
            await response.aread()
            self.bodies.append(response.content)

        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=60,
            verify=_TLS,
            trust_env=False,
            event_hooks={"response": [record]},
            **kwargs,
        )

    # --- pairing -----------------------------------------------------------------

    def request_pairing(self, origin: str | None = ORIGIN, name: str = "test") -> dict[str, Any]:
        with self.client(origin) as c:
            r = c.post("/v1/pair", json={"client_name": name})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def claim(self, request_id: str, origin: str | None = ORIGIN) -> httpx.Response:
        with self.client(origin) as c:
            return c.post("/v1/pair/claim", json={"request_id": request_id})

    def pair(
        self, origin: str | None = ORIGIN, name: str = "test", *, use_cli: bool = False
    ) -> str:
        """The real flow: ask, approve on the kiosk side, claim. Returns the token."""
        req = self.request_pairing(origin, name)
        pending = self.claim(req["request_id"], origin)
        assert pending.status_code == 202, pending.text
        assert pending.json() == {"status": "pending"}
        if use_cli:
            cli_approve(self.state_dir, req["code"])
        else:
            PairingStore(self.pairing_path).approve(req["code"])
        r = self.claim(req["request_id"], origin)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "approved"
        token = body["token"]
        assert isinstance(token, str)
        assert len(token) >= 32
        return token

    def client_id(self, name: str) -> str:
        """The client_id of the paired client called `name` (as `pair list` shows it)."""
        clients = PairingStore(self.pairing_path).list_clients()
        named = [c.client_id for c in clients if c.client_name == name]
        assert len(named) == 1, clients
        return named[0]

    # --- card, PIN, signing -------------------------------------------------------

    def verify(self, client: httpx.Client, pin: str = CARD_PIN, **extra: Any) -> httpx.Response:
        return client.post("/v1/pin/verify", json={"pin": pin, **extra})

    def tries_left(self, client: httpx.Client) -> Any:
        r = client.get("/v1/pin")
        assert r.status_code == 200, r.text
        return r.json()["tries_left"]

    def audit_records(self) -> list[dict[str, Any]]:
        # Outcome records are written by the audit writer thread a moment after the
        # answer: wait for it, so a test sees every record of what it was answered.
        assert self.runtime.audit.flush(10)
        lines = self.audit_path.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def signature_records(self, audit_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The request record a signature's `audit_id` names, and its outcome record."""
        records = self.audit_records()
        request = [r for r in records if r["id"] == audit_id]
        outcome = [r for r in records if r.get("request") == audit_id]
        assert len(request) == 1, audit_id
        assert request[0]["event"] == "sign_request"
        assert len(outcome) == 1, audit_id
        assert outcome[0]["event"] == "sign"
        return request[0], outcome[0]

    def wait_for(self, what: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> bool:
        """Poll a condition (the agent acts on its own threads); True once it holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return True
            time.sleep(step)
        return what()

    def ws(self, origin: str | None = ORIGIN) -> ws_client:
        """A WebSocket client for /v1/events (Host is the agent's own; Origin as given)."""
        return websockets.connect(
            self.ws_url, origin=Origin(origin) if origin is not None else None, open_timeout=5
        )

    def card_present(self) -> bool:
        with self.client(origin=None) as c:
            return bool(c.get("/v1/status").json()["card_present"])


def sign_body(data: bytes = b"document to sign", **extra: Any) -> dict[str, Any]:
    return {
        "purpose": "seal",
        "title": "Test document",
        "data": base64.b64encode(data).decode(),
        **extra,
    }


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    code = body["error"]["code"]
    assert isinstance(code, str)
    return code


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert_no_traceback(response.content)
    assert error_code(response) == code, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    return error


def assert_no_traceback(body: bytes | str) -> None:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    assert "Traceback" not in text
    assert 'File "' not in text


def cli_approve(state_dir: Path, code: str) -> None:
    """`card-agent pair approve CODE`, the way the kiosk operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARD_AGENT_")}
    env["CARD_AGENT_PATHS__STATE_DIR"] = str(state_dir)
    done = subprocess.run(
        [str(CARD_AGENT), "pair", "approve", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "approved" in done.stdout


def raw_http(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are (no client fixing headers up); read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks: list[bytes] = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if _complete(b"".join(chunks)):
                break
    return b"".join(chunks)


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def raw_status(response: bytes) -> int:
    status_line = response.split(b"\r\n", 1)[0]
    return int(status_line.split()[1])


def raw_json(response: bytes) -> Any:
    return json.loads(response.partition(b"\r\n\r\n")[2])


# --- server ------------------------------------------------------------------------------


@contextlib.contextmanager
def running_agent(
    root: Path,
    *,
    security: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
    pcsc: PcscCard | None = None,
    skf: SkfCard | None = None,
) -> Iterator[Agent]:
    """An agent on the simulated backend, or, with `pcsc`, on the PC/SC backend reading
    the software card through pcscd + vpcd, or, with `skf`, on the SKF backend with the
    card in a softskf token (the card's settings then describe that card: its profile
    and timing)."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "agent.log"
    sock = loopback_socket()
    port = sock.getsockname()[1]
    card_settings = {"backend": "simulated", "sim_state_file": "", **(card or {})}
    if pcsc is not None:
        card_settings = {
            **{k: v for k, v in card_settings.items() if k not in ("profile", "timing")},
            "backend": "pcsc",
            "reader": pcsc.reader,
        }
    if skf is not None:
        card_settings = {
            **{k: v for k, v in card_settings.items() if k not in ("profile", "timing")},
            "backend": "skf",
            "registry": skf.registry_path,
        }
    config = Config(
        server=ServerConfig(host="127.0.0.1", port=port),
        security=SecurityConfig(**{"allowed_origins": (ORIGIN, OTHER_ORIGIN), **(security or {})}),
        card=CardConfig(**card_settings),
        paths=PathsConfig(state_dir=root / "state"),
    )
    with captured_logs(log_path):
        runtime = build_runtime(config)
        try:
            with ServerThread(runtime.app, sock):
                agent = Agent(runtime, port, root, log_path, vpcd=pcsc, skf=skf)
                agent.watch_card()
                if pcsc is not None or skf is not None:  # seen at the owner's first poll
                    assert agent.wait_for(agent.card_present, timeout=START_TIMEOUT_S)
                yield agent
        finally:
            runtime.audit.close()  # after the server stopped: its shutdown may still audit


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_agent(
    tmp_path: Path, backend_kind: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Agent]]:
    """`make_agent(security={...}, card={...})`: another agent with config overrides,
    on the backend this test runs with."""
    counter = itertools.count()
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> Agent:
            root = tmp_path / f"agent{next(counter)}"
            if backend_kind == "pcsc":
                overrides["pcsc"] = stack.enter_context(
                    plugged_card(request, overrides.get("card"))
                )
            elif backend_kind == "skf":
                overrides["skf"] = stack.enter_context(
                    plugged_skf_card(root / "token", overrides.get("card"))
                )
            return stack.enter_context(running_agent(root, **overrides))

        yield make


@pytest.fixture(scope="module", params=BACKENDS)
def shared_agent(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Agent]:
    """One agent for a whole module of probes that leave the card as it was."""
    with contextlib.ExitStack() as stack:
        root = tmp_path_factory.mktemp("shared")
        pcsc = stack.enter_context(plugged_card(request, None)) if request.param == "pcsc" else None
        skf = (
            stack.enter_context(plugged_skf_card(root / "token"))
            if request.param == "skf"
            else None
        )
        yield stack.enter_context(
            running_agent(root, security={"max_body_bytes": 64 * 1024}, pcsc=pcsc, skf=skf)
        )


@pytest.fixture
def agent(make_agent: Callable[..., Agent]) -> Agent:
    return make_agent(security={"max_body_bytes": 64 * 1024})


@pytest.fixture
def token(agent: Agent) -> str:
    return agent.pair()


@pytest.fixture
def client(agent: Agent, token: str) -> Iterator[httpx.Client]:
    with agent.client(ORIGIN, token) as c:
        yield c

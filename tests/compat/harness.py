"""Reusable pieces for the official-protocol tests: a running agent, a page-like client,
signature checks with the `openssl` CLI.

`serve(runtime)` runs any Runtime (simulated card or PC/SC) on a real uvicorn server in
a background thread; its lifespan starts the CompatServer on its own port. The PC/SC
variant builds its Config with `card.backend = "pcsc"` and calls the same `serve`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

from agent.compat.protocol import NEXT_BLOCK_METHOD, encode_blocks
from agent.compat.server import CompatServer
from agent.config import Config
from agent.runtime import Runtime, audit_path
from card.crypto.certs import certificate_to_pem
from card.crypto.sm2 import raw_to_der
from tests.pcscd_support import CardHandle, PcscCard
from tests.skf.softskf.plugged import SkfCard
from tests.support.audit import audit_records, signatures
from tests.support.constants import CARD_PIN, SW_ORIGIN
from tests.support.logs import captured_logs
from tests.support.server import ServerThread, loopback_socket

__all__ = ["CARD_PIN", "SW_ORIGIN", "loopback_socket"]

PRACTICE_ORIGIN = "http://127.0.0.1:8080"  # configured exactly in the default test config
START_TIMEOUT_S = 10.0
RECV_TIMEOUT_S = 30.0


def make_config(
    root: Path,
    *,
    api_port: int,
    card: dict[str, Any] | None = None,
    compat: dict[str, Any] | None = None,
    security: dict[str, Any] | None = None,
) -> Config:
    """An agent with the compat endpoint on a free port (port 0) and a simulated card
    kept in memory; override any section's fields."""
    return Config.model_validate(
        {
            "server": {"host": "127.0.0.1", "port": api_port},
            "security": security or {},
            "card": {"backend": "simulated", "sim_state_file": "", **(card or {})},
            "paths": {"state_dir": str(root / "state")},
            "compat": {
                "enabled": True,
                "port": 0,
                "allowed_origins": [PRACTICE_ORIGIN],
                **(compat or {}),
            },
        }
    )


@dataclass
class CompatAgent(CardHandle):
    runtime: Runtime = field(repr=False)
    api_port: int
    compat: CompatServer = field(repr=False)
    log_path: Path | None
    vpcd: PcscCard | None = field(default=None, repr=False)  # PC/SC backend only
    skf: SkfCard | None = field(default=None, repr=False)  # SKF backend only
    apdus: list[bytes] = field(default_factory=list, repr=False)  # watch_card()

    @property
    def port(self) -> int:
        assert self.compat.port is not None
        return self.compat.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self, origin: str = SW_ORIGIN) -> CompatClient:
        return CompatClient(self.url, origin)

    def audit_records(self) -> list[dict[str, Any]]:
        return audit_records(audit_path(self.runtime.config), self.runtime.audit)

    def signatures(self) -> list[dict[str, Any]]:
        """Each signature's request record merged with its outcome record, in order."""
        return signatures(self.audit_records())

    def wait_for(self, condition: Any, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.01)
        return bool(condition())


@contextlib.contextmanager
def serve(
    runtime: Runtime,
    sock: socket.socket,
    *,
    log_path: Path | None = None,
    vpcd: PcscCard | None = None,
    skf: SkfCard | None = None,
) -> Iterator[CompatAgent]:
    """Run the main app (its lifespan starts the card owner, the service and the
    CompatServer) until the block ends."""
    logs = captured_logs(log_path) if log_path is not None else contextlib.nullcontext()
    try:
        with logs, ServerThread(runtime.app, sock) as server:
            compat = next(c for c in runtime.components if isinstance(c, CompatServer))
            agent = CompatAgent(runtime, server.port, compat, log_path, vpcd, skf)
            agent.watch_card()
            if vpcd is not None or skf is not None:  # seen at the owner's first poll
                deadline = time.monotonic() + START_TIMEOUT_S
                while not runtime.service.card_state.card_present:
                    assert time.monotonic() < deadline, "the agent never saw the card"
                    time.sleep(0.01)
            yield agent
    finally:
        runtime.audit.close()  # after the server stopped: its shutdown may still audit


# --- a page-like client ----------------------------------------------------------------


class CompatClient:
    """Speaks like the page library: waits for the greeting, sends `{_method, _id,
    args}`, reads replies; `call_chunked` sends BLOCKTXT frames on `_nextBlock`."""

    def __init__(self, url: str, origin: str) -> None:
        # Entered as a context manager, as websockets wants; `close()` leaves it.
        self.ws: ClientConnection = connect(
            url, origin=Origin(origin), max_size=None, open_timeout=10, compression=None
        ).__enter__()
        self.greeting_text = self.ws.recv(timeout=RECV_TIMEOUT_S)
        self.greeting = json.loads(self.greeting_text)
        self._ids = iter(range(1, 1 << 30))

    def __enter__(self) -> CompatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.ws.close()

    def send(self, text: str) -> None:
        self.ws.send(text)

    def recv(self) -> dict[str, Any]:
        text = self.ws.recv(timeout=RECV_TIMEOUT_S)
        assert isinstance(text, str)
        value: dict[str, Any] = json.loads(text)
        return value

    def request(self, method: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole reply frame; checks it answers `method`."""
        req_id = next(self._ids)
        body: dict[str, Any] = {"_method": method, "_id": req_id}
        if args is not None:
            body["args"] = args
        self.send(json.dumps(body, ensure_ascii=False))
        frame = self.recv()
        assert frame["_method"] == method, frame
        assert frame["_id"] == req_id, frame
        return frame

    def call(self, method: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """`_args` of the reply: {Result, Data, Error}."""
        args_out: dict[str, Any] = self.request(method, args)["_args"]
        return args_out

    def call_chunked(
        self, method: str, args: dict[str, Any], *, budget: int | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Send like baseInvokeByFrames: first chunk, then each chunk `_nextBlock` asks
        for. Returns the `_nextBlock` frames and the reply frame."""
        req_id = next(self._ids)
        # Compact, like JSON.stringify.
        message = json.dumps(
            {"_method": method, "_id": req_id, "args": args},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        guid = str(uuid.uuid4())
        frames = (
            encode_blocks(message, guid) if budget is None else encode_blocks(message, guid, budget)
        )
        acks: list[dict[str, Any]] = []
        self.send(frames[0])
        while True:
            frame = self.recv()
            if frame["_method"] != NEXT_BLOCK_METHOD:
                return acks, frame
            acks.append(frame)
            item = frame["_args"]["Data"][0]
            assert item["guid"] == guid
            if not item["finish"]:
                self.send(frames[item["next"]])


def ok_data(reply_args: dict[str, Any]) -> list[Any]:
    assert reply_args["Result"] is True, reply_args
    assert reply_args["Error"] == []
    data: list[Any] = reply_args["Data"]
    return data


def error_of(reply_args: dict[str, Any]) -> tuple[str, str]:
    assert reply_args["Result"] is False, reply_args
    assert reply_args["Data"] == []
    message, code = reply_args["Error"]
    assert "Traceback" not in message
    return message, code


# --- raw upgrades (headers exactly as given) ---------------------------------------------


def raw_upgrade(port: int, headers: dict[str, str] | list[tuple[str, str]]) -> bytes:
    """A WebSocket upgrade with exactly these headers; returns what the server sends:
    the refusal, or the 101 response and the greeting frame."""
    items = list(headers.items()) if isinstance(headers, dict) else headers
    lines = ["GET / HTTP/1.1"] + [f"{k}: {v}" for k, v in items]
    lines += [
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef").decode(),
        "Sec-WebSocket-Version: 13",
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while not _upgrade_answered(data) and (chunk := sock.recv(65536)):
                data += chunk
    return data


def _upgrade_answered(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    if b" 101 " in head.split(b"\r\n", 1)[0]:
        return "握手成功".encode() in body
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def raw_status(response: bytes) -> int:
    return int(response.split(b"\r\n", 1)[0].split()[1])


# --- signatures, checked with the openssl CLI -------------------------------------------


def _openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, timeout=60, check=False)


def public_key_pem(cert_der: bytes, tmp: Path) -> Path:
    """The certificate's public key, extracted by openssl itself."""
    cert = tmp / "cert.pem"
    cert.write_text(certificate_to_pem(cert_der))
    out = _openssl("x509", "-in", str(cert), "-pubkey", "-noout")
    assert out.returncode == 0, out.stderr
    pub = tmp / "pub.pem"
    pub.write_bytes(out.stdout)
    return pub


def openssl_verifies(cert_der: bytes, message: bytes, signature: bytes, tmp: Path) -> bool:
    """SM2: raw r||s wrapped in DER, SM3 with the default ID. RSA: PKCS#1 v1.5, SHA-1."""
    tmp.mkdir(parents=True, exist_ok=True)
    pub = public_key_pem(cert_der, tmp)
    msg, sig = tmp / "msg", tmp / "sig"
    msg.write_bytes(message)
    if len(signature) == 64:
        sig.write_bytes(raw_to_der(signature))
        out = _openssl(
            "pkeyutl", "-verify", "-rawin", "-digest", "sm3",
            "-pkeyopt", "distid:1234567812345678",
            "-pubin", "-inkey", str(pub), "-sigfile", str(sig), "-in", str(msg),
        )  # fmt: skip
    else:
        sig.write_bytes(signature)
        out = _openssl("dgst", "-sha1", "-verify", str(pub), "-signature", str(sig), str(msg))
    return out.returncode == 0 and b"Verified" in out.stdout + out.stderr

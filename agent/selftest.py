"""`card-agent selftest`: is this kiosk ready to sign?

Checks run in a fixed order; each ends pass / warn / fail (or skip, which never counts)
with a one-line message and, unless it passed, a one-line fix hint. Exit code (and
`report["exit_code"]`): 0 all passed, 1 warnings only, 2 at least one failure.

Where the card is reached (`report["mode"]`):
  * "in-agent": `run_selftest(config, runtime)` inside the running agent (the MQTT
    remote command): the agent's own card owner, no second open of the reader;
  * "agent": the CLI while the agent answers on its port: through its API with the
    CLI's local-tool token;
  * "direct": the agent is not running: the CLI opens the card itself.

Nothing here spends a PIN try unless `sign=True` with a PIN, and even then never one of
the last `security.pin_floor` tries. The report holds no PIN, no holder name and only the
masked card number: it may travel to the fleet's telemetry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import agent
from agent import __version__
from agent.cli_client import (
    AgentClient,
    AgentUnreachable,
    CardAccess,
    CardCommandError,
    ReaderView,
    open_card,
    pcsc_readers,
)
from agent.config import Config
from card import errors as ce
from card.crypto.certs import (
    CertificateChainError,
    CertificateInfo,
    certificate_from_pem,
    days_left,
    verify_chain,
)
from card.crypto.rsa import rsa_verify_pkcs1
from card.crypto.sm2 import sm2_verify
from card.crypto.verify import verify_digest
from card.eport.atr import describe_atr
from card.eport.driver import CardInfo, CertSlot, PinStatus, SignAlgorithm

Status = Literal["pass", "warn", "fail", "skip"]
ProgressCallback = Callable[[int, int, str, "Check | None"], None]

CHECKS: tuple[tuple[str, str], ...] = (
    ("config", "configuration valid"),
    ("pcscd", "pcscd reachable"),
    ("reader", "reader present"),
    ("virtual_reader", "no virtual reader"),
    ("card", "card present and recognised"),
    ("card_info", "card info readable"),
    ("certificate", "signing certificate readable"),
    ("chain", "certificate chain valid"),
    ("expiry", "certificate not expiring"),
    ("pin", "PIN tries left"),
    ("sign", "test signature verifies"),
    ("api", "agent API and Host/Origin policy"),
    ("compat", "compatibility endpoint"),
    ("mqtt", "MQTT broker"),
    ("clock", "system clock sane"),
)
CHECK_IDS = tuple(check_id for check_id, _ in CHECKS)

EXPIRY_WARN_DAYS = 30  # the Single Window warns under 30 days
NETWORK_TIMEOUT_S = 2.0
CHECK_TIMEOUT_S = 20.0
VIRTUAL_READER = re.compile(r"virtual pcd", re.IGNORECASE)
# No kiosk runs a build older than this; a clock before it has lost its time.
RELEASE_FLOOR = datetime(2026, 11, 1, tzinfo=UTC)
FUTURE_FILE_SLACK_S = 600
PROBE_HOST = "selftest.invalid"
PROBE_ORIGIN = "https://selftest.invalid"


@dataclass
class Check:
    id: str
    title: str
    status: Status
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0


@dataclass
class _R:
    """What a check function returns."""

    status: Status
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def exit_code(checks: Iterable[Check]) -> int:
    statuses = {c.status for c in checks}
    return 2 if "fail" in statuses else 1 if "warn" in statuses else 0


def _report(
    checks: Sequence[Check], mode: str, started: float, started_at: datetime
) -> dict[str, Any]:
    code = exit_code(checks)
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("pass", "warn", "fail", "skip")}
    return {
        "version": __version__,
        "mode": mode,
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "status": ("pass", "warn", "fail")[code],
        "exit_code": code,
        "counts": counts,
        "checks": [asdict(c) for c in checks],
    }


def invalid_config_report(error: str) -> dict[str, Any]:
    """The report when the configuration cannot even be loaded."""
    started, started_at = time.monotonic(), datetime.now(UTC)
    checks = [
        Check(
            "config",
            CHECKS[0][1],
            "fail",
            error.splitlines()[0],
            "fix the file named above; `card-agent config check` shows every problem",
            {"error": error},
        )
    ]
    checks += [Check(i, t, "skip", "configuration invalid") for i, t in CHECKS[1:]]
    return _report(checks, "none", started, started_at)


def _hex(data: bytes | None) -> str | None:
    return data.hex().upper() if data is not None else None


def load_pem_bundle(path: Path) -> list[bytes]:
    """Every CERTIFICATE block of a PEM file, as DER."""
    text = path.read_text(encoding="ascii", errors="replace")
    end = "-----END CERTIFICATE-----"
    return [certificate_from_pem(block + end) for block in text.split(end) if "BEGIN" in block]


def verify_test_signature(cert: CertificateInfo, message: bytes, value: bytes, algo: str) -> bool:
    """Check a signature over `message` itself (not a digest someone else computed)."""
    algorithm = SignAlgorithm(algo)
    if algorithm is SignAlgorithm.SM2_SM3:
        return cert.sm2_point is not None and sm2_verify(cert.sm2_point, message, value)
    if cert.rsa_public_key is None:
        return False
    name = "sha1" if algorithm is SignAlgorithm.RSA_SHA1 else "sha256"
    return rsa_verify_pkcs1(cert.rsa_public_key, value, message, name)


# --- MQTT and WebSocket probes ------------------------------------------------------------


def _mqtt_string(value: bytes) -> bytes:
    return len(value).to_bytes(2, "big") + value


def mqtt_connect_packet(
    client_id: str, username: str | None, password: str | None, keepalive_s: int = 10
) -> bytes:
    """An MQTT 3.1.1 CONNECT with a clean session."""
    flags = 0x02
    payload = _mqtt_string(client_id.encode())
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username.encode())
        if password is not None:
            flags |= 0x40
            payload += _mqtt_string(password.encode())
    body = _mqtt_string(b"MQTT") + bytes([4, flags]) + keepalive_s.to_bytes(2, "big") + payload
    length, remaining = b"", len(body)
    while True:
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    return b"\x10" + length + body


_CONNACK = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


async def mqtt_probe(
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    client_id: str,
    username: str | None,
    password: str | None,
    timeout_s: float = NETWORK_TIMEOUT_S,
) -> int:
    """TCP (and TLS) connect, CONNECT, CONNACK: the return code (0 = accepted)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
        timeout_s,
    )
    try:
        writer.write(mqtt_connect_packet(client_id, username, password))
        await writer.drain()
        head = await asyncio.wait_for(reader.readexactly(4), timeout_s)
        if head[0] != 0x20 or head[1] != 2:
            raise ValueError(f"not an MQTT CONNACK: {head.hex()}")
        if head[3] == 0:
            writer.write(b"\xe0\x00")  # DISCONNECT
            await writer.drain()
        return head[3]
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def websocket_probe(
    host: str, port: int, host_header: str, timeout_s: float, *, origin: str | None = None
) -> int:
    """Send a WebSocket upgrade for `/`; the HTTP status of the answer."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    try:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        writer.write(
            (
                f"GET / HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                + (f"Origin: {origin}\r\n" if origin else "")
                + "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {line[:40]!r}")
        return int(parts[1])
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


# --- the run --------------------------------------------------------------------------


class _Selftest:
    def __init__(
        self,
        config: Config,
        runtime: Any,
        *,
        sign: bool,
        pin: str | None,
        confirm_final_try: bool,
        config_source: str | None,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.sign = sign
        self.pin = pin
        self.confirm_final_try = confirm_final_try
        self.config_source = config_source
        self.pcsc = config.card.backend == "pcsc"
        self.stack = contextlib.AsyncExitStack()
        self.access: CardAccess | None = None
        self.mode = "in-agent" if runtime is not None else "none"
        self.readers: list[ReaderView] | None = None  # PC/SC: every reader pcscd lists
        self.reader: ReaderView | None = None
        self.card_skip: str | None = None  # why the card checks cannot run
        self.cert_skip: str | None = None
        self.sign_cert: CertificateInfo | None = None
        self.pin_state: PinStatus | None = None

    # --- helpers ----------------------------------------------------------------------

    async def _open(self) -> CardAccess:
        if self.access is None:
            self.access = await self.stack.enter_async_context(open_card(self.config, self.runtime))
            self.mode = self.access.mode
        return self.access

    def _card_failed(self, exc: CardCommandError, what: str) -> _R:
        hints = {
            "reader_service_down": "start pcscd: sudo systemctl start pcscd.socket",
            "reader_missing": "connect the card reader (`pcsc_scan` shows what pcscd sees)",
            "reader_busy": "another program holds the card: close it, or stop it "
            "(`sudo systemctl stop card-agent` only when testing the card directly)",
            "card_missing": "insert the E-Port card",
            "card_removed": "leave the card in the reader during the selftest",
            "unsupported_card": "this is not an E-Port card: insert the holder's E-Port card",
            "busy": "the agent is busy signing: run the selftest again in a moment",
            "timeout": "the card did not answer: re-insert it; if that repeats, change the reader",
            "agent_unreachable": "the agent stopped during the selftest: journalctl -u card-agent",
        }
        return _R(
            "fail",
            f"{what}: {exc.message} ({exc.code})",
            hints.get(exc.code, "re-insert the card and run the selftest again"),
            {"code": exc.code},
        )

    # --- checks -----------------------------------------------------------------------

    async def _check_config(self) -> _R:
        cfg = self.config
        details: dict[str, Any] = {"backend": cfg.card.backend, "source": self.config_source}
        state = cfg.paths.state_dir
        if state.exists() and not os.access(state, os.W_OK | os.X_OK):
            return _R(
                "fail",
                f"state directory {state} is not writable by this user",
                "run as root or as the card-agent user (sudo -u card-agent card-agent ...)",
                details,
            )
        if not cfg.security.allowed_origins:
            return _R(
                "warn",
                "valid, but no browser extension origin is allowed (security.allowed_origins)",
                'add the extension: allowed_origins = ["chrome-extension://<id>"]',
                details,
            )
        source = f" ({self.config_source})" if self.config_source else ""
        return _R("pass", f"valid{source}; {cfg.card.backend} backend", details=details)

    async def _check_pcscd(self) -> _R:
        if not self.pcsc:
            return _R("skip", "n/a (simulated backend)")
        try:
            self.readers = await asyncio.to_thread(pcsc_readers)
        except ImportError:
            self.card_skip = "pyscard missing"
            return _R(
                "fail",
                "pyscard is not installed",
                "reinstall with the pcsc extra: pip install 'card-agent[pcsc]'",
            )
        except ce.ServiceUnavailable as exc:
            self.card_skip = "pcscd not reachable"
            return _R(
                "fail",
                f"pcscd not reachable: {exc}",
                "sudo systemctl start pcscd.socket (package pcscd); for the service user "
                "also check the polkit rule 50-card-agent.rules",
            )
        except ce.CardError as exc:
            self.card_skip = "pcscd error"
            return _R("fail", f"pcscd error: {exc}", "sudo systemctl restart pcscd")
        return _R("pass", f"pcscd answers ({len(self.readers)} reader(s))")

    async def _check_reader(self) -> _R:
        if self.card_skip:
            return _R("skip", self.card_skip)
        try:
            access = await self._open()
        except CardCommandError as exc:
            self.card_skip = "card not reachable"
            return self._card_failed(exc, "cannot open the card")
        if self.readers is not None:  # PC/SC: pick as the backend does
            from agent.backend import reader_regex

            pattern = reader_regex(self.config.card.reader)
            names = [r.name or "" for r in self.readers]
            matching = [r for r in self.readers if pattern is None or pattern.search(r.name or "")]
            if not matching:
                self.card_skip = "no reader"
                wanted = f" matching {self.config.card.reader!r}" if pattern else ""
                return _R(
                    "fail",
                    f"no reader{wanted}" + (f" (pcscd lists: {', '.join(names)})" if names else ""),
                    "connect the reader; `pcsc_scan` shows what pcscd sees"
                    + ("; check card.reader in the configuration" if pattern else ""),
                    {"readers": names},
                )
            with_card = [r for r in matching if r.card_present]
            self.reader = (with_card or matching)[0]
            return _R(
                "pass", f"{self.reader.name}", details={"readers": names, "mode": access.mode}
            )
        try:
            view = await access.reader()
        except CardCommandError as exc:
            self.card_skip = "reader not reachable"
            return self._card_failed(exc, "reader state")
        if view is None:
            self.card_skip = "no reader"
            return _R("fail", "no reader", "connect the card reader")
        self.reader = view
        name = view.name or f"{self.config.card.backend} reader in the agent"
        return _R("pass", name, details={"mode": access.mode})

    async def _check_virtual_reader(self) -> _R:
        if not self.pcsc:
            return _R("skip", "n/a (simulated backend)")
        if self.readers is None:
            return _R("skip", "readers unknown")
        virtual = [r.name for r in self.readers if VIRTUAL_READER.search(r.name or "")]
        if not virtual:
            return _R("pass", "no virtual reader")
        if self.config.card.demo:
            return _R("pass", f"virtual reader present (demo mode): {', '.join(map(str, virtual))}")
        return _R(
            "warn",
            f"virtual reader present: {', '.join(map(str, virtual))} (vsmartcard-vpcd)",
            "production kiosk: sudo apt purge vsmartcard-vpcd (anyone reaching its TCP port "
            "can insert a card); demo kiosk: set card.demo = true",
            {"virtual_readers": virtual},
        )

    async def _check_card(self) -> _R:
        if self.card_skip:
            return _R("skip", self.card_skip)
        assert self.access is not None
        if self.reader is not None and not self.reader.card_present:
            self.card_skip = "no card"
            return _R(
                "warn",
                "no card in the reader: card checks skipped",
                "insert an E-Port card and run the selftest again",
            )
        try:
            atr = await self.access.card_atr()
        except CardCommandError as exc:
            self.card_skip = "card not usable"
            if exc.code == "card_missing":
                return _R(
                    "warn",
                    "no card in the reader: card checks skipped",
                    "insert an E-Port card and run the selftest again",
                )
            return self._card_failed(exc, "card")
        if atr is None and self.reader is not None:
            atr = self.reader.atr
        known = describe_atr(atr) if atr is not None else None
        details = {"atr": _hex(atr), "known_atr": known}
        if atr is None:
            return _R(
                "pass",
                "E-Port application selected (ATR not visible through the API)",
                details=details,
            )
        what = known or "ATR not in the known-ATR table"
        return _R("pass", f"ATR {_hex(atr)} ({what}); E-Port application selected", details=details)

    async def _check_card_info(self) -> _R:
        if self.card_skip:
            return _R("skip", self.card_skip)
        assert self.access is not None
        try:
            info: CardInfo = await self.access.card_info()
        except CardCommandError as exc:
            return self._card_failed(exc, "card info")
        problems = []
        if not (info.card_number.isascii() and info.card_number.isdigit()):
            problems.append("card number is not digits")
        if len(info.uscc) != 18:
            problems.append("USCC is not 18 characters")
        details = {"card": info.masked_card_number, "card_type": info.card_type.value}
        if problems:
            return _R(
                "warn",
                "; ".join(problems),
                "the card's data looks damaged: ask the issuer",
                details,
            )
        return _R(
            "pass", f"card {info.masked_card_number} ({info.card_type.value})", details=details
        )

    async def _check_certificate(self) -> _R:
        if self.card_skip:
            self.cert_skip = self.card_skip
            return _R("skip", self.card_skip)
        assert self.access is not None
        try:
            certs = await self.access.certificates()
        except CardCommandError as exc:
            self.cert_skip = "certificate not readable"
            return self._card_failed(exc, "certificate")
        except ce.ProtocolError as exc:
            self.cert_skip = "certificate not readable"
            return _R(
                "fail", f"certificate does not parse: {exc}", "the card is damaged: ask the issuer"
            )
        cert = self.sign_cert = certs[CertSlot.SIGN]
        details = {
            "certificate_number": cert.serial_hex,
            "issuer_cn": cert.issuer_cn,
            "key": f"{cert.key_algorithm}-{cert.key_bits}",
            "not_after": cert.not_after.isoformat(),
        }
        return _R(
            "pass",
            f"no. {cert.serial_hex}, {cert.key_algorithm}-{cert.key_bits}, issuer {cert.issuer_cn}",
            details=details,
        )

    def _simulator_anchors(self) -> list[bytes] | None:
        """The simulated card's own test CAs (no bundle configured)."""
        import json

        backend = getattr(self.runtime, "backend", None) or getattr(
            getattr(self.access, "owner", None), "_backend", None
        )
        card = getattr(backend, "card", None)
        states = getattr(getattr(card, "state", None), "ca_states", None)
        if states is None:
            name = self.config.card.sim_state_file
            if not name:
                return None
            try:
                data = json.loads((self.config.paths.state_dir / name).read_text("utf-8"))
            except (OSError, ValueError):
                return None
            states = data.get("ca", {})
        return [certificate_from_pem(s["certificate_pem"]) for s in states.values()]

    async def _check_chain(self) -> _R:
        if self.cert_skip or self.sign_cert is None:
            return _R("skip", self.cert_skip or "no certificate")
        bundle = self.config.card.ca_bundle
        if bundle is None:
            if self.pcsc:
                return _R(
                    "warn",
                    "no CA bundle configured: chain not checked",
                    "set card.ca_bundle to the China E-Port CA certificates (PEM)",
                )
            anchors = self._simulator_anchors()
            source = "the simulator's test CA"
            if not anchors:
                return _R(
                    "warn",
                    "simulated card kept in memory: its CA is not available",
                    "set card.ca_bundle, or card.sim_state_file",
                )
        else:
            try:
                anchors = await asyncio.to_thread(load_pem_bundle, bundle)
            except (OSError, ce.ProtocolError) as exc:
                return _R(
                    "warn",
                    f"CA bundle {bundle} not readable: {exc}",
                    "install the CA bundle or fix card.ca_bundle",
                )
            source = str(bundle)
            if not anchors:
                return _R("warn", f"no certificate in CA bundle {bundle}", "fix card.ca_bundle")
        try:
            await asyncio.to_thread(verify_chain, self.sign_cert.der, [], anchors)
        except (CertificateChainError, ce.ProtocolError) as exc:
            return _R(
                "fail",
                f"does not chain to {source}: {exc}",
                "a card from another CA, or the wrong card.ca_bundle: check both",
            )
        return _R("pass", f"issued by {self.sign_cert.issuer_cn} (trusted: {source})")

    async def _check_expiry(self) -> _R:
        if self.cert_skip or self.sign_cert is None:
            return _R("skip", self.cert_skip or "no certificate")
        cert, now = self.sign_cert, datetime.now(UTC)
        left = days_left(cert, now)
        details = {"days_left": round(left, 1), "not_after": cert.not_after.isoformat()}
        if now < cert.not_before:
            return _R(
                "fail",
                f"not valid before {cert.not_before:%Y-%m-%d}",
                "check the system clock (timedatectl); else the card is not yet valid",
                details,
            )
        if left < 0:
            return _R(
                "fail",
                f"expired on {cert.not_after:%Y-%m-%d}",
                "the holder must renew the certificate with China E-Port",
                details,
            )
        if left < EXPIRY_WARN_DAYS:
            return _R(
                "warn",
                f"expires in {int(left)} days ({cert.not_after:%Y-%m-%d})",
                "the holder should renew the certificate; the Single Window warns from now on",
                details,
            )
        return _R(
            "pass", f"valid until {cert.not_after:%Y-%m-%d} ({int(left)} days)", details=details
        )

    async def _check_pin(self) -> _R:
        if self.card_skip:
            return _R("skip", self.card_skip)
        assert self.access is not None
        try:
            st = self.pin_state = await self.access.pin_status()
        except CardCommandError as exc:
            return self._card_failed(exc, "PIN status")
        floor = self.config.security.pin_floor
        details = {"tries_left": st.tries_left, "blocked": st.blocked, "verified": st.verified}
        if st.blocked:
            return _R(
                "fail",
                "PIN blocked",
                "the holder must have the PIN unblocked by the issuer (China E-Port)",
                details,
            )
        if st.tries_left is None:
            return _R("pass", "PIN verified (a session is open)", details=details)
        if st.tries_left <= floor + 1:
            return _R(
                "warn",
                f"only {st.tries_left} PIN tries left",
                "the holder must use the right PIN; the agent keeps the last "
                f"{floor} for an explicit confirmation",
                details,
            )
        return _R("pass", f"{st.tries_left} tries left (none spent)", details=details)

    async def _check_sign(self) -> _R:
        if not self.sign:
            return _R("skip", "not requested (--sign)")
        if self.card_skip or self.cert_skip:
            return _R("skip", self.card_skip or self.cert_skip or "")
        if self.pin is None:
            return _R("fail", "no PIN given", "give the PIN at the prompt or with --pin-stdin")
        if self.pin_state is not None and self.pin_state.blocked:
            return _R("skip", "PIN blocked")
        assert self.access is not None
        message = f"card-agent selftest {datetime.now(UTC).isoformat()} {secrets.token_hex(8)}"
        data = message.encode()
        started = time.monotonic()
        try:
            signature, cert = await self.access.sign_test(
                self.pin, data, confirm_final_try=self.confirm_final_try
            )
        except CardCommandError as exc:
            if exc.code == "pin_tries_low":
                return _R(
                    "warn",
                    f"not attempted: {exc.message}",
                    "add --confirm-final-try only if the PIN is certainly right",
                )
            if exc.code == "pin_incorrect":
                return _R(
                    "fail",
                    f"wrong PIN ({exc.details.get('tries_left')} tries left)",
                    "the holder must give the right PIN",
                )
            return self._card_failed(exc, "signing")
        ms = (time.monotonic() - started) * 1000
        details = {"algorithm": signature.algorithm.value, "duration_ms": round(ms, 1)}
        ok = verify_digest(
            cert, signature.algorithm, signature.digest, signature.value
        ) and verify_test_signature(cert, data, signature.value, signature.algorithm.value)
        if not ok:
            return _R(
                "fail",
                f"{signature.algorithm.value} signature does NOT verify against the certificate",
                "the card or its key is faulty: do not use it; contact the issuer",
                details,
            )
        return _R(
            "pass",
            f"{signature.algorithm.value} signature verified against no. {cert.serial_hex} "
            f"({ms:.0f} ms)",
            details=details,
        )

    async def _check_api(self) -> _R:
        client = AgentClient.from_config(self.config, timeout_s=NETWORK_TIMEOUT_S)
        where = client.url
        try:
            ok = await asyncio.to_thread(client.request, "GET", "/v1/status")
        except AgentUnreachable:
            return _R(
                "fail",
                f"agent not answering on {where}",
                "sudo systemctl start card-agent; see journalctl -u card-agent",
            )
        status = ok.json() if ok.status == 200 else None
        if not isinstance(status, dict) or status.get("api") != "v1":
            return _R(
                "fail",
                f"{where} answers HTTP {ok.status}, not card-agent",
                "free the port or change server.port",
            )
        foreign_host = await asyncio.to_thread(
            client.request, "GET", "/v1/status", host_header=f"{PROBE_HOST}:{client.port}"
        )
        if foreign_host.status != 403 or foreign_host.error_code != "host_forbidden":
            return _R(
                "fail",
                f"a foreign Host was not refused (HTTP {foreign_host.status})",
                "DNS rebinding is possible: upgrade card-agent",
            )
        foreign_origin = await asyncio.to_thread(
            client.request, "GET", "/v1/status", origin=PROBE_ORIGIN
        )
        if foreign_origin.status != 403 or foreign_origin.error_code != "origin_forbidden":
            return _R(
                "fail",
                f"a foreign Origin was not refused (HTTP {foreign_origin.status})",
                "any web page could call the agent: check security.allowed_origins",
            )
        details = {"version": status.get("version"), "backend": status.get("backend")}
        if status.get("version") != __version__:
            return _R(
                "warn",
                f"agent runs version {status.get('version')}, this CLI is {__version__}",
                "restart the agent after an upgrade: sudo systemctl restart card-agent",
                details,
            )
        if status.get("backend") != self.config.card.backend:
            return _R(
                "warn",
                f"agent runs the {status.get('backend')} backend, the configuration says "
                f"{self.config.card.backend}",
                "is the demo unit running? systemctl status card-agent card-agent-demo",
                details,
            )
        return _R("pass", f"answering on {where}; foreign Host and Origin refused", details=details)

    async def _check_compat(self) -> _R:
        compat = getattr(self.config, "compat", None)
        if compat is None or not getattr(compat, "enabled", False):
            return _R("skip", "not enabled")
        host = str(getattr(compat, "host", "127.0.0.1"))
        port = int(getattr(compat, "port", 61232))
        if port == 0:  # chosen when the endpoint starts: only the running agent knows it
            components = getattr(self.runtime, "components", None) or []
            bound = next(
                (getattr(c, "port", None) for c in components if hasattr(c, "requested_port")), None
            )
            if not bound:
                return _R("skip", "compat.port = 0: the port is chosen at start")
            port = int(bound)
        # Only upgrades that must be refused: an accepted one would open a session on the
        # card (and closing it clears the card's verified state under a visitor).
        where = f"ws://{host}:{port}"
        try:
            origin = await websocket_probe(
                host, port, f"{host}:{port}", NETWORK_TIMEOUT_S, origin=PROBE_ORIGIN
            )
            foreign = await websocket_probe(host, port, f"{PROBE_HOST}:{port}", NETWORK_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            return _R(
                "fail",
                f"not answering on {where}: {exc or type(exc).__name__}",
                "check compat.* in the configuration and journalctl -u card-agent",
            )
        if origin == 101 or foreign == 101:
            what = "Origin" if origin == 101 else "Host"
            return _R(
                "fail",
                f"{where} accepted a WebSocket with a foreign {what}",
                "any web page could reach the card: upgrade card-agent, check compat.*",
            )
        return _R("pass", f"answering on {where}; foreign Host and Origin refused")

    async def _check_mqtt(self) -> _R:
        mqtt = getattr(self.config, "mqtt", None)
        if mqtt is None or not getattr(mqtt, "enabled", False) or not getattr(mqtt, "host", None):
            return _R("skip", "not configured")
        host, port = str(mqtt.host), int(getattr(mqtt, "port", 1883))
        ca = getattr(mqtt, "tls_ca", None)
        context: ssl.SSLContext | None = None
        if getattr(mqtt, "tls", False) or ca is not None:
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
            cert, key = getattr(mqtt, "tls_cert", None), getattr(mqtt, "tls_key", None)
            if cert is not None:
                context.load_cert_chain(str(cert), str(key) if key else None)
        secret = getattr(mqtt, "password", None)
        password: str | None = None
        if secret is not None:
            reveal = getattr(secret, "get_secret_value", None)
            password = str(reveal() if callable(reveal) else secret)
        kiosk = getattr(mqtt, "kiosk_id", "") or "card-agent"
        where = f"{host}:{port}" + (" (TLS)" if context else "")
        try:
            rc = await mqtt_probe(
                host,
                port,
                tls=context,
                client_id=f"{kiosk}-selftest-{secrets.token_hex(3)}",
                username=getattr(mqtt, "username", None),
                password=password,
            )
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            return _R(
                "fail",
                f"broker {where} not reachable: {exc or type(exc).__name__}",
                "check mqtt.host/port, the network, and the IPAddressAllow= drop-in for it",
            )
        if rc != 0:
            return _R(
                "fail",
                f"broker {where} refused CONNECT: {_CONNACK.get(rc, f'code {rc}')}",
                "check mqtt.username / mqtt.password and the broker's ACL",
                {"connack": rc},
            )
        return _R("pass", f"broker {where} accepted CONNECT")

    async def _check_clock(self) -> _R:
        now = datetime.now(UTC)
        details: dict[str, Any] = {"utc": now.isoformat(timespec="seconds")}
        floors = [(RELEASE_FLOOR, "this release's date")]
        with contextlib.suppress(OSError):
            installed = datetime.fromtimestamp(Path(agent.__file__).stat().st_mtime, UTC)
            floors.append((installed, "the installed software's files"))
        if self.sign_cert is not None:
            floors.append((self.sign_cert.not_before, "the card certificate's notBefore"))
        for floor, what in floors:
            if now < floor:
                return _R(
                    "fail",
                    f"clock {now:%Y-%m-%d %H:%M} UTC is before {what} ({floor:%Y-%m-%d})",
                    "set the time: timedatectl set-ntp true (or date -s), then restart the agent",
                    details,
                )
        future = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.config.paths.state_dir):
                mtime = entry.stat().st_mtime
                if mtime > now.timestamp() + FUTURE_FILE_SLACK_S:
                    future.append(entry.name)
        synced = Path("/run/systemd/timesync/synchronized")
        if synced.parent.exists():
            details["ntp_synchronized"] = synced.exists()
        if future:
            return _R(
                "warn",
                f"state files dated in the future ({', '.join(sorted(future))}): "
                "the clock went back",
                "check the time source (timedatectl status); audit times may be out of order",
                details,
            )
        return _R("pass", f"{now:%Y-%m-%d %H:%M} UTC", details=details)

    # --- driver ----------------------------------------------------------------------

    async def run(self, skip: Iterable[str], progress: ProgressCallback | None) -> dict[str, Any]:
        started, started_at = time.monotonic(), datetime.now(UTC)
        skipped = set(skip)
        checks: list[Check] = []
        functions: dict[str, Callable[[], Awaitable[_R]]] = {
            check_id: getattr(self, f"_check_{check_id}") for check_id in CHECK_IDS
        }
        async with self.stack:
            for index, (check_id, title) in enumerate(CHECKS, 1):
                if progress is not None:
                    progress(index, len(CHECKS), check_id, None)
                t0 = time.monotonic()
                if check_id in skipped and check_id != "config":
                    result = _R("skip", "skipped (--skip)")
                    if check_id in ("reader", "card"):
                        self.card_skip = self.card_skip or f"{check_id} skipped"
                else:
                    try:
                        result = await asyncio.wait_for(functions[check_id](), CHECK_TIMEOUT_S)
                    except TimeoutError:
                        result = _R("fail", f"no answer within {CHECK_TIMEOUT_S:.0f} s", None)
                    except Exception as exc:  # a bug or an unforeseen failure: report it
                        result = _R(
                            "fail",
                            f"unexpected {type(exc).__name__}: {exc}",
                            "report this with the output of `card-agent selftest --json`",
                        )
                check = Check(
                    check_id,
                    title,
                    result.status,
                    result.message,
                    None if result.status in ("pass", "skip") else result.hint,
                    result.details,
                    round((time.monotonic() - t0) * 1000, 1),
                )
                checks.append(check)
                if progress is not None:
                    progress(index, len(CHECKS), check_id, check)
        return _report(checks, self.mode, started, started_at)


async def run_selftest(
    config: Config,
    runtime: Any = None,
    *,
    sign: bool = False,
    pin: str | None = None,
    confirm_final_try: bool = False,
    skip: Iterable[str] = (),
    progress: ProgressCallback | None = None,
    config_source: str | None = None,
) -> dict[str, Any]:
    """Run every check and return the report (JSON-ready; see the module docstring).

    `runtime`: the running agent's `agent.runtime.Runtime` when called inside it; its
    card owner is used, the reader is not opened again.
    """
    unknown = set(skip) - set(CHECK_IDS)
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(sorted(unknown))}")
    test = _Selftest(
        config,
        runtime,
        sign=sign,
        pin=pin,
        confirm_final_try=confirm_final_try,
        config_source=config_source,
    )
    return await test.run(skip, progress)


# --- presentation -----------------------------------------------------------------------

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

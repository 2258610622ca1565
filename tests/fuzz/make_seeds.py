"""Writes the seed corpora in tests/fuzz/corpus/ from the real components.

The seeds are kept in the repository (the short fuzz runs in the test suite start from
them); run this only when a format changes: `python tests/fuzz/make_seeds.py [target...]`. Keys,
signatures and audit ids are random, so a re-run rewrites most files.

- apdu: every command and response APDU of real card sessions (card info, both
  certificates, PIN status, VERIFY, signatures on SM2 and RSA cards, GET CHALLENGE,
  CHANGE REFERENCE DATA, logout) in short and extended form, through the simulated card;
- card_os: those sessions as APDU sequences, one per card set-up (knobs);
- compat: request frames as Single Window pages send them, and a chunked request as
  BLOCKTXT frames (`encode_blocks`, a small budget so that it takes several chunks);
- api: the native API calls of docs/api.md as the extension makes them;
- audit: audit logs written by `AuditLog`, whole and with a torn tail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from agent.audit import AuditLog
from agent.compat.protocol import encode_blocks
from card.eport.session import EPortSession
from card.errors import WrongPinError
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.knobs import CardKnobs
from simulator.state import CardFactory
from tests.fuzz.harness import CORPUS

PIN, UNBLOCK = "88888888", "12345678"
ORIGIN = "chrome-extension://" + "abcdefghijklmnop" * 2
HOST = "127.0.0.1:17321"
Exchange = list[tuple[bytes, bytes]]  # (command, response) pairs


def write(target: str, seeds: Iterable[tuple[str, bytes]]) -> None:
    folder = CORPUS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, data in seeds:
        (folder / name).write_bytes(data)


def recorded(card: SimulatedCard, session: Callable[[EPortSession], None]) -> Exchange:
    """The APDUs of `session` run against `card` by the real host code."""
    log: Exchange = []
    process = card.process

    def recording(apdu: bytes) -> bytes:
        answer = process(apdu)
        log.append((bytes(apdu), answer))
        return answer

    card.process = recording  # type: ignore[method-assign]
    session(EPortSession.open(InProcessTransport(card)))
    return log


def sessions() -> dict[str, tuple[int, int, Exchange]]:
    """Real sessions: name -> (card_os configuration bytes, APDUs)."""
    factory = CardFactory()

    def card(profile: str, **knobs: int | bool) -> SimulatedCard:
        return SimulatedCard(factory.make_state(profile), knobs=CardKnobs(**knobs))  # type: ignore[arg-type]

    def read_all(s: EPortSession) -> None:
        s.card_info()
        s.certificate()
        s.pin_status()

    def sign(s: EPortSession) -> None:
        s.verify_pin(PIN)
        s.sign(b"document to sign")
        s.sign_digest(bytes(s.algorithm.digest_size))
        s.logout()

    def wrong_pin(s: EPortSession) -> None:
        with contextlib.suppress(WrongPinError):
            s.verify_pin("00000000")
        s.pin_status()
        s.verify_pin(PIN)
        s.pin_status()

    def change_and_unblock(s: EPortSession) -> None:
        s.change_pin(PIN, "11111111")
        s.unblock_pin(UNBLOCK, PIN)
        s.get_challenge(8)

    out: dict[str, tuple[int, int, Exchange]] = {}
    # (config, limits) as fuzz_card_os.make_card reads them: config = profile index
    # (0 SM2, 1 RSA-1024, 2 blocked) | 0x04 exact Le | 0x08 no chaining | 0x10 extended;
    # limits = response limit index | command limit index << 4.
    sm2 = "legal-person-sm2"
    out["sm2-read"] = (0x00, 0x00, recorded(card(sm2), read_all))
    out["sm2-sign"] = (0x00, 0x00, recorded(card(sm2), sign))
    out["sm2-wrong-pin"] = (0x00, 0x00, recorded(card(sm2), wrong_pin))
    out["sm2-change-unblock"] = (0x00, 0x00, recorded(card(sm2), change_and_unblock))
    out["rsa1024-sign"] = (0x01, 0x00, recorded(card("legacy-rsa1024"), sign))
    big = {"extended_length": True, "max_command_data": 65535, "max_response_data": 65536}
    out["sm2-extended-read"] = (0x10, 0x34, recorded(card(sm2, **big), read_all))
    small = {"max_response_data": 16, "max_command_data": 16}
    out["sm2-small-chunks-sign"] = (0x00, 0x22, recorded(card(sm2, **small), sign))
    out["sm2-exact-le-read"] = (0x04, 0x00, recorded(card(sm2, exact_le=True), read_all))
    return out


def card_os_seed(config: int, limits: int, exchange: Exchange) -> bytes:
    out = bytearray((config, limits))
    for command, _ in exchange:
        if len(command) < 0xFD:
            out.append(len(command))
        else:
            out += b"\xff" + len(command).to_bytes(2, "big")
        out += command
    return bytes(out)


def apdu_seeds(
    recordings: dict[str, tuple[int, int, Exchange]],
) -> Iterable[tuple[str, bytes]]:
    seen: set[tuple[int, bytes, int]] = set()
    for name, (_, _, exchange) in recordings.items():
        for n, (command, response) in enumerate(exchange):
            for mode, raw in ((0, command), (1, response)):
                # One of each kind (header or SW, and length): READ BINARY at the next
                # offset teaches the fuzzer nothing new.
                key = (mode, raw[:2] if mode == 0 else raw[-2:], len(raw))
                if key in seen or len(raw) > 1000:
                    continue
                seen.add(key)
                kind = "command" if mode == 0 else "response"
                yield f"{kind}-{name}-{n:02d}", bytes((mode,)) + raw
    yield "fields-case4", bytes((2,)) + bytes(range(1, 40))
    # Reproducer found by this harness (a refused chained chunk's data past the size cap).
    yield "regression-refused-chunk-size", base64.b64decode("c3Nzi3PJyQAAxAAAiwABAACEAA==")
    yield "exchange-61xx", bytes((3,)) + bytes((1, 1, 40, 2, 200)) + b"\x01\x00\x61\x10" * 8


def compat_seeds() -> Iterable[tuple[str, bytes]]:
    def frame(method: str, req_id: int | str, **args: object) -> bytes:
        request: dict[str, object] = {"_method": method, "_id": req_id}
        if args:
            request["args"] = args
        return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    frames = {
        "get-card-id": frame("cus-sec_SpcGetCardID", 1),
        "verify-pin": frame("cus-sec_SpcVerifyPIN", 2, passwd=PIN),
        "sign-data": frame("cus-sec_SpcSignData", 3, inData="<xml>报关单</xml>", passwd=PIN),
        "sign-pem-legacy": frame("security_SpcSignDataAsPEM", "a-7", inData="\\u4e2d\\u6587"),
        "cert": frame("cus-sec_SpcGetSignCertAsPEM", 4),
        "sha1": frame("cus-sec_SpcSHA1DigestAsPEM", 5, szInfo="abc"),
        "clear-env": frame("cus-sec_SpcClearEnv", 6),
        "other-module": frame("ra_Something", 7, x=[1, {"y": None}]),
        "escapes": b'{"_method":"cus-sec_SpcSignData","_id":"\\u0031",'
        b'"args":{"inData":"\\ud83d\\ude00"}}',
    }
    for name, data in frames.items():
        yield f"frame-{name}", b"\x00" + data
    big = frame("cus-sec_SpcSignDataAsPEM", 8, inData="签名" * 40 + "x" * 100, passwd=PIN)
    blocks = encode_blocks(big.decode("utf-8"), "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", 64)
    yield "blocktxt-chunked-sign", b"\x00" + b"\xff".join(b.encode("utf-8") for b in blocks)
    yield "blocktxt-then-frame", b"\x00" + blocks[0].encode("utf-8") + b"\xff" + frames["cert"]
    # Reproducer found by this harness: a lone surrogate in `_id`, echoed in the reply.
    yield "regression-surrogate-id", b'\x00{"_method":"cus-sec_SpcSignData","_id":"t\\ud800"}'
    # Nested past json's recursion limit (the endpoint refuses it before parsing).
    deep = b'{"_method":"cus-sec_SpcGetCardID","_id":1,"args":' + b"[" * 1200 + b"]" * 1200
    yield "frame-nested-deep", b"\x00" + deep + b"}"
    yield (
        "chunking-text",
        b"\x01" + bytes((20,)) + bytes(range(16)) + b"\x00\x01\x02\x03" + "签名数据 sign".encode(),
    )


def api_seeds() -> Iterable[tuple[str, bytes]]:
    def request(
        method: str,
        path: str,
        body: object | None = None,
        *,
        token: bool = True,
        origin: bool = True,
    ) -> bytes:
        lines = [f"{method} {path}", f"Host: {HOST}"]
        if origin:
            lines.append(f"Origin: {ORIGIN}")
        if token:
            lines.append("Authorization: Bearer @TOKEN@")
        payload = b""
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        if method == "POST":
            lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        return "\r\n".join(lines).encode() + b"\r\n\r\n" + payload

    def seq(*requests: bytes) -> bytes:
        return b"\r\n\x1e\r\n".join(requests)

    doc = base64.b64encode(b"document to sign").decode()
    verify = request("POST", "/v1/pin/verify", {"pin": PIN})
    yield "status", request("GET", "/v1/status", token=False, origin=False)
    yield "pair", request("POST", "/v1/pair", {"client_name": "Kiosk extension"}, token=False)
    yield "pair-claim", request("POST", "/v1/pair/claim", {"request_id": "abc"}, token=False)
    yield "card", request("GET", "/v1/card")
    yield "certificates", request("GET", "/v1/card/certificates")
    yield "pin-status", request("GET", "/v1/pin")
    yield "verify", verify
    yield (
        "verify-wrong",
        request("POST", "/v1/pin/verify", {"pin": "00000000", "confirm_final_try": False}),
    )
    yield (
        "verify-sign",
        seq(
            verify, request("POST", "/v1/sign", {"purpose": "seal", "title": "报关单", "data": doc})
        ),
    )
    yield (
        "verify-sign-digest",
        seq(
            verify,
            request(
                "POST",
                "/v1/sign",
                {
                    "purpose": "login",
                    "title": "t",
                    "digest": base64.b64encode(bytes(32)).decode(),
                    "signature_format": "der",
                },
            ),
        ),
    )
    yield (
        "verify-change",
        seq(verify, request("POST", "/v1/pin/change", {"old_pin": PIN, "new_pin": "11111111"})),
    )
    yield "session-end", seq(verify, request("POST", "/v1/session/end"))
    yield (
        "preflight",
        (
            f"OPTIONS /v1/sign\r\nHost: {HOST}\r\nOrigin: {ORIGIN}\r\n"
            "Access-Control-Request-Method: POST\r\n"
            "Access-Control-Request-Private-Network: true\r\n\r\n"
        ).encode(),
    )
    yield "openapi", request("GET", "/v1/openapi.json", token=False)
    yield "not-found", request("GET", "/v1/nothing?x=%41")
    # Reproducer found by this harness: a Latin-1 superscript digit in Content-Length.
    yield (
        "regression-content-length-superscript",
        (
            f"POST /v1/pair/claim\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
            "Content-Length: \xb21\r\n\r\n"
        ).encode("latin-1")
        + b'{"request_id": "abc"}',
    )


def audit_seeds() -> Iterable[tuple[str, bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        with AuditLog(path) as log:
            log.append("pin_verify", client="c-1", origin=ORIGIN, outcome="ok")
            log.append(
                "sign",
                client="c-1",
                origin=ORIGIN,
                title="报关单 2024-001",
                purpose="seal",
                digest=bytes(32).hex(),
                certificate="1a2b3c",
                outcome="ok",
            )
            log.append("sign_refused", client="c-2", origin=None, reason="session_required")
            log.append(
                "pin_change", client="c-1", origin=ORIGIN, outcome="pin_incorrect", tries_left=9
            )
        content = path.read_bytes()
    lines = content.splitlines(keepends=True)
    yield "log-raw", b"\x01" + content
    yield "log-rechained", b"\x00" + content
    yield "log-torn-tail", b"\x01" + content[:-17]
    yield "log-zero-tail", b"\x01" + b"".join(lines[:-1]) + b"\x00" * 64 + b"\n"
    yield "log-reordered", b"\x01" + lines[1] + lines[0] + b"".join(lines[2:])
    yield "log-long-line", b"\x03" + content


def main(targets: list[str]) -> None:
    """Rewrite the corpora of `targets` (all when empty)."""
    recordings = sessions() if not targets or {"apdu", "card_os"} & set(targets) else {}
    makers: dict[str, Callable[[], Iterable[tuple[str, bytes]]]] = {
        "apdu": lambda: apdu_seeds(recordings),
        "card_os": lambda: (
            (name, card_os_seed(c, lim, ex)) for name, (c, lim, ex) in recordings.items()
        ),
        "compat": compat_seeds,
        "api": api_seeds,
        "audit": audit_seeds,
    }
    for target in targets or list(makers):
        write(target, makers[target]())
        files = list((CORPUS / target).iterdir())
        print(f"{target}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])

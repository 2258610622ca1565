"""The agent on the PC/SC backend: native API and the official-protocol endpoint,
through pyscard -> pcscd -> vpcd -> the simulated card, as on a kiosk."""

from __future__ import annotations

import base64
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.pairing import PairingStore
from agent.runtime import build_runtime
from card.crypto.certs import parse_certificate
from card.crypto.sm2 import sm2_verify
from simulator.card_os import SimulatedCard
from simulator.state import CardFactory
from tests.compat.harness import (
    CompatAgent,
    error_of,
    loopback_socket,
    make_config,
    ok_data,
    openssl_verifies,
    serve,
)
from tests.pcscd_support import PcscDaemon, Plug, ReaderWatch

pytestmark = pytest.mark.pcsc

PIN = "88888888"
DOCUMENT = "中国出口信用保险公司 小微企业综合保险 投保单".encode()


@pytest.fixture(scope="module")
def factory() -> CardFactory:
    return CardFactory()


@contextlib.contextmanager
def pcsc_agent(tmp_path: Path, reader: str, **card: Any) -> Iterator[CompatAgent]:
    sock = loopback_socket()
    config = make_config(
        tmp_path,
        api_port=sock.getsockname()[1],
        card={"backend": "pcsc", "reader": reader, **card},
    )
    with serve(build_runtime(config), sock, log_path=tmp_path / "agent.log") as agent:
        yield agent


def local_token(agent: CompatAgent) -> str:
    """Pair a local tool (no Origin) the way the CLI does."""
    base = f"http://127.0.0.1:{agent.api_port}"
    asked = httpx.post(f"{base}/v1/pair", json={"client_name": "pcsc-test"}).json()
    PairingStore(agent.runtime.pairing.path).approve(asked["code"])
    claimed = httpx.post(f"{base}/v1/pair/claim", json={"request_id": asked["request_id"]})
    return str(claimed.json()["token"])


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def test_native_api_over_pcsc_sign_pull_and_next_visitor(
    tmp_path: Path, pcscd: PcscDaemon, plug: Plug, watch: ReaderWatch, factory: CardFactory
) -> None:
    card = SimulatedCard(factory.make_state("legal-person-sm2"))
    link = plug(card)  # type: ignore[arg-type]
    with pcsc_agent(tmp_path, pcscd.readers[0]) as agent:
        token = local_token(agent)
        base = f"http://127.0.0.1:{agent.api_port}"
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
            wait_until(lambda: http.get("/v1/status").json()["card_present"])
            assert http.get("/v1/pin").json() == {
                "tries_left": 10,
                "blocked": False,
                "verified": False,
            }
            wrong = http.post("/v1/pin/verify", json={"pin": "12345678"})
            assert wrong.status_code == 403
            assert wrong.json()["error"]["details"]["tries_left"] == 9
            assert http.post("/v1/pin/verify", json={"pin": PIN}).status_code == 200

            body = {
                "purpose": "agreement",
                "title": "网上协议",
                "data": base64.b64encode(DOCUMENT).decode(),
            }
            signed = http.post("/v1/sign", json=body)
            assert signed.status_code == 200, signed.text
            cert_pem = http.get("/v1/card/certificates").json()["sign"]["pem"]
            der = base64.b64decode("".join(cert_pem.strip().splitlines()[1:-1]))
            point = parse_certificate(der).sm2_point
            assert point is not None
            assert sm2_verify(point, DOCUMENT, base64.b64decode(signed.json()["signature"]))

            link.remove()  # the visitor pulls the card
            watch.empty(pcscd.readers[0])
            wait_until(lambda: not http.get("/v1/status").json()["card_present"])
            after = http.post("/v1/sign", json=body)
            assert after.status_code in (401, 409)
            assert after.json()["error"]["code"] in ("session_required", "card_missing")

            link.insert()  # the next visitor's card (the same plastic here)
            watch.present(pcscd.readers[0])
            wait_until(lambda: http.get("/v1/status").json()["card_present"])
            assert http.get("/v1/pin").json()["verified"] is False  # starts clean
            again = http.post("/v1/sign", json=body)
            assert again.json()["error"]["code"] == "session_required"
            assert card.verified is False


def test_official_protocol_over_pcsc(
    tmp_path: Path, pcscd: PcscDaemon, plug: Plug, factory: CardFactory
) -> None:
    for profile in ("legal-person-sm2", "legacy-rsa1024"):
        card = SimulatedCard(factory.make_state(profile))
        link = plug(card)  # type: ignore[arg-type]
        root = tmp_path / profile
        with pcsc_agent(root, pcscd.readers[0]) as agent, agent.client() as page:
            deadline = time.monotonic() + 10
            while True:  # the owner thread sees the card a poll after start
                reply = page.call("cus-sec_SpcGetCardID")
                if reply["Result"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert ok_data(reply) == [card.state.card_number]
            text = "<ds:SignedInfo>投保</ds:SignedInfo>"
            signature, cert_no = ok_data(
                page.call("cus-sec_SpcSignDataAsPEM", {"inData": text, "passwd": PIN})
            )
            assert cert_no == parse_certificate(card.state.sign_cert).serial_hex
            assert openssl_verifies(
                card.state.sign_cert, text.encode(), base64.b64decode(signature), root / "ossl"
            )
            link.remove()
            # pcscd notices the removal at its next presence poll (~0.4 s); until then
            # the card's cached info may still answer.
            deadline = time.monotonic() + 10
            while True:
                reply = page.call("cus-sec_SpcGetCardID")
                if not reply["Result"] or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            _, code = error_of(reply)
            assert code == "Err:Custom51590"  # "insert the card", as pages expect
        link.stop()

"""Error paths that change the card (PIN tries, a pulled card) and the other card
profiles (legacy RSA-1024, RSA-2048, blocked PIN, operator card): a fresh agent each."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from .conftest import StartAgent
from .harness import CARD_PIN, CompatAgent, error_of, ok_data, openssl_verifies

NEW_PIN = "Kq7#pZ2w"  # distinctive: the leak check greps for it


def sign_count(agent: CompatAgent) -> int:
    return sum(1 for r in agent.audit_records() if r["event"] == "sign")


# --- PIN -------------------------------------------------------------------------------------


def test_wrong_pin_reports_tries_left(agent: CompatAgent) -> None:
    with agent.client() as page:
        message, code = error_of(page.call("cus-sec_SpcVerifyPIN", {"passwd": "11111111"}))
        assert code == "Err:CardAgent.pin_incorrect"
        assert message == "IC卡密码错误，还可以尝试9次"
        message, code = error_of(
            page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x", "passwd": "11111111"})
        )
        assert "8次" in message
    assert agent.pin_tries_left() == 8
    assert sign_count(agent) == 0  # a failed verify never reaches the signing step


def test_the_page_cannot_spend_the_last_try(agent: CompatAgent) -> None:
    with agent.client() as page:
        for _ in range(9):
            page.call("cus-sec_SpcVerifyPIN", {"passwd": "11111111"})
        assert agent.pin_tries_left() == 1
        for method, args in (
            ("cus-sec_SpcVerifyPIN", {"passwd": "11111111"}),
            ("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}),  # even the right one
            ("cus-sec_SpcSignRandom", {"random": "r", "passwd": CARD_PIN}),
            ("security_SpcChangePIN", {"oldPin": "11111111", "newPin": NEW_PIN}),
        ):
            message, code = error_of(page.call(method, args))
            assert code == "Err:CardAgent.pin_tries_low"
            assert "只剩1次" in message
    assert agent.pin_tries_left() == 1


def test_blocked_pin(start_agent: StartAgent) -> None:
    agent = start_agent(card={"profile": "blocked-pin"})
    with agent.client() as page:
        _, code = error_of(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        assert code == "Err:CardAgent.pin_blocked"
        _, code = error_of(page.call("cus-sec_SpcChangePIN", {"oldPin": CARD_PIN, "newPin": "x"}))
        assert code == "Err:CardAgent.pin_blocked"
        # Reading still works: pages show who the card belongs to.
        assert ok_data(page.call("cus-sec_SpcGetCardID")) == [agent.card_data.card_number]


def test_change_pin_and_no_pin_anywhere(agent: CompatAgent) -> None:
    with agent.client() as page:
        _, code = error_of(page.call("cus-sec_SpcChangePIN", {"oldPin": CARD_PIN}))
        assert code == "Err:Base50000"
        _, code = error_of(
            page.call("cus-sec_SpcChangePIN", {"oldPin": "11111111", "newPin": NEW_PIN})
        )
        assert code == "Err:CardAgent.pin_incorrect"
        args = {"oldPin": CARD_PIN, "newPin": NEW_PIN}
        assert ok_data(page.call("cus-sec_SpcChangePIN", args)) == []
        _, code = error_of(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        assert code == "Err:CardAgent.pin_incorrect"
        assert ok_data(page.call("security_SpcVerifyPIN", {"passwd": NEW_PIN})) == []
        ok_data(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "d", "passwd": NEW_PIN}))
    # Logs were captured at DEBUG: neither PIN is in them, nor in the state dir.
    assert agent.log_path is not None
    state_dir = agent.runtime.config.paths.state_dir
    files = [agent.log_path, *(p for p in state_dir.rglob("*") if p.is_file())]
    for path in files:
        data = path.read_bytes()
        for pin in (CARD_PIN, NEW_PIN):
            assert pin.encode() not in data, path
    records = agent.audit_records()
    assert [r["result"] for r in records if r["event"] == "pin_change"] == ["failed", "ok"]


# --- the card goes away ----------------------------------------------------------------------


def test_card_pulled_means_insert_the_card(agent: CompatAgent, tmp_path: Path) -> None:
    with agent.client() as page:
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        agent.pull_card()
        assert agent.wait_for(lambda: not agent.runtime.owner.state.card_present)
        for method, args in (
            ("cus-sec_SpcInitEnvEx", {}),
            ("cus-sec_SpcGetCardID", {}),
            ("security_SpcGetSignCertAsPEM", {}),
            ("cus-sec_SpcSignDataAsPEM", {"inData": "x", "passwd": CARD_PIN}),
        ):
            message, code = error_of(page.call(method, args))
            assert code == "Err:Custom51590", method
            assert "请插入IC卡" in message or "重新插入" in message
        agent.insert_card()
        assert agent.wait_for(lambda: agent.runtime.owner.state.card_present)
        # The pull ended the session: the next visitor's card needs the PIN again.
        _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
        assert code == "Err:CardAgent.session_required"
        signature, _ = ok_data(
            page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x", "passwd": CARD_PIN})
        )
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, b"x", raw, tmp_path)


# --- other card profiles ---------------------------------------------------------------------


def test_legacy_rsa1024_signs_sha1(start_agent: StartAgent, tmp_path: Path) -> None:
    agent = start_agent(card={"profile": "legacy-rsa1024"})
    cert = agent.card_data.sign_cert
    text = "<ds:SignedInfo>rsa-sha1</ds:SignedInfo>"
    digest = hashlib.sha1(text.encode()).digest()
    with agent.client() as page:
        signature, _ = ok_data(
            page.call("cus-sec_SpcSignDataAsPEM", {"inData": text, "passwd": CARD_PIN})
        )
        raw = base64.b64decode(signature)
        assert len(raw) == 128
        assert openssl_verifies(cert, text.encode(), raw, tmp_path / "data")
        for encoded in (digest.hex(), base64.b64encode(digest).decode()):
            no_hash, _ = ok_data(
                page.call(
                    "security_SpcSignDataNoHashAsPEM", {"inData": encoded, "passwd": CARD_PIN}
                )
            )
            assert base64.b64decode(no_hash) == raw  # PKCS#1 v1.5 is deterministic
        args = {"inData": text, "signData": signature}
        assert ok_data(page.call("cus-sec_SpcVerifySignData", args)) == []
        args = {"inData": digest.hex(), "signData": signature}
        assert ok_data(page.call("cus-sec_SpcVerifySignDataNoHash", args)) == []
        _, code = error_of(page.call("cus-sec_SpcVerifySignData", {**args, "inData": "x"}))
        assert code == "Err:CardAgent.signature_invalid"
        assert ok_data(page.call("cus-sec_SpcSHA1DigestAsPEM", {"szInfo": text})) == [
            base64.b64encode(digest).decode()
        ]
        random, _ = ok_data(
            page.call("cus-sec_SpcSignRandom", {"random": "rnd", "passwd": CARD_PIN})
        )
        assert openssl_verifies(cert, b"rnd", base64.b64decode(random), tmp_path / "random")


def test_rsa2048_signs_sha1_like_the_official_client(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    # The official client signs SHA-1 on every RSA card; the native API would use SHA-256
    # on this 2048-bit key, the compatibility endpoint must not.
    agent = start_agent(card={"profile": "rsa2048"})
    cert = agent.card_data.sign_cert
    text = "<ds:SignedInfo>rsa-sha1 on a 2048-bit card</ds:SignedInfo>"
    digest = hashlib.sha1(text.encode()).digest()
    with agent.client() as page:
        signature, _ = ok_data(
            page.call("cus-sec_SpcSignDataAsPEM", {"inData": text, "passwd": "00000000"})
        )
        raw = base64.b64decode(signature)
        assert len(raw) == 256
        assert openssl_verifies(cert, text.encode(), raw, tmp_path / "data")
        no_hash, _ = ok_data(
            page.call(
                "cus-sec_SpcSignDataNoHashAsPEM", {"inData": digest.hex(), "passwd": "00000000"}
            )
        )
        assert base64.b64decode(no_hash) == raw
        assert ok_data(page.call("cus-sec_SpcGetEntMode")) == ["02"]  # an operator card
    assert sign_count(agent) == 2

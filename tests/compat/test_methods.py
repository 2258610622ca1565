"""Every card method over a real WebSocket, on every backend.

Signatures are checked with the openssl CLI, not with the agent's own code.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from card.crypto.certs import CertificateInfo, certificate_to_pem, parse_certificate
from card.crypto.sm2 import sm2_e

from .harness import CARD_PIN, SW_ORIGIN, CompatAgent, error_of, ok_data, openssl_verifies

PREFIXES = ("cus-sec_", "security_")
CST = timezone(timedelta(hours=8))


@pytest.fixture
def agent(shared_agent: CompatAgent) -> CompatAgent:
    """Tests here leave the card as they found it (right PINs only)."""
    return shared_agent


def sign_cert(agent: CompatAgent) -> CertificateInfo:
    return parse_certificate(agent.card_data.sign_cert)


def env_cert(agent: CompatAgent) -> CertificateInfo:
    return parse_certificate(agent.card_data.enc_cert)


# --- open / close, card and holder data -------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_init_clear_and_priority(agent: CompatAgent, prefix: str) -> None:
    with agent.client() as page:
        args = {"szInitEnvPriority": "1"}
        assert ok_data(page.call(prefix + "SpcSetInitEnvPriority", args)) == []
        assert ok_data(page.call(prefix + "SpcInitEnvEx")) == []
        assert ok_data(page.call(prefix + "SpcClearEnv")) == []


@pytest.mark.parametrize("prefix", PREFIXES)
def test_card_and_holder_data(agent: CompatAgent, prefix: str) -> None:
    state = agent.card_data
    with agent.client() as page:
        assert ok_data(page.call(prefix + "SpcGetCardID")) == [state.card_number]
        assert ok_data(page.call(prefix + "SpcGetCertNo")) == [sign_cert(agent).serial_hex]
        assert ok_data(page.call(prefix + "SpcGetUName")) == [state.holder_name]
        # An SKF token carries no customs code (it is not in the certificates): the
        # documented fallback, the USCC, answers.
        ent_id = state.enterprise_code if agent.skf is None else state.uscc
        assert ok_data(page.call(prefix + "SpcGetEntID")) == [ent_id]
        assert ok_data(page.call(prefix + "SpcGetEntName")) == [state.company_name]
        assert ok_data(page.call(prefix + "SpcGetEntMode")) == ["01"]  # legal-person card


def test_card_user_info_fields_the_login_page_reads(agent: CompatAgent) -> None:
    state = agent.card_data
    with agent.client() as page:
        (info,) = ok_data(page.call("cus-sec_SpcGetCardUserInfo"))
        fields = info.split("||")
        assert fields[0] == sign_cert(agent).serial_hex  # the CAS page's certNo
        assert fields[5] == state.card_number  # the CAS page's icCard
        (with_pin,) = ok_data(page.call("cus-sec_SpcGetCardUserInfo", {"passwd": CARD_PIN}))
        assert with_pin == info
        (all_info,) = ok_data(page.call("security_getGetCardUserInfoAll", {"userpin": CARD_PIN}))
        assert all_info == info


@pytest.mark.parametrize("prefix", PREFIXES)
def test_certificates(agent: CompatAgent, prefix: str) -> None:
    state = agent.card_data
    with agent.client() as page:
        for func in ("SpcGetSignCert", "SpcGetSignCertAsPEM"):
            (value,) = ok_data(page.call(prefix + func))
            assert "\n" not in value
            assert "BEGIN" not in value  # Base64 DER, no PEM header lines
            assert base64.b64decode(value) == state.sign_cert
        for func in ("SpcGetEnvCert", "SpcGetEnvCertAsPEM"):
            (value,) = ok_data(page.call(prefix + func))
            assert base64.b64decode(value) == state.enc_cert


def _times(info: CertificateInfo) -> dict[str, str]:
    fmt = "%Y%m%d%H%M%S"
    return {
        "szStartTime": info.not_before.astimezone(CST).strftime(fmt),
        "szEndTime": info.not_after.astimezone(CST).strftime(fmt),
    }


def test_valid_time(agent: CompatAgent) -> None:
    with agent.client() as page:
        (times,) = ok_data(page.call("cus-sec_SpcGetValidTimeFromCert"))
        assert times == _times(sign_cert(agent))
        assert len(times["szEndTime"]) == 14  # the CAS page insists on 14 digits
        env = base64.b64encode(agent.card_data.enc_cert).decode()
        (times,) = ok_data(page.call("cus-sec_SpcGetValidTimeFromCert", {"cert": env}))
        assert times == _times(env_cert(agent))
        pem = certificate_to_pem(agent.card_data.enc_cert)
        (times,) = ok_data(page.call("cus-sec_SpcGetValidTimeFromCert", {"cert": pem}))
        assert times == _times(env_cert(agent))
        as_bytes = list(agent.card_data.enc_cert)
        args = {"certByteArray": as_bytes}
        (times,) = ok_data(page.call("security_SpcGetValidTimeFromCert", args))
        assert times == _times(env_cert(agent))
        _, code = error_of(page.call("cus-sec_SpcGetValidTimeFromCert", {"cert": "AAAA"}))
        assert code == "Err:Base50000"


# --- PIN -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_verify_pin(agent: CompatAgent, prefix: str) -> None:
    with agent.client() as page:
        assert ok_data(page.call(prefix + "SpcVerifyPIN", {"passwd": CARD_PIN})) == []
        assert agent.card_verified()


def test_verify_pin_all_leaves_the_card_closed(agent: CompatAgent) -> None:
    with agent.client() as page:
        assert ok_data(page.call("cus-sec_SpcVerifyPINAll", {"passwd": CARD_PIN})) == []
        assert not agent.card_verified()
        # "close" means no session either: signing needs the PIN again.
        _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
        assert code == "Err:CardAgent.session_required"


@pytest.mark.parametrize(
    "args", [{}, {"passwd": ""}, {"passwd": None}, {"passwd": 88888888}, {"passwd": "12"}]
)
def test_bad_pin_arguments_cost_no_try(agent: CompatAgent, args: dict[str, Any]) -> None:
    before = agent.pin_tries_left()
    with agent.client() as page:
        message, code = error_of(page.call("cus-sec_SpcVerifyPIN", args))
    assert code == "Err:Base50000"
    assert "88888888" not in message
    assert agent.pin_tries_left() == before


def test_clear_env_ends_the_session(agent: CompatAgent) -> None:
    with agent.client() as page:
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        ok_data(page.call("cus-sec_SpcClearEnv"))
        assert not agent.card_verified()
        _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
        assert code == "Err:CardAgent.session_required"


# --- signatures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "cus-sec_SpcSignData",
        "cus-sec_SpcSignDataAsPEM",
        "security_SpcSignData",
        "security_SpcSignDataAsPEM",
    ],
)
def test_sign_data_sm2(agent: CompatAgent, method: str, tmp_path: Path) -> None:
    text = "<ds:SignedInfo>小微企业综合保险 网上协议</ds:SignedInfo>"
    with agent.client() as page:
        signature, cert_no = ok_data(page.call(method, {"inData": text, "passwd": CARD_PIN}))
    raw = base64.b64decode(signature)
    assert len(raw) == 64  # raw r||s, as the official client
    assert cert_no == sign_cert(agent).serial_hex
    assert openssl_verifies(agent.card_data.sign_cert, text.encode(), raw, tmp_path)
    assert not openssl_verifies(agent.card_data.sign_cert, b"other", raw, tmp_path / "neg")


def test_sign_after_verify_without_passwd(agent: CompatAgent, tmp_path: Path) -> None:
    with agent.client() as page:
        _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
        assert code == "Err:CardAgent.session_required"
        ok_data(page.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        signature, _ = ok_data(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, b"x", raw, tmp_path)


def test_a_session_belongs_to_its_connection(agent: CompatAgent) -> None:
    with agent.client() as first, agent.client() as second:
        ok_data(first.call("cus-sec_SpcVerifyPIN", {"passwd": CARD_PIN}))
        _, code = error_of(second.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))
        assert code == "Err:CardAgent.session_required"
        ok_data(first.call("cus-sec_SpcSignDataAsPEM", {"inData": "x"}))


@pytest.mark.parametrize("encoding", ["base64", "hex"])
@pytest.mark.parametrize("method", ["cus-sec_SpcSignDataNoHash", "cus-sec_SpcSignDataNoHashAsPEM"])
def test_sign_no_hash_sm2(agent: CompatAgent, method: str, encoding: str, tmp_path: Path) -> None:
    message = "报文原文".encode()
    point = sign_cert(agent).sm2_point
    assert point is not None
    e = sm2_e(point, message)  # what an SM2 card signs: SM3(Z || M), default ID
    digest = base64.b64encode(e).decode() if encoding == "base64" else e.hex()
    with agent.client() as page:
        signature, _ = ok_data(page.call(method, {"inData": digest, "passwd": CARD_PIN}))
        _, code = error_of(page.call(method, {"inData": "AAAA", "passwd": CARD_PIN}))
        assert code == "Err:Base50000"
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, message, raw, tmp_path)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_sign_random_is_a_login(agent: CompatAgent, prefix: str, tmp_path: Path) -> None:
    random = "a1b2c3d4e5f60718"
    with agent.client() as page:
        signature, cert_no = ok_data(
            page.call(prefix + "SpcSignRandom", {"random": random, "passwd": CARD_PIN})
        )
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, random.encode(), raw, tmp_path)
    record = agent.signatures()[-1]
    assert record["purpose"] == "login"
    assert record["result"] == "ok"
    assert record["origin"] == SW_ORIGIN
    assert record["client"].startswith(f"compat:{SW_ORIGIN}#")
    assert record["cert_number"] == cert_no


def test_purpose_defaults_to_other_and_takes_a_hint(agent: CompatAgent) -> None:
    with agent.client() as page:
        ok_data(page.call("cus-sec_SpcSignDataAsPEM", {"inData": "a", "passwd": CARD_PIN}))
        args = {"inData": "b", "passwd": CARD_PIN, "purpose": "agreement", "title": "网上协议"}
        ok_data(page.call("cus-sec_SpcSignDataAsPEM", args))
        _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {**args, "purpose": "steal"}))
        assert code == "Err:Base50000"
    signs = agent.signatures()[-2:]
    assert signs[0]["purpose"] == "other"
    assert signs[0]["title"] == f"SpcSignDataAsPEM ({SW_ORIGIN})"
    assert (signs[1]["purpose"], signs[1]["title"]) == ("agreement", "网上协议")


def test_sign_needs_in_data(agent: CompatAgent) -> None:
    with agent.client() as page:
        for args in ({"passwd": CARD_PIN}, {"inData": "", "passwd": CARD_PIN}, {"inData": 5}):
            _, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", args))
            assert code == "Err:Base50000"
        _, code = error_of(page.call("cus-sec_SpcSignRandom", {"passwd": CARD_PIN}))
        assert code == "Err:Base50000"


def test_data_over_the_limit_is_refused(agent: CompatAgent) -> None:
    big = "x" * (agent.runtime.config.security.max_data_bytes + 1)
    with agent.client() as page:
        message, code = error_of(page.call("cus-sec_SpcSignDataAsPEM", {"inData": big}))
    assert code == "Err:Base50000"
    assert message == "数据过大"


# --- verification and digests ----------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_verify_sign_data(agent: CompatAgent, prefix: str) -> None:
    text = "待验证的原文"
    with agent.client() as page:
        signature, _ = ok_data(
            page.call(prefix + "SpcSignDataAsPEM", {"inData": text, "passwd": CARD_PIN})
        )
        args = {"inData": text, "signData": signature}
        assert ok_data(page.call(prefix + "SpcVerifySignData", args)) == []
        pem = certificate_to_pem(agent.card_data.sign_cert)
        assert ok_data(page.call(prefix + "SpcVerifySignData", {**args, "certDataPEM": pem})) == []
        _, code = error_of(page.call(prefix + "SpcVerifySignData", {**args, "inData": "改"}))
        assert code == "Err:CardAgent.signature_invalid"
        env = base64.b64encode(agent.card_data.enc_cert).decode()
        _, code = error_of(page.call(prefix + "SpcVerifySignData", {**args, "certDataPEM": env}))
        assert code == "Err:CardAgent.signature_invalid"
        _, code = error_of(page.call(prefix + "SpcVerifySignData", {**args, "signData": "!"}))
        assert code == "Err:Base50000"


def test_verify_sign_data_no_hash(agent: CompatAgent) -> None:
    message = b"digest me"
    point = sign_cert(agent).sm2_point
    assert point is not None
    e = base64.b64encode(sm2_e(point, message)).decode()
    with agent.client() as page:
        signature, _ = ok_data(
            page.call("cus-sec_SpcSignDataNoHashAsPEM", {"inData": e, "passwd": CARD_PIN})
        )
        args = {"inData": e, "signData": signature}
        assert ok_data(page.call("cus-sec_SpcVerifySignDataNoHash", args)) == []
        other = base64.b64encode(bytes(32)).decode()
        _, code = error_of(page.call("security_SpcVerifySignDataNoHash", {**args, "inData": other}))
        assert code == "Err:CardAgent.signature_invalid"


@pytest.mark.parametrize("func", ["SpcSHA1Digest", "SpcSHA1DigestAsPEM"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_sha1_digest(agent: CompatAgent, prefix: str, func: str) -> None:
    text = "<ceb:CEB311Message>海南</ceb:CEB311Message>"
    expected = base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()
    with agent.client() as page:
        assert ok_data(page.call(prefix + func, {"szInfo": text})) == [expected]
        _, code = error_of(page.call(prefix + func, {}))
        assert code == "Err:Base50000"


# --- framing-level behaviour -------------------------------------------------------------------


def test_unknown_methods_and_modules(agent: CompatAgent) -> None:
    with agent.client() as page:
        # The CAS login page asks this first and falls back to SpcSignRandom on failure.
        _, code = error_of(page.call("ra_Is903Reader"))
        assert code == "Err:CardAgent.not_found"
        _, code = error_of(page.call("cus-sec_SpcRSADecrypt", {"inData": "x"}))
        assert code == "Err:CardAgent.not_found"
        _, code = error_of(page.call("pdf-sign_PdfAddSign"))
        assert code == "Err:CardAgent.not_found"


def test_odd_frames(agent: CompatAgent) -> None:
    with agent.client() as page:
        page.send("not json")  # dropped, like the page library drops non-JSON
        page.send('{"_id": 5}')  # no _method: nobody to answer
        page.send("[" * 100 + "]" * 100)
        page.send('{"_method":"cus-sec_SpcGetCardID","_id":"abc","args":[1]}')
        frame = page.recv()
        assert frame["_id"] == "abc"  # string ids are echoed as they came
        assert frame["_args"]["Error"][1] == "Err:Base50000"
        assert ok_data(page.call("cus-sec_SpcGetCardID")) == [agent.card_data.card_number]

"""The practice site's server on its own (no browser): signatures verified against the
card's certificate, for SM2 and legacy RSA cards; certificate validity; the guide's
contact rules; the order of the steps."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from card.crypto.certs import certificate_to_pem
from card.eport.driver import CertSlot
from card.eport.session import EPortSession
from practice.app import create_practice_app
from simulator.card_os import SimulatedCard
from simulator.inprocess import InProcessTransport
from simulator.profiles import get_profile

pytestmark = pytest.mark.e2e


class Card:
    def __init__(self, profile: str) -> None:
        self.profile = get_profile(profile)
        self.session = EPortSession.open(InProcessTransport(SimulatedCard.create(self.profile)))
        self.session.verify_pin(self.profile.pin)
        self.pem = certificate_to_pem(self.session.certificate(CertSlot.SIGN))

    def sign(self, text: str) -> dict[str, str]:
        sig = self.session.sign(text.encode())
        return {"signature": base64.b64encode(sig.value).decode(), "algorithm": sig.algorithm.value}


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_practice_app(read_seconds=0), base_url="http://localhost") as c:
        assert c.get("/").status_code == 200  # sets the visit cookie
        yield c


def login(client: TestClient, card: Card) -> Any:
    challenge = client.post("/api/login/challenge", json={}).json()["challenge"]
    body = {"certificate_pem": card.pem, **card.sign(challenge)}
    return client.post("/api/login", json=body)


CONTACT = {"name": "王芳", "mobile": "13900139000", "email": "wangfang@example.com"}
STEPS = ["application", "seal", "agreement", "data_authorisation", "submit", "receipt"]


@pytest.mark.parametrize("profile", ["legal-person-sm2", "legacy-rsa1024"])
def test_every_step_verified(client: TestClient, profile: str) -> None:
    card = Card(profile)
    answer = login(client, card)
    assert answer.status_code == 200, answer.text
    assert answer.json()["holder"] == card.profile.holder_name
    assert answer.json()["warning"] is None
    assert client.post("/api/contact", json=CONTACT).status_code == 200
    for step in STEPS:
        doc = client.get(f"/api/document/{step}").json()
        result = client.post(f"/api/sign/{step}", json=card.sign(doc["text"]))
        assert result.status_code == 200, result.text
    summary = client.get("/api/summary").json()
    assert summary["complete"]
    assert [r["step"] for r in summary["records"]] == ["login", *STEPS]
    assert all(r["verified"] for r in summary["records"])


def test_bad_signature_and_other_card_refused(client: TestClient) -> None:
    card = Card("legal-person-sm2")
    assert login(client, card).status_code == 200
    client.post("/api/contact", json=CONTACT)
    doc = client.get("/api/document/application").json()
    forged = card.sign(doc["text"] + "(改)")
    assert client.post("/api/sign/application", json=forged).json()["error"]["code"] == (
        "signature_invalid"
    )
    other = Card("operator-sm2")  # same company, another card: its signature fails here
    wrong = client.post("/api/sign/application", json=other.sign(doc["text"]))
    assert wrong.status_code == 403
    # A challenge is good for one attempt only.
    challenge = client.post("/api/login/challenge", json={}).json()["challenge"]
    body = {"certificate_pem": card.pem, **card.sign(challenge)}
    assert client.post("/api/login", json=body).status_code == 200
    assert client.post("/api/login", json=body).status_code == 409


def test_certificate_validity(client: TestClient) -> None:
    soon = login(client, Card("expiring-soon"))
    assert soon.status_code == 200
    assert "到期" in soon.json()["warning"]
    expired = login(client, Card("expired-cert"))
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "certificate_expired"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("email", "wang-fang@example.com"),
        ("email", "wang_fang@example.com"),
        ("email", "wangfang@exa-mple.com"),
        ("email", "not-an-address"),
        ("mobile", "1234"),
        ("name", ""),
    ],
)
def test_contact_rules(client: TestClient, field: str, value: str) -> None:
    assert login(client, Card("legal-person-sm2")).status_code == 200
    answer = client.post("/api/contact", json={**CONTACT, field: value})
    assert answer.status_code == 422
    assert field in answer.json()["fields"]


def test_steps_in_order_and_login_first(client: TestClient) -> None:
    assert client.get("/api/document/seal").json()["error"]["code"] == "login_required"
    assert login(client, Card("legal-person-sm2")).status_code == 200
    assert client.get("/api/document/application").json()["error"]["code"] == "contact_required"
    client.post("/api/contact", json=CONTACT)
    assert client.get("/api/document/seal").json()["error"]["code"] == "out_of_order"


def test_headers_and_hosts(client: TestClient) -> None:
    page = client.get("/")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400

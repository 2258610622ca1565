"""`GET /v1/card/identify` and `GET /v1/card/driver` on every backend, over real HTTP:
the report, nothing spent or signed, open sessions ended visibly."""

from __future__ import annotations

import httpx

from tests.agent.conftest import ORIGIN, Agent, assert_error, sign_body

EPORT_AID = "D15600000145504F5254"


def test_identify_reports_the_card_and_changes_nothing_on_it(
    agent: Agent, client: httpx.Client
) -> None:
    tries, signed = agent.pin_tries_left(), agent.signatures_made()
    presented = agent.pins_presented()
    r = client.get("/v1/card/identify")
    assert r.status_code == 200, r.text
    report = r.json()
    if agent.skf is None:
        assert report["backend"] == ("simulated" if agent.vpcd is None else "pcsc")
        assert report["registry"]["entry"] == "card-agent-simulator"
        assert [a["aid"] for a in report["applications"] if a["selected"]] == [EPORT_AID]
        assert report["skf"] is None
    else:
        assert report["backend"] == "skf"
        assert report["atr"] is None
        (device,) = report["skf"]["devices"]
        assert device["registry"]["entry"] == "softskf-test-token"
    assert agent.pin_tries_left() == tries
    assert agent.signatures_made() == signed
    assert agent.pins_presented() == presented
    text = r.text
    assert agent.card_data.card_number not in text
    assert agent.card_data.holder_name not in text


def test_identify_ends_the_open_sessions_and_says_so(agent: Agent, client: httpx.Client) -> None:
    assert agent.verify(client).status_code == 200
    assert agent.card_verified()
    assert client.get("/v1/card/identify").status_code == 200
    # The card was re-opened, which logs it out: the agent's view follows.
    assert not agent.card_verified()
    assert_error(client.post("/v1/sign", json=sign_body()), 401, "session_required")
    ended = [r for r in agent.audit_records() if r["event"] == "session_end"]
    assert ended[-1]["reason"] == "card_identify"
    assert agent.verify(client).status_code == 200
    assert client.post("/v1/sign", json=sign_body()).status_code == 200


def test_the_driver_in_use(agent: Agent, client: httpx.Client) -> None:
    r = client.get("/v1/card/driver")
    assert r.status_code == 200, r.text
    driver = r.json()
    if agent.skf is not None:
        assert (driver["driver"], driver["entry"]) == ("skf", "softskf-test-token")
        assert (driver["device"], driver["application"], driver["container"]) == (
            "SoftSKF Token 0",
            "EPORT",
            "SignKey",
        )
    elif agent.vpcd is not None:
        assert (driver["driver"], driver["entry"]) == ("eport-apdu", "card-agent-simulator")
        assert driver["source"] == "card/data/drivers.toml"
    else:
        assert (driver["driver"], driver["entry"]) == ("eport-apdu", None)
        assert "simulated backend" in driver["why"]


def test_both_need_a_token_and_a_card(agent: Agent, token: str) -> None:
    with agent.client(ORIGIN) as anonymous:
        for path in ("/v1/card/identify", "/v1/card/driver"):
            assert_error(anonymous.get(path), 401, "unauthorized")
    agent.pull_card()
    assert agent.wait_for(lambda: not agent.card_present(), timeout=3)
    with agent.client(ORIGIN, token) as c:
        for path in ("/v1/card/identify", "/v1/card/driver"):
            r = c.get(path)
            assert r.status_code == 409, r.text
            assert r.json()["error"]["code"] in ("card_missing", "card_removed")

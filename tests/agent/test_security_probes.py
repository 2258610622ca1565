"""Each defence of the localhost agent, probed from outside over real HTTP/WebSocket.

Every refusal is checked for its status code AND its stable error code, and that the
request never reached a handler (no PIN try spent, no audit record, no card APDU).
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus

from agent.api.security import SecurityMiddleware
from tests.agent.conftest import (
    CARD_PIN,
    ORIGIN,
    OTHER_ORIGIN,
    UNLISTED_ORIGIN,
    Agent,
    assert_error,
    assert_no_traceback,
    raw_http,
    raw_json,
    raw_status,
    sign_body,
)

WRONG_PIN = "31415926"

WS_UPGRADE = (
    "GET /v1/events HTTP/1.1\r\n"
    "{host}"
    "{origin}"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


@pytest.fixture
def agent(shared_agent: Agent) -> Agent:
    """These probes leave the card as they found it: one agent serves the module."""
    return shared_agent


def ws_refused(agent: Agent, origin: str | None) -> int:
    """Try a WebSocket upgrade through the websockets client; the HTTP status it got."""

    async def attempt() -> int:
        try:
            async with agent.ws(origin):
                pass
        except InvalidStatus as exc:
            return exc.response.status_code
        raise AssertionError("the WebSocket upgrade was accepted")

    return asyncio.run(attempt())


# --- Host -------------------------------------------------------------------------------


def bad_hosts(port: int) -> list[str]:
    other = 1 if port != 1 else 2
    return [
        f"evil.example:{port}",
        f"127.0.0.1:{port + other if port < 65535 else port - 1}",
        "127.0.0.1",  # no port: not what the browser sends for our origin
        f"localhost.evil.example:{port}",
        f"127.0.0.1:{port}.evil.example",
        f"LOCALHOST:{port}x",
    ]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/status"), ("GET", "/does-not-exist"), ("POST", "/v1/pin/verify")],
)
def test_unlisted_host_is_refused_before_routing(
    agent: Agent, token: str, method: str, path: str
) -> None:
    with agent.untouched(), agent.client(ORIGIN, token) as c:
        for host in bad_hosts(agent.port):
            r = c.request(method, path, headers={"Host": host}, json={"pin": WRONG_PIN})
            assert_error(r, 403, "host_forbidden")
            # Refused before the CORS layer: nothing tells a rebinding page it may read.
            assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}"])
def test_loopback_names_are_allowed(agent: Agent, host: str) -> None:
    with agent.client(ORIGIN) as c:
        r = c.get("/v1/status", headers={"Host": host.format(port=agent.port)})
    assert r.status_code == 200, r.text
    assert r.json()["api"] == "v1"


def test_missing_host_http10_is_refused(agent: Agent) -> None:
    # HTTP/1.0 may omit Host, so the server hands it on: the middleware refuses it.
    for path in ("/v1/status", "/nowhere"):
        response = raw_http(agent.port, f"GET {path} HTTP/1.0\r\n\r\n".encode())
        assert raw_status(response) == 403
        assert raw_json(response)["error"]["code"] == "host_forbidden"


@pytest.mark.parametrize(
    "headers",
    [
        "",  # HTTP/1.1 without Host
        "Host: 127.0.0.1:{port}\r\nHost: 127.0.0.1:{port}\r\n",
        "Host: 127.0.0.1:{port}\r\nHost: evil.example:{port}\r\n",
        "Host: evil.example:{port}\r\nHost: 127.0.0.1:{port}\r\n",
    ],
)
def test_missing_or_duplicated_host_http11_is_refused(agent: Agent, headers: str) -> None:
    request = (
        f"GET /v1/status HTTP/1.1\r\n{headers.format(port=agent.port)}Connection: close\r\n\r\n"
    )
    response = raw_http(agent.port, request.encode())
    status = raw_status(response)
    # uvicorn's HTTP parser (h11) already refuses these with a bare 400; should it ever
    # let one through (another parser), the middleware must answer host_forbidden.
    assert status in (400, 403), response
    if status == 403:
        assert raw_json(response)["error"]["code"] == "host_forbidden"
    assert b"reader_present" not in response


def _asgi_probe(headers: list[tuple[bytes, bytes]], kind: str = "http") -> tuple[bool, list[Any]]:
    """Run SecurityMiddleware alone on a crafted scope: (inner app reached?, sent messages)."""
    reached = False

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        if kind == "websocket":
            return {"type": "websocket.connect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    middleware = SecurityMiddleware(
        inner, port=17321, allowed_origins=(ORIGIN,), max_body_bytes=4096
    )
    scope = {"type": kind, "method": "GET", "path": "/v1/status", "headers": headers}
    asyncio.run(middleware(scope, receive, send))
    return reached, sent


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"host", b"127.0.0.1:17321"), (b"host", b"127.0.0.1:17321")],
        [(b"host", b"127.0.0.1:17321"), (b"host", b"evil.example:17321")],
        [(b"host", b"127.0.0.1:17321"), (b"origin", ORIGIN.encode()), (b"origin", b"null")],
    ],
)
def test_middleware_refuses_missing_and_duplicated_host_or_origin(
    headers: list[tuple[bytes, bytes]], kind: str
) -> None:
    """What the HTTP parser might let through (HTTP/1.0, another parser), the middleware
    refuses itself: missing Host, a repeated Host, a repeated Origin."""
    reached, sent = _asgi_probe(headers, kind)
    assert not reached
    if kind == "websocket":
        assert sent == [{"type": "websocket.close", "code": 4403}]
        return
    assert sent[0]["status"] == 403
    code = json.loads(sent[1]["body"])["error"]["code"]
    has_host = any(name == b"host" for name, _ in headers)
    repeated_host = sum(name == b"host" for name, _ in headers) > 1
    assert code == ("host_forbidden" if not has_host or repeated_host else "origin_forbidden")


@pytest.mark.parametrize("length", ["²", "1³", "¹0", "+1", " 1", "1_0"])
def test_middleware_refuses_a_content_length_that_is_not_ascii_digits(length: str) -> None:
    """Found by tests/fuzz/fuzz_api.py: str.isdigit() also takes the superscript digits
    of Latin-1 (header bytes are decoded as Latin-1), and int() then raised inside the
    middleware: an internal error. uvicorn's h11 refuses such a header before the app;
    the middleware must not rely on it."""
    host = (b"host", b"127.0.0.1:17321")
    reached, sent = _asgi_probe([host, (b"content-length", length.encode("latin-1"))])
    assert not reached
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["code"] == "invalid_input"


def test_websocket_upgrade_with_bad_host_is_refused(agent: Agent) -> None:
    for host in [*bad_hosts(agent.port), None]:
        request = WS_UPGRADE.format(
            host=f"Host: {host}\r\n" if host else "", origin=f"Origin: {ORIGIN}\r\n"
        )
        response = raw_http(agent.port, request.encode())
        status = raw_status(response)
        assert status != 101, response
        assert status in (400, 403), response


# --- Origin -----------------------------------------------------------------------------

BAD_ORIGINS = [
    UNLISTED_ORIGIN,
    "null",
    ORIGIN + "/",
    ORIGIN.upper(),
    "chrome-extension://" + ORIGIN.removeprefix("chrome-extension://").upper(),
    "CHROME-EXTENSION://" + ORIGIN.removeprefix("chrome-extension://"),
    ORIGIN + ":443",
    ORIGIN + ".evil.example",
    "https://evil.example",
    "http://127.0.0.1",  # a page served from loopback is still not a listed origin
    "",
]


@pytest.mark.parametrize("origin", BAD_ORIGINS)
def test_unlisted_origin_is_refused_everywhere(agent: Agent, origin: str) -> None:
    token = agent.pair()
    headers = {"Origin": origin, "Authorization": f"Bearer {token}"}
    with agent.untouched(), agent.client(origin=None) as c:
        for r in (
            c.get("/v1/status", headers=headers),
            c.get("/v1/pin", headers=headers),
            c.get("/does-not-exist", headers=headers),
            c.post("/v1/pin/verify", headers=headers, json={"pin": WRONG_PIN}),
            c.post("/v1/pair", headers=headers, json={"client_name": "x"}),
        ):
            assert_error(r, 403, "origin_forbidden")
            assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("origin", [o for o in BAD_ORIGINS if o])
def test_unlisted_origin_websocket_upgrade_is_refused(agent: Agent, origin: str) -> None:
    assert ws_refused(agent, origin=origin) == 403


def test_listed_origin_gets_its_exact_origin_back(agent: Agent) -> None:
    for origin in (ORIGIN, OTHER_ORIGIN):
        with agent.client(origin) as c:
            r = c.get("/v1/status")
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == origin
        assert "Origin" in r.headers["vary"]
    with agent.client(origin=None) as c:
        r = c.get("/v1/status")
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


@pytest.mark.parametrize("path", ["/v1/sign", "/v1/pin/verify", "/v1/pair"])
def test_cors_preflight_from_listed_origin(agent: Agent, path: str) -> None:
    with agent.client(ORIGIN) as c:
        r = c.options(path, headers=PREFLIGHT)
        pna = c.options(
            path, headers={**PREFLIGHT, "Access-Control-Request-Private-Network": "true"}
        )
    for resp in (r, pna):
        assert resp.status_code in (200, 204)
        assert resp.headers["access-control-allow-origin"] == ORIGIN
        assert resp.headers.get_list("access-control-allow-origin") == [ORIGIN]
        assert "Origin" in resp.headers["vary"]
        assert "POST" in resp.headers["access-control-allow-methods"]
        allowed = resp.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed
        assert "content-type" in allowed
        assert "access-control-allow-credentials" not in resp.headers
    assert "access-control-allow-private-network" not in r.headers
    assert pna.headers["access-control-allow-private-network"] == "true"


@pytest.mark.parametrize("origin", [*BAD_ORIGINS, None])
def test_cors_preflight_from_unlisted_origin(agent: Agent, origin: str | None) -> None:
    headers = {**PREFLIGHT, "Access-Control-Request-Private-Network": "true"}
    if origin is not None:
        headers["Origin"] = origin
    with agent.client(origin=None) as c:
        r = c.options("/v1/sign", headers=headers)
    assert_error(r, 403, "origin_forbidden")
    for name in r.headers:
        assert not name.lower().startswith("access-control-"), r.headers


# --- no state change without a real JSON POST ---------------------------------------------


@pytest.mark.parametrize("path", ["/v1/pin/verify", "/v1/sign", "/v1/pin/change", "/v1/pair"])
def test_get_on_state_changing_endpoint_is_405(
    agent: Agent, client: httpx.Client, path: str
) -> None:
    with agent.untouched():
        r = client.get(path, params={"pin": WRONG_PIN, "purpose": "seal", "title": "t"})
        assert_error(r, 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", json.dumps({"pin": WRONG_PIN}).encode()),
        ("text/plain;charset=UTF-8", json.dumps({"pin": WRONG_PIN}).encode()),  # sendBeacon
        ("application/x-www-form-urlencoded", f"pin={WRONG_PIN}".encode()),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="pin"'),
        ("application/json-patch+json", json.dumps({"pin": WRONG_PIN}).encode()),
        (None, json.dumps({"pin": WRONG_PIN}).encode()),
    ],
)
def test_non_json_post_is_415_before_any_handler(
    agent: Agent, client: httpx.Client, content_type: str | None, body: bytes
) -> None:
    before = agent.tries_left(client)
    headers = {"Content-Type": content_type} if content_type else {}
    with agent.untouched():
        request = client.build_request("POST", "/v1/pin/verify", content=body, headers=headers)
        assert ("content-type" in request.headers) == (content_type is not None)
        assert_error(client.send(request), 415, "unsupported_media_type")
        for path in ("/v1/sign", "/v1/pin/change", "/v1/session/end", "/v1/pair"):
            r = client.post(path, content=body, headers=headers)
            assert_error(r, 415, "unsupported_media_type")
    assert agent.tries_left(client) == before


def test_body_over_limit_announced_is_413(agent: Agent, client: httpx.Client) -> None:
    limit = agent.runtime.config.security.max_body_bytes
    body = json.dumps({"pin": WRONG_PIN, "pad": "x" * (limit + 10)}).encode()
    with agent.untouched():
        for path in ("/v1/pin/verify", "/v1/sign", "/v1/pair"):
            r = client.post(path, content=body, headers={"Content-Type": "application/json"})
            assert r.request.headers["content-length"] == str(len(body))
            assert_error(r, 413, "payload_too_large")


def test_body_over_limit_streamed_is_413(agent: Agent, client: httpx.Client) -> None:
    limit = agent.runtime.config.security.max_body_bytes

    def chunks() -> Any:
        yield b'{"pin": "' + WRONG_PIN.encode() + b'", "pad": "'
        for _ in range(limit // 4096 + 2):
            yield b"x" * 4096
        yield b'"}'

    with agent.untouched():
        for path in ("/v1/pin/verify", "/v1/sign"):
            r = client.post(path, content=chunks(), headers={"Content-Type": "application/json"})
            assert "content-length" not in r.request.headers
            assert r.request.headers["transfer-encoding"] == "chunked"
            assert_error(r, 413, "payload_too_large")


def test_json_nested_1000_deep_is_400(agent: Agent, client: httpx.Client) -> None:
    with agent.untouched():
        for nested in (b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000):
            for path in ("/v1/pin/verify", "/v1/sign", "/v1/pair"):
                r = client.post(
                    path,
                    content=b'{"pin": "' + WRONG_PIN.encode() + b'", "x": ' + nested + b"}",
                    headers={"Content-Type": "application/json"},
                )
                assert_error(r, 400, "invalid_input")


def test_invalid_inputs_are_422(agent: Agent, client: httpx.Client) -> None:
    assert agent.verify(client).status_code == 200  # so that digest checks are reached
    digest32 = base64.b64encode(bytes(32)).decode()

    def digest_of(n: int) -> dict[str, Any]:
        return {"purpose": "seal", "title": "t", "digest": base64.b64encode(bytes(n)).decode()}

    cases: list[tuple[str, dict[str, Any]]] = [
        ("/v1/sign", sign_body() | {"data": "not base64!!"}),
        ("/v1/sign", sign_body() | {"data": "QUJD\n"}),
        ("/v1/sign", sign_body() | {"data": "QQ"}),  # padding missing
        ("/v1/sign", sign_body() | {"data": "QUJD="}),  # excess padding
        ("/v1/sign", sign_body() | {"data": "QR=="}),  # non-zero trailing bits
        ("/v1/sign", {"purpose": "seal", "title": "t", "digest": "%%%%"}),
        # SM2 needs a 32-byte digest: anything else is refused.
        *[("/v1/sign", digest_of(n)) for n in (0, 20, 31, 33, 64)],
        ("/v1/sign", sign_body(purpose="launch_missiles")),
        ("/v1/sign", sign_body(purpose="SEAL")),
        ("/v1/sign", sign_body(admin=True)),
        ("/v1/sign", sign_body(digest=digest32)),  # both data and digest
        ("/v1/sign", {"purpose": "seal", "title": "t"}),  # neither
        ("/v1/sign", sign_body(title="")),
        ("/v1/sign", sign_body(signature_format="pem")),
        ("/v1/pin/verify", {"pin": WRONG_PIN, "admin": True}),
        ("/v1/pin/verify", {"pin": 31415926}),
        ("/v1/pin/verify", {"pin": WRONG_PIN, "confirm_final_try": "maybe"}),
        ("/v1/pin/verify", {}),
        ("/v1/pin/change", {"old_pin": CARD_PIN}),
        ("/v1/pair", {"client_name": "x", "origin": ORIGIN}),
        ("/v1/pair/claim", {"request_id": "x", "token": "y"}),
    ]
    tries = agent.pin_tries_left()
    signed = agent.signatures_made()
    for path, body in cases:
        r = client.post(path, json=body)
        error = assert_error(r, 422, "invalid_input")
        assert WRONG_PIN not in r.text
        assert set(error) <= {"code", "message", "details"}
    for text in (b"[]", b'"pin"', b"null", b"{", b'{"pin": "31415926",}', b"\xff\xfe"):
        r = client.post(
            "/v1/pin/verify", content=text, headers={"Content-Type": "application/json"}
        )
        assert r.status_code in (400, 422), r.text
        assert_error(r, r.status_code, "invalid_input")
    assert agent.pin_tries_left() == tries
    # None of them reached the card's signing key (no PSO).
    assert agent.signatures_made() == signed


def test_errors_are_readable_by_the_listed_origin_and_keep_the_connection(
    agent: Agent, token: str
) -> None:
    """Agent and card errors answer like any response: the listed origin's CORS headers
    (or the page cannot read the error code), the keep-alive connection kept, and no
    traceback in the agent's log."""
    opened: list[object] = []
    with agent.client(ORIGIN, token) as c:
        for _ in range(3):
            for r in (
                c.post("/v1/sign", json=sign_body()),  # session_required (AgentError)
                c.get("/v1/pin", headers={"Authorization": "Bearer nope"}),  # unauthorized
                c.post("/v1/pin/verify", json={"pin": "x"}),  # pin_format (card layer)
                c.post("/v1/sign", json=sign_body() | {"data": "QUJD="}),  # invalid_input
            ):
                assert r.status_code in (401, 422), r.text
                assert r.headers["access-control-allow-origin"] == ORIGIN
                assert "Origin" in r.headers["vary"]
                assert r.headers["cache-control"] == "no-store"
                stream = r.extensions["network_stream"]
                if stream not in opened:
                    opened.append(stream)
    assert len(opened) == 1, "the agent closed the connection after an error"
    log = agent.log_path.read_text()
    assert "Traceback" not in log
    assert "Exception in ASGI application" not in log


# --- tokens -----------------------------------------------------------------------------

CARD_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/v1/card", None),
    ("GET", "/v1/card/certificates", None),
    ("GET", "/v1/pin", None),
    ("POST", "/v1/pin/verify", {"pin": WRONG_PIN}),
    ("POST", "/v1/pin/change", {"old_pin": WRONG_PIN, "new_pin": "27182818"}),
    ("POST", "/v1/sign", sign_body()),
    ("POST", "/v1/session/end", None),
]


def call(
    c: httpx.Client, method: str, path: str, body: dict[str, Any] | None, **kw: Any
) -> httpx.Response:
    if method == "POST":
        return c.post(path, json=body if body is not None else {}, **kw)
    return c.get(path, **kw)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer",
        "Bearer not-a-token",
        "Basic dXNlcjpwYXNz",
        "Bearer " + "A" * 5000,
        "bearer\tx",
    ],
)
def test_card_endpoints_need_a_valid_token(agent: Agent, authorization: str | None) -> None:
    agent.pair()  # a real client exists; these requests just are not it
    headers = {"Authorization": authorization} if authorization is not None else {}
    with agent.untouched(), agent.client(ORIGIN) as c:
        for method, path, body in CARD_ENDPOINTS:
            assert_error(call(c, method, path, body, headers=headers), 401, "unauthorized")


def test_token_is_bound_to_its_origin(agent: Agent) -> None:
    mine = agent.pair(ORIGIN, "mine")
    theirs = agent.pair(OTHER_ORIGIN, "theirs")
    with agent.client(OTHER_ORIGIN, theirs) as c:
        assert c.get("/v1/pin").status_code == 200
    with agent.untouched():
        for origin, token in ((ORIGIN, theirs), (OTHER_ORIGIN, mine), (None, mine), (None, theirs)):
            with agent.client(origin, token) as c:
                for method, path, body in CARD_ENDPOINTS:
                    assert_error(call(c, method, path, body), 401, "unauthorized")


def test_revoked_token_is_refused_without_restart(agent: Agent) -> None:
    token = agent.pair(ORIGIN, "to-revoke")
    keep = agent.pair(ORIGIN, "to-keep")
    with agent.client(ORIGIN, token) as c, agent.client(ORIGIN, keep) as k:
        assert c.get("/v1/pin").status_code == 200
        from agent.pairing import PairingStore

        assert PairingStore(agent.pairing_path).revoke(agent.client_id("to-revoke"))
        for method, path, body in CARD_ENDPOINTS:
            assert_error(call(c, method, path, body), 401, "unauthorized")
        assert k.get("/v1/pin").status_code == 200


def test_local_tool_without_origin_still_needs_a_token(agent: Agent) -> None:
    with agent.client(origin=None) as c:
        for method, path, body in CARD_ENDPOINTS:
            assert_error(call(c, method, path, body), 401, "unauthorized")
    local = agent.pair(origin=None, name="local tool")
    with agent.client(origin=None, token=local) as c:
        r = c.get("/v1/pin")
        assert r.status_code == 200
        assert set(r.json()) == {"tries_left", "blocked", "verified"}
    # ...and a local tool's token is no good to a page.
    with agent.client(ORIGIN, local) as c:
        assert_error(c.get("/v1/pin"), 401, "unauthorized")


def test_claim_returns_the_token_once(agent: Agent) -> None:
    req = agent.request_pairing(ORIGIN, "once")
    assert len(req["code"].replace("-", "")) == 8
    # Another origin cannot claim (or learn about) it.
    r = agent.claim(req["request_id"], OTHER_ORIGIN)
    assert_error(r, 409, "pairing_error")
    assert agent.claim(req["request_id"], ORIGIN).status_code == 202
    from agent.pairing import PairingStore

    PairingStore(agent.pairing_path).approve(req["code"])
    first = agent.claim(req["request_id"], ORIGIN)
    assert first.status_code == 200
    token = first.json()["token"]
    again = agent.claim(req["request_id"], ORIGIN)
    assert_error(again, 409, "pairing_error")
    assert "token" not in again.text
    assert token not in again.text
    with agent.client(ORIGIN, token) as c:
        assert c.get("/v1/pin").status_code == 200


def test_unknown_claim_and_pairing_from_unlisted_origin(agent: Agent) -> None:
    assert_error(agent.claim("no-such-request", ORIGIN), 409, "pairing_error")
    with agent.client(UNLISTED_ORIGIN) as c:
        assert_error(c.post("/v1/pair", json={"client_name": "x"}), 403, "origin_forbidden")


def test_pairing_approved_with_the_real_cli(agent: Agent) -> None:
    token = agent.pair(ORIGIN, "cli-approved", use_cli=True)
    with agent.client(ORIGIN, token) as c:
        r = c.get("/v1/card")
    assert r.status_code == 200
    assert r.json()["card_number"]


def test_no_traceback_in_any_response(agent: Agent, client: httpx.Client) -> None:
    """Last in the module: every answer this module's agent gave, refusals included."""
    for content in (b"\xff\xfe garbage", b'{"pin": "\\ud800\\udfff"}', b'{"title": 1e999999}'):
        client.post("/v1/sign", content=content, headers={"Content-Type": "application/json"})
        client.post("/v1/pin/verify", content=content, headers={"Content-Type": "application/json"})
    client.get("/v1/card/certificates/../../etc/passwd")
    client.request("DELETE", "/v1/pin")
    client.request("PUT", "/v1/sign", json={})
    client.get("/v1/openapi.json")
    assert len(agent.bodies) > 100
    for body in agent.bodies:
        assert_no_traceback(body)
    log = agent.log_path.read_text()
    assert "Traceback" not in log

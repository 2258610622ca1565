"""Who may open the official-protocol socket: Host and Origin checked on the upgrade,
before the greeting; the endpoint is off unless configured."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from websockets.exceptions import InvalidStatus

from agent.compat.server import CompatServer, OriginPolicy, is_singlewindow_origin
from agent.config import CompatConfig, Config
from agent.runtime import build_runtime

from .conftest import StartAgent
from .harness import PRACTICE_ORIGIN, SW_ORIGIN, CompatAgent, CompatClient, raw_status, raw_upgrade


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://singlewindow.cn", True),
        ("https://www.singlewindow.cn", True),
        ("https://app.singlewindow.cn", True),
        ("https://a-b.c1.singlewindow.cn", True),
        ("http://www.singlewindow.cn", False),  # https only
        ("wss://www.singlewindow.cn", False),
        ("https://www.singlewindow.cn:443", False),  # browsers omit the default port
        ("https://www.singlewindow.cn:8443", False),
        ("https://evilsinglewindow.cn", False),
        ("https://singlewindow.cn.evil.example", False),
        ("https://www.singlewindow.cn.", False),
        ("https://.singlewindow.cn", False),
        ("https://a..singlewindow.cn", False),
        ("https://-a.singlewindow.cn", False),
        ("https://user@www.singlewindow.cn", False),
        ("https://WWW.SINGLEWINDOW.CN", False),
        ("https://www.singlewindow.cn/", False),
        ("https://evil.example/.singlewindow.cn", False),
        ("https://www.singlewindow.com", False),
        ("null", False),
        ("", False),
    ],
)
def test_singlewindow_origins(origin: str, allowed: bool) -> None:
    assert is_singlewindow_origin(origin) is allowed


def test_origin_policy() -> None:
    policy = OriginPolicy(frozenset({PRACTICE_ORIGIN}), singlewindow=True)
    assert policy.allows(SW_ORIGIN)
    assert policy.allows(PRACTICE_ORIGIN)
    assert not policy.allows(None)
    assert not policy.allows("http://127.0.0.1:8081")
    assert not policy.allows("http://localhost:8080")
    assert not OriginPolicy(frozenset(), singlewindow=False).allows(SW_ORIGIN)


def test_config_defaults_and_validation() -> None:
    compat = Config().compat
    assert (compat.enabled, compat.host, compat.port, compat.allow_singlewindow) == (
        False,
        "127.0.0.1",
        61232,
        True,
    )
    assert compat.allowed_origins == ()
    for bad in ({"host": "0.0.0.0"}, {"host": "192.168.1.5"}, {"port": 70000}):
        with pytest.raises(ValidationError):
            CompatConfig.model_validate(bad)
    for origins in (["*"], ["null"], ["https://*.singlewindow.cn"], ["https://a.cn/path"]):
        with pytest.raises(ValidationError):
            CompatConfig.model_validate({"allowed_origins": origins})
    assert CompatConfig.model_validate({"host": "::1"}).host == "::1"


def test_off_by_default(tmp_path: Path) -> None:
    config = Config.model_validate(
        {"paths": {"state_dir": str(tmp_path)}, "card": {"sim_state_file": ""}}
    )
    runtime = build_runtime(config)
    assert not any(isinstance(c, CompatServer) for c in runtime.components)
    runtime.audit.close()


@pytest.fixture
def agent(shared_agent: CompatAgent) -> CompatAgent:
    """Nothing here changes the card: one agent for the module."""
    return shared_agent


def _headers(
    agent: CompatAgent, origin: str | None, host: str | None = None
) -> list[tuple[str, str]]:
    headers = [("Host", host if host is not None else f"127.0.0.1:{agent.port}")]
    if origin is not None:
        headers.append(("Origin", origin))
    return headers


def test_allowed_origins_get_the_greeting_first(agent: CompatAgent) -> None:
    for origin in (SW_ORIGIN, "https://www.singlewindow.cn", PRACTICE_ORIGIN):
        response = raw_upgrade(agent.port, _headers(agent, origin))
        assert raw_status(response) == 101
        assert "握手成功".encode() in response
    for host in (f"localhost:{agent.port}",):
        assert raw_status(raw_upgrade(agent.port, _headers(agent, SW_ORIGIN, host))) == 101


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "https://evil.example",
        "http://www.singlewindow.cn",
        "https://evilsinglewindow.cn",
        "http://127.0.0.1:8081",
        "chrome-extension://abcdefghijklmnopabcdefghijklmnop",
    ],
)
def test_foreign_origins_are_refused_before_the_greeting(
    agent: CompatAgent, origin: str | None
) -> None:
    response = raw_upgrade(agent.port, _headers(agent, origin))
    assert raw_status(response) == 403
    assert "握手成功".encode() not in response


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",  # DNS rebinding: the page's own name
        "evil.example:{port}",
        "127.0.0.1",  # without the port
        "127.0.0.1:17321",  # another port
        "wss.singlewindow.cn:61231",  # the official TLS name: not this endpoint
        "",
    ],
)
def test_foreign_hosts_are_refused_before_the_greeting(agent: CompatAgent, host: str) -> None:
    response = raw_upgrade(agent.port, _headers(agent, SW_ORIGIN, host.format(port=agent.port)))
    assert raw_status(response) == 403
    assert "握手成功".encode() not in response


def test_repeated_host_or_origin_is_refused(agent: CompatAgent) -> None:
    twice_host = [*_headers(agent, SW_ORIGIN), ("Host", f"127.0.0.1:{agent.port}")]
    assert raw_status(raw_upgrade(agent.port, twice_host)) in (400, 403)  # h11 or the guard
    twice_origin = [*_headers(agent, SW_ORIGIN), ("Origin", SW_ORIGIN)]
    assert raw_status(raw_upgrade(agent.port, twice_origin)) in (400, 403)


def test_websocket_clients_see_403(agent: CompatAgent) -> None:
    with pytest.raises(InvalidStatus) as exc:
        CompatClient(agent.url, "https://evil.example")
    assert exc.value.response.status_code == 403


def test_singlewindow_can_be_turned_off(start_agent: StartAgent) -> None:
    agent = start_agent(compat={"allow_singlewindow": False})
    assert raw_status(raw_upgrade(agent.port, _headers(agent, SW_ORIGIN))) == 403
    assert raw_status(raw_upgrade(agent.port, _headers(agent, PRACTICE_ORIGIN))) == 101


def test_plain_http_gets_nothing(agent: CompatAgent) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", agent.port), timeout=5) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{agent.port}\r\n\r\n".encode())
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 404")

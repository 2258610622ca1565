"""Text that is not text (lone surrogates, valid JSON) on the official protocol
(reliability findings 4 and 5).

The adversarial run signed with the card and then failed to audit (UnicodeEncodeError),
leaving no record; and a lone surrogate in `_method` ended in a traceback and a dropped
connection. Now arguments are checked before the card is touched (Err:Base50000), and a
request that cannot be answered (its `_method` is not text) closes the
connection with 1007, the WebSocket code for invalid payload data, and one log line.
"""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import ConnectionClosed

from .harness import CARD_PIN, CompatAgent, error_of, ok_data


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("cus-sec_SpcSignData", {"inData": "doc", "passwd": CARD_PIN, "title": "t\ud800"}),
        ("cus-sec_SpcSignDataAsPEM", {"inData": "doc\udc00", "passwd": CARD_PIN}),
        ("cus-sec_SpcSignRandom", {"random": "r", "passwd": CARD_PIN, "purpose": "\ud800"}),
        ("cus-sec_SpcVerifyPIN", {"passwd": "8888\ud8008"}),
    ],
)
def test_invalid_text_in_arguments_is_refused_before_the_card(
    agent: CompatAgent, method: str, args: dict[str, str]
) -> None:
    signed = agent.signatures_made()
    tries = agent.pin_tries_left()
    records = len(agent.audit_records())
    with agent.client() as page:
        # Escaped as \uD800 (valid JSON): a text frame cannot carry a lone surrogate raw.
        page.send(json.dumps({"_method": method, "_id": 7, "args": args}, ensure_ascii=True))
        frame = page.recv()
        assert frame["_method"] == method
        assert frame["_id"] == 7
        _message, code = error_of(frame["_args"])
        assert code == "Err:Base50000"
        assert agent.signatures_made() == signed
        assert agent.pin_tries_left() == tries
        assert len(agent.audit_records()) == records
        # The connection still serves.
        assert ok_data(page.call("cus-sec_SpcGetCardID")) == [agent.card_data.card_number]


@pytest.mark.parametrize(
    "frame",
    [
        '{"_method": "cus-sec_SpcGetCardID\\ud800", "_id": 1}',
        '{"_method": "\\udfffcus-sec_SpcSignData", "_id": 2, "args": {"inData": "x"}}',
    ],
)
def test_a_request_that_cannot_be_answered_closes_with_1007(agent: CompatAgent, frame: str) -> None:
    page = agent.client()
    page.send(frame)
    with pytest.raises(ConnectionClosed) as closed:
        page.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007
    log = agent.log_path.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in log
    assert log.count("compat: closing a page that sent invalid text") == 1
    with agent.client() as next_page:
        assert ok_data(next_page.call("cus-sec_SpcGetCardID"))

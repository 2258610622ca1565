"""Large payloads: BLOCKTXT chunks with `_nextBlock` flow control, and the bounds."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from agent.compat.protocol import HEADER_CHARS, encode_blocks

from .harness import CARD_PIN, CompatAgent, CompatClient, error_of, ok_data, openssl_verifies

MIB = 1024 * 1024


@pytest.fixture
def agent(shared_agent: CompatAgent) -> CompatAgent:
    return shared_agent


def test_one_mib_signed_through_chunks(agent: CompatAgent, tmp_path: Path) -> None:
    # XML-like text, ASCII and Chinese: exactly 1 MiB of UTF-8, the data limit.
    unit = "<ceb:Item>小微企业综合保险 policy line</ceb:Item>\n"
    text = unit * (MIB // len(unit.encode()))
    text += "x" * (MIB - len(text.encode()))
    assert len(text.encode()) == MIB
    with agent.client() as page:
        acks, frame = page.call_chunked(
            "cus-sec_SpcSignDataAsPEM", {"inData": text, "passwd": CARD_PIN}
        )
    # The agent asked for every chunk in order, then said it was finished.
    items = [ack["_args"]["Data"][0] for ack in acks]
    assert len(items) > 8
    assert [item["next"] for item in items[:-1]] == list(range(1, len(items)))
    assert [item["finish"] for item in items] == [False] * (len(items) - 1) + [True]
    assert all(ack["_args"]["Result"] for ack in acks)
    assert frame["_method"] == "cus-sec_SpcSignDataAsPEM"
    signature, _ = ok_data(frame["_args"])
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, text.encode(), raw, tmp_path)


def test_one_mib_unchunked_as_the_library_sends_most_calls(
    agent: CompatAgent, tmp_path: Path
) -> None:
    text = "a" * MIB
    with agent.client() as page:
        signature, _ = ok_data(
            page.call("cus-sec_SpcSignDataAsPEM", {"inData": text, "passwd": CARD_PIN})
        )
    raw = base64.b64decode(signature)
    assert openssl_verifies(agent.card_data.sign_cert, text.encode(), raw, tmp_path)


def test_a_corrupt_chunk_is_asked_for_again(agent: CompatAgent) -> None:
    message = json.dumps(
        {"_method": "cus-sec_SpcSHA1DigestAsPEM", "_id": 77, "args": {"szInfo": "z" * 300_000}}
    )
    frames = encode_blocks(message, str(uuid.uuid4()))
    assert len(frames) == 3
    with agent.client() as page:
        page.send(frames[0])
        assert page.recv()["_args"]["Data"][0]["next"] == 1
        page.send(frames[1][:HEADER_CHARS] + "y" + frames[1][HEADER_CHARS + 1 :])
        ack = page.recv()
        assert ack["_method"] == "_nextBlock"
        assert ack["_args"]["Result"] is False
        assert ack["_args"]["Data"][0]["next"] == 1
        assert ack["_args"]["Data"][0]["finish"] is False
        page.send(frames[1])
        assert page.recv()["_args"]["Data"][0]["next"] == 2
        page.send(frames[2])
        assert page.recv()["_args"]["Data"][0]["finish"] is True
        frame = page.recv()
    assert (frame["_id"], frame["_method"]) == (77, "cus-sec_SpcSHA1DigestAsPEM")
    assert ok_data(frame["_args"])


def test_a_group_over_the_bound_is_refused_and_answered(agent: CompatAgent) -> None:
    limit = agent.runtime.config.security.max_body_bytes
    message = json.dumps(
        {"_method": "cus-sec_SpcSignDataAsPEM", "_id": 8, "args": {"inData": "q" * (limit + 10)}}
    )
    frames = encode_blocks(message, str(uuid.uuid4()))
    with agent.client() as page:
        page.send(frames[0])
        ack = page.recv()
        assert ack["_args"]["Result"] is False
        assert ack["_args"]["Data"][0]["finish"] is True  # the page frees its copy
        # and the page's callback for the method gets an answer too
        frame = page.recv()
        assert (frame["_id"], frame["_method"]) == (8, "cus-sec_SpcSignDataAsPEM")
        _, code = error_of(frame["_args"])
        assert code == "Err:Base50000"
        assert ok_data(page.call("cus-sec_SpcGetCardID"))  # the connection still works


def _exchange(page: CompatClient, frame: str) -> None:
    # The agent may close while the frame is still being sent: either call raises.
    page.send(frame)
    page.recv()


def test_an_oversized_frame_closes_only_that_connection(agent: CompatAgent) -> None:
    limit = agent.runtime.config.security.max_body_bytes
    frame = '{"_method":"cus-sec_SpcGetCardID","_id":1,"x":"' + "w" * limit + '"}'
    with agent.client() as page, pytest.raises(ConnectionClosed) as exc:
        _exchange(page, frame)
    # The server answers 1009 (message too big) and closes. The client may still be
    # writing the rest of its frame then, and see the reset before the close frame.
    if exc.value.rcvd is not None:
        assert exc.value.rcvd.code == 1009
    with agent.client() as page:
        assert ok_data(page.call("cus-sec_SpcGetCardID"))

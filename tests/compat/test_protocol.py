"""The wire format on its own: replies, requests, check codes, BLOCKTXT frames."""

from __future__ import annotations

import json

import pytest

from agent.compat.protocol import (
    HEADER_CHARS,
    BadRequest,
    BlockAssembler,
    BlockFault,
    BlockHeader,
    check_code,
    encode_block,
    encode_blocks,
    function_name,
    greeting,
    next_block,
    parse_block,
    parse_request,
    reply,
    split_like_js,
    utf16_len,
)

GUID = "0123abcd-4567-89ef-0123-456789abcdef"
BAD_ARGS = "Err:Base50000"


def assembler(max_units: int = 4 * 1024 * 1024) -> BlockAssembler:
    return BlockAssembler(max_units=max_units, invalid_code=BAD_ARGS)


def test_greeting_is_the_official_shape() -> None:
    assert greeting() == (
        '{"_id":0,"_method":"open","_status":"00",'
        '"_args":{"Result":true,"Data":["握手成功"],"Error":[]}}'
    )


def test_reply_shape_and_key_order() -> None:
    text = reply(7, "cus-sec_SpcGetCardID", result=False, error=("请插入IC卡或者Key", "Err:X"))
    assert list(json.loads(text)) == ["_id", "_method", "_status", "_args"]
    assert json.loads(text) == {
        "_id": 7,
        "_method": "cus-sec_SpcGetCardID",
        "_status": "00",  # "00" even when Result is false, as the real client
        "_args": {"Result": False, "Data": [], "Error": ["请插入IC卡或者Key", "Err:X"]},
    }
    assert "\\u" not in text  # Chinese as UTF-8, not escaped


def test_reply_escapes_a_lone_surrogate_it_echoes() -> None:
    # Found by tests/fuzz/fuzz_compat.py: `"_id":"t\\ud800"` is valid JSON, parses to a
    # lone surrogate, and the reply echoing it could not be sent as a text frame (UTF-8).
    text = reply("t\ud800", "cus-sec_SpcGetCardID\udfff", result=True, data=["中文"])
    text.encode("utf-8")
    assert json.loads(text)["_id"] == "t\ud800"
    assert json.loads(text)["_method"] == "cus-sec_SpcGetCardID\udfff"
    assert json.loads(text)["_args"]["Data"] == ["中文"]


def test_parse_request() -> None:
    req = parse_request('{"_method":"security_SpcGetCardID","_id":"1"}')
    assert (req.id, req.method, req.args) == ("1", "security_SpcGetCardID", {})
    req = parse_request('{"_method":"cus-sec_SpcVerifyPIN","_id":3,"args":{"passwd":"x"}}')
    assert req.args == {"passwd": "x"}
    for bad in ("[1]", "not json", '{"_id":1}', '{"_method":5}', '{"_method":""}'):
        with pytest.raises(BadRequest) as exc:
            parse_request(bad)
        assert exc.value.method is None
    with pytest.raises(BadRequest) as exc:
        parse_request('{"_method":"cus-sec_SpcSignData","_id":4,"args":"x"}')
    assert (exc.value.method, exc.value.req_id) == ("cus-sec_SpcSignData", 4)


def test_parse_request_refuses_nesting_past_the_recursion_limit() -> None:
    # Found with tests/fuzz/fuzz_compat.py (its property: any text -> BadRequest or a
    # Request): json.loads raised RecursionError. The endpoint checks nesting first, so
    # only a direct caller could meet it.
    text = '{"_method":"cus-sec_SpcGetCardID","_id":1,"args":' + "[" * 1200 + "]" * 1200 + "}"
    with pytest.raises(BadRequest):
        parse_request(text)


def test_function_names_for_both_prefixes() -> None:
    assert function_name("cus-sec_SpcSignData") == "SpcSignData"
    assert function_name("security_SpcSignData") == "SpcSignData"
    assert function_name("ra_Is903Reader") is None
    assert function_name("sec_SpcSHA1DigestAsPEM") is None


def test_check_code_is_byte_swapped_crc16_modbus() -> None:
    # CRC-16/MODBUS("123456789") = 0x4B37; the page library prints hi<<8|lo with the
    # CRC's low byte as "hi".
    assert check_code("123456789") == "374B"
    assert check_code("") == "FFFF"
    # Only the low byte of each UTF-16 unit counts: "中" (U+4E2D) weighs like "-" (0x2D).
    assert check_code("中") == check_code("-")
    assert check_code("A😀") == check_code("A" + chr(0x3D) + chr(0x00))  # D83D DE00


def test_lengths_are_utf16_units() -> None:
    assert utf16_len("abc") == 3
    assert utf16_len("中文") == 2
    assert utf16_len("😀") == 2


def test_header_layout() -> None:
    header = BlockHeader("98AC", "0F1E", 14571, 120, 3, GUID, 2)
    frame = encode_block(header, "chunk")
    assert len(frame) == HEADER_CHARS + 5
    assert frame[:8] == "BLOCKTXT"
    assert frame[8:12] == "98AC"
    assert frame[12:16] == "0F1E"
    assert frame[16:32] == "0000000000014571"
    assert frame[32:40] == "00000120"
    assert frame[40:44] == "0003"
    assert frame[44:80] == GUID
    assert frame[80:84] == "0002"
    assert frame[84:128] == "0" * 44
    assert parse_block(frame) == (header, "chunk")


def test_split_like_js_weights() -> None:
    # ASCII weighs 1, what escape() turns into %uXXXX weighs 3; cut past budget - 3.
    assert split_like_js("a" * 10, budget=8) == ["aaaaaa", "aaaa"]
    assert split_like_js("中" * 4, budget=8) == ["中" * 2, "中" * 2]
    assert split_like_js("é" * 6, budget=8) == ["é" * 6]  # %E9: no "%u", weighs 1
    assert split_like_js("", budget=8) == [""]


def test_round_trip_through_the_assembler() -> None:
    message = json.dumps(
        {"_method": "cus-sec_SpcSignData", "_id": 9, "args": {"inData": "中" * 500}}
    )
    frames = encode_blocks(message, GUID, budget=300)
    assert len(frames) > 3
    asm = assembler()
    for number, frame in enumerate(frames[:-1]):
        outcome = asm.feed(frame)
        assert outcome.message is None
        assert (outcome.ack.ok, outcome.ack.finish, outcome.ack.next) == (True, False, number + 1)
    outcome = asm.feed(frames[-1])
    assert outcome.message == message
    assert (outcome.ack.ok, outcome.ack.finish) == (True, True)
    assert not asm.pending
    item = json.loads(next_block(outcome.ack))
    assert item["_method"] == "_nextBlock"
    assert item["_args"]["Data"][0] == {
        "id": len(frames),
        "guid": GUID,
        "next": len(frames),
        "finish": True,
    }


def test_a_single_chunk_finishes_at_once() -> None:
    message = '{"_method":"cus-sec_SpcGetCardID","_id":1,"args":{}}'
    (frame,) = encode_blocks(message, GUID)
    outcome = assembler().feed(frame)
    assert outcome.message == message
    assert outcome.ack.finish


def test_a_corrupt_chunk_is_asked_again_then_abandoned() -> None:
    message = '{"_method":"cus-sec_SpcSignData","_id":5,"args":{"inData":"' + "x" * 900 + '"}}'
    frames = encode_blocks(message, GUID, budget=300)
    asm = assembler()
    assert asm.feed(frames[0]).ack.ok
    corrupt = frames[1][:-1] + ("y" if frames[1][-1] != "y" else "z")
    outcome = asm.feed(corrupt)
    assert (outcome.ack.ok, outcome.ack.finish, outcome.ack.next) == (False, False, 1)
    assert outcome.ack.error[1] == BAD_ARGS
    assert asm.feed(frames[1]).ack.ok  # the resent chunk is taken
    for _ in range(3):
        assert not asm.feed(corrupt).ack.finish
    outcome = asm.feed(corrupt)
    assert (outcome.ack.ok, outcome.ack.finish) == (False, True)
    # The request is known from its first chunk: the page's callback can be answered.
    assert outcome.failed is not None
    assert (outcome.failed.method, outcome.failed.id) == ("cus-sec_SpcSignData", 5)
    assert not asm.pending


def test_chunks_out_of_order_ask_for_the_expected_one() -> None:
    frames = encode_blocks('{"_method":"m","_id":1,"args":{"d":"' + "x" * 900 + '"}}', GUID, 300)
    asm = assembler()
    asm.feed(frames[0])
    outcome = asm.feed(frames[2])
    assert (outcome.ack.ok, outcome.ack.next, outcome.ack.finish) == (False, 1, False)


def test_groups_over_the_bound_are_refused_from_the_header() -> None:
    message = '{"_method":"cus-sec_SpcSignData","_id":2,"args":{"inData":"' + "x" * 5000 + '"}}'
    frames = encode_blocks(message, GUID, budget=1000)
    outcome = assembler(max_units=4000).feed(frames[0])
    assert (outcome.ack.ok, outcome.ack.finish) == (False, True)
    assert "数据过大" in outcome.ack.error[0]
    assert outcome.failed is not None
    assert outcome.failed.id == 2


def test_a_header_lying_about_its_size_is_refused() -> None:
    chunk = "x" * 100
    header = BlockHeader(check_code(chunk), check_code(chunk), 10**9, 100, 1, GUID, 0)
    outcome = assembler().feed(encode_block(header, chunk))
    assert (outcome.ack.ok, outcome.ack.finish) == (False, True)
    header = BlockHeader(check_code(chunk), check_code(chunk), 100, 100, 1, GUID, 0)
    lying = encode_block(header, chunk + "extra")  # more than the header says
    assert not assembler().feed(lying).ack.ok


def test_a_new_group_replaces_an_unfinished_one() -> None:
    first = encode_blocks('{"_method":"m","_id":1,"args":{"d":"' + "x" * 900 + '"}}', GUID, 300)
    other_guid = GUID.replace("0123abcd", "ffffffff")
    second = encode_blocks('{"_method":"m","_id":2}', other_guid)
    asm = assembler()
    asm.feed(first[0])
    assert asm.feed(second[0]).message == '{"_method":"m","_id":2}'
    # The old group is gone: its next chunk is unknown.
    outcome = asm.feed(first[1])
    assert (outcome.ack.ok, outcome.ack.finish) == (False, True)


def test_unusable_headers() -> None:
    with pytest.raises(BlockFault):
        assembler().feed("BLOCKTXT short")
    with pytest.raises(BlockFault):
        assembler().feed("BLOCKTXT" + "0" * 120 + "body")  # no GUID
    bad_number = encode_block(BlockHeader("0000", "0000", 4, 4, 1, GUID, 0), "body")
    bad_number = bad_number[:16] + "00000000000000x4" + bad_number[32:]
    outcome = assembler().feed(bad_number)
    assert (outcome.ack.ok, outcome.ack.finish, outcome.ack.guid) == (False, True, GUID)

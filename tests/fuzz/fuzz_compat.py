"""Fuzz the official protocol's wire format (agent/compat/protocol.py).

Modes (first input byte):
- frames: the rest is WebSocket text frames separated by 0xFF (a byte UTF-8 text never
  contains), each decoded as UTF-8 the way a browser sends it, fed through what the
  endpoint does with a frame (agent/compat/server.py `_converse`): BLOCKTXT frames into
  one `BlockAssembler`, other frames and reassembled messages into `parse_request`.
  `parse_request` raises nothing but `BadRequest`, `feed` nothing but `BlockFault`,
  and every frame the endpoint would send back (`next_block`, `reply` echoing `_id` and
  `_method`) is UTF-8 text, as a WebSocket text frame must be, that parses back to
  what was put in, with the keys in the official order.
- chunking: a message, a group GUID and a chunk budget from the input: the frames
  `encode_blocks` makes reassemble to exactly the message, with a `_nextBlock` ack
  asking for each next chunk; then the same frames, damaged (dropped, repeated,
  swapped, a character changed), must yield a refusal, a resend request or the
  message, never anything else, and never more than the assembler's bound.

    python tests/fuzz/fuzz_compat.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz.harness import OURS, main

with atheris.instrument_imports(include=list(OURS)):
    from agent.compat.protocol import (
        BLOCK_MAGIC,
        NEXT_BLOCK_METHOD,
        BadRequest,
        BlockAck,
        BlockAssembler,
        BlockFault,
        BlockOutcome,
        encode_blocks,
        next_block,
        parse_request,
        reply,
        utf16_len,
    )
    from agent.guards import json_depth_exceeds

ERR = "Err:Base50000"
MAX_UNITS = 4096  # small, so the fuzzer reaches the bound
FRAME_SEPARATOR = b"\xff"
REPLY_KEYS = ["_id", "_method", "_status", "_args"]
ARGS_KEYS = ["Result", "Data", "Error"]


def sent(frame: str) -> dict[str, Any]:
    """What the endpoint would put in a WebSocket text frame: checked like the peer would."""
    frame.encode("utf-8")  # a text frame is UTF-8: a lone surrogate cannot be sent
    assert frame.startswith("{"), frame[:40]  # the page library alerts on anything else
    obj = json.loads(frame)
    assert list(obj) == REPLY_KEYS, list(obj)
    assert obj["_status"] == "00"
    assert list(obj["_args"]) == ARGS_KEYS
    return obj  # type: ignore[no-any-return]


def check_reply(frame: str, req_id: object, method: str, *, result: bool) -> None:
    obj = sent(frame)
    assert obj["_id"] == req_id
    assert obj["_method"] == method
    assert obj["_args"]["Result"] is result


def check_ack(frame: str, ack: BlockAck) -> None:
    obj = sent(frame)
    assert obj["_method"] == NEXT_BLOCK_METHOD
    item = obj["_args"]["Data"][0]
    assert item == {"id": ack.next, "guid": ack.guid, "next": ack.next, "finish": ack.finish}
    assert obj["_args"]["Result"] is ack.ok
    assert bool(obj["_args"]["Error"]) is not ack.ok


def answer(text: str) -> None:
    """`_answer` without the card: requests get a reply echoing `_id` and `_method`."""
    if not text.startswith("{") or json_depth_exceeds(text.encode("utf-8", "surrogatepass")):
        return
    try:
        request = parse_request(text)
    except BadRequest as bad:
        if bad.method is not None:
            frame = reply(bad.req_id, bad.method, result=False, error=(str(bad), ERR))
            check_reply(frame, bad.req_id, bad.method, result=False)
        return
    assert isinstance(request.method, str)
    assert request.method
    assert isinstance(request.args, dict)
    frame = reply(request.id, request.method, result=True, data=["ok"])
    check_reply(frame, request.id, request.method, result=True)


def check_outcome(assembler: BlockAssembler, outcome: BlockOutcome) -> None:
    check_ack(next_block(outcome.ack), outcome.ack)
    failed = outcome.failed
    if failed is not None and outcome.ack.error:
        frame = reply(failed.id, failed.method, result=False, error=outcome.ack.error)
        check_reply(frame, failed.id, failed.method, result=False)
    if outcome.message is not None:
        assert outcome.ack.ok
        assert outcome.ack.finish
        assert utf16_len(outcome.message) <= assembler.max_units
    # The memory bound BlockAssembler promises is about its pending group, which it
    # does not expose: read it directly.
    group = assembler._group
    assert group is None or group.units <= group.header.total_units <= assembler.max_units


def check_frames(body: bytes) -> None:
    assembler = BlockAssembler(max_units=MAX_UNITS, invalid_code=ERR)
    for raw in body.split(FRAME_SEPARATOR):
        text = raw.decode("utf-8", "replace")
        # The property of parse_request alone: any text -> BadRequest or a Request.
        with contextlib.suppress(BadRequest):
            parse_request(text)
        if text.startswith(BLOCK_MAGIC):
            try:
                outcome = assembler.feed(text)
            except BlockFault:
                continue
            check_outcome(assembler, outcome)
            if outcome.message is None:
                continue
            text = outcome.message
        answer(text)


def check_chunking(body: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(body)
    budget = fdp.ConsumeIntInRange(4, 64)
    guid = fdp.ConsumeBytes(16).ljust(16, b"\x00").hex()
    guid = f"{guid[:8]}-{guid[8:12]}-{guid[12:16]}-{guid[16:20]}-{guid[20:]}"
    damage = [fdp.ConsumeIntInRange(0, 255) for _ in range(4)]
    message = fdp.ConsumeUnicode(fdp.remaining_bytes())  # lone surrogates included
    frames = encode_blocks(message, guid, budget)
    assembler = BlockAssembler(max_units=MAX_UNITS, invalid_code=ERR)
    outcomes = [assembler.feed(frame) for frame in frames]
    for outcome in outcomes:
        check_ack(next_block(outcome.ack), outcome.ack)
    units = utf16_len(message)
    if units == 0 or units > MAX_UNITS:
        assert outcomes[0].ack.finish
        assert not outcomes[0].ack.ok
        assert all(o.message is None for o in outcomes)
        return
    for number, outcome in enumerate(outcomes[:-1]):
        assert outcome.ack.ok, outcome.ack
        assert outcome.ack.next == number + 1
        assert not outcome.ack.finish
        assert outcome.message is None
    assert outcomes[-1].message == message
    assert not assembler.pending
    # The same frames, damaged: whatever comes out stays within the protocol.
    damaged = damage_frames(frames, damage)
    for frame in damaged:
        try:
            outcome = assembler.feed(frame)
        except BlockFault:
            continue
        check_outcome(assembler, outcome)


def damage_frames(frames: list[str], damage: list[int]) -> list[str]:
    frames = list(frames)
    kind, where, what, extra = damage
    index = where % len(frames)
    if kind % 4 == 0:
        del frames[index]
    elif kind % 4 == 1:
        frames.insert(index, frames[index])
    elif kind % 4 == 2:
        other = extra % len(frames)
        frames[index], frames[other] = frames[other], frames[index]
    else:
        frame = frames[index]
        pos = (what * 256 + extra) % max(1, len(frame))
        frames[index] = frame[:pos] + chr(0x20 + what % 0x5F) + frame[pos + 1 :]
    return frames


def test_one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2:
        check_chunking(data[1:])
    else:
        check_frames(data[1:])


if __name__ == "__main__":
    main("compat", test_one_input, defaults=("-max_len=8192",))

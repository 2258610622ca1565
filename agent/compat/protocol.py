"""The official E-Port client's wire format: greeting, replies, requests, BLOCKTXT chunks.

Pure functions and a small state machine, no I/O: `server.py` feeds text frames in and
sends what comes out. Every shape here was read from the published page library
("中国电子口岸数据中心 JavaScript Library v1.3.9 for 客户端控件 v1.5.12"); docs/compat.md
says what is confirmed and what is inferred.

Direction matters for chunking. The page library splits large requests into BLOCKTXT
frames and waits for a `_nextBlock` reply before each next chunk; that is the only
chunked direction it understands. Its `onmessage` alerts "数据格式非法" on any frame that
does not start with "{", so replies always travel as one JSON text frame.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agent.text import first_invalid_text, is_text

GREETING_TEXT = "握手成功"
METHOD_PREFIXES = ("cus-sec_", "security_")
NEXT_BLOCK_METHOD = "_nextBlock"

BLOCK_MAGIC = "BLOCKTXT"
HEADER_CHARS = 128
# splitStrData's budget: it cuts a chunk once its weighted size passes 120 KiB - 3.
JS_CHUNK_BUDGET = 120 * 1024
# What a JS chunk can be in UTF-16 units (each unit weighs at least 1): the budget.
MAX_CHUNK_UNITS = JS_CHUNK_BUDGET
# The page resends a refused chunk; after this many refusals of one group we give up.
MAX_BLOCK_RETRIES = 3

ErrorPair = tuple[str, str]  # (message for people, "Err:<code>")
JsonId = int | str | None

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_HEX4 = re.compile(r"[0-9A-Fa-f]{4}\Z")


# --- replies -------------------------------------------------------------------------


def reply(
    req_id: JsonId,
    method: str,
    *,
    result: bool,
    data: list[Any] | tuple[Any, ...] = (),
    error: ErrorPair | tuple[()] = (),
) -> str:
    """One reply frame. Key order and `_status` "00" as the real client sends them
    (it answers "00" even when `Result` is false)."""
    frame = {
        "_id": req_id,
        "_method": method,
        "_status": "00",
        "_args": {"Result": result, "Data": list(data), "Error": list(error)},
    }
    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (a request's "\ud800" escape, echoed in `_id` or `_method`)
        # cannot travel in a WebSocket text frame: send it escaped, as JSON allows.
        text = json.dumps(frame, ensure_ascii=True, separators=(",", ":"))
    return text


def greeting() -> str:
    """Sent on connect, before anything else; callers wait for it."""
    return reply(0, "open", result=True, data=[GREETING_TEXT])


def next_block(ack: BlockAck) -> str:
    """The `_nextBlock` frame the page library's callback reads: `Data[0]` holds
    guid / next / finish; `Result` false makes it resend chunk `next`."""
    item = {"id": ack.next, "guid": ack.guid, "next": ack.next, "finish": ack.finish}
    return reply(ack.received, NEXT_BLOCK_METHOD, result=ack.ok, data=[item], error=ack.error)


# --- requests --------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    id: JsonId
    method: str  # as sent, prefix included: replies echo it (pages route by it)
    args: dict[str, Any]


class BadRequest(Exception):
    """The frame cannot be served. `method` is set when the reply can still be routed
    to the page's callback (pages route replies by `_method`, not by `_id`)."""

    def __init__(self, message: str, *, method: str | None = None, req_id: JsonId = None):
        super().__init__(message)
        self.method = method
        self.req_id = req_id


class UnanswerableRequest(BadRequest):
    """The frame's `_method` is not text (a lone surrogate): pages route replies by
    `_method`, and no callback can be waiting for this one, so the connection is closed
    (1007, invalid payload data). An `_id` that is not text is echoed escaped."""


def parse_request(text: str) -> Request:
    """`{"_method": "...", "_id": n, "args": {...}}`; `args` may be absent.

    Every string in it must be text (`agent.text`): nothing that cannot be written as
    UTF-8 gets as far as a card operation, an audit record or a reply frame.
    """
    try:
        obj = json.loads(text)
    except ValueError:
        raise BadRequest("not JSON") from None
    except RecursionError:
        # The endpoint refuses deep nesting before parsing (json_depth_exceeds); this
        # keeps the parser's own promise for any other caller.
        raise BadRequest("JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise BadRequest("not a JSON object")
    method = obj.get("_method")
    raw_id = obj.get("_id")
    if isinstance(method, str) and not is_text(method):
        raise UnanswerableRequest("_method is not text")
    if not isinstance(method, str) or not method or len(method) > 128:
        raise BadRequest("no _method")
    # Pages send numbers, some tools strings; echo whatever came, if it is a scalar.
    req_id: JsonId = raw_id if isinstance(raw_id, int | str) else None
    args = obj.get("args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise BadRequest("args must be an object", method=method, req_id=req_id)
    where = first_invalid_text(args, "args")
    if where is not None:
        raise BadRequest(f"{where}不是有效的文本", method=method, req_id=req_id)
    return Request(req_id, method, args)


def function_name(method: str) -> str | None:
    """`cus-sec_SpcSignData` / `security_SpcSignData` -> `SpcSignData`; other modules
    (`ra_`, `pdf-sign_`, `base_`, ...) -> None."""
    for prefix in METHOD_PREFIXES:
        if method.startswith(prefix):
            return method[len(prefix) :]
    return None


# --- the page library's check code and lengths ----------------------------------------


def _crc16_table() -> tuple[int, ...]:
    # CRC-16/MODBUS (reflected polynomial 0xA001). The page library ships this table
    # split in two byte tables (low bytes as "Hi", high bytes as "Lo").
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC16 = _crc16_table()


def utf16_len(text: str) -> int:
    """`length` as JavaScript counts it: UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def check_code(text: str) -> str:
    """`DIGEST.CheckCode`: CRC-16/MODBUS over the low byte of each UTF-16 code unit,
    printed with its two bytes swapped (the library assembles hi<<8|lo where "hi"
    holds the CRC's low byte), 4 upper-case hex digits."""
    crc = 0xFFFF
    table = _CRC16
    # Only the low byte of each unit enters the CRC (`0xff & (hi ^ charCode)`).
    for byte in text.encode("utf-16-le", "surrogatepass")[0::2]:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return f"{((crc & 0xFF) << 8) | (crc >> 8):04X}"


def _js_weight(char: str) -> int:
    # splitStrData: a character `escape()` turns into %uXXXX counts 3, anything else 1.
    # A non-BMP character is two such units in JavaScript.
    code = ord(char)
    if code > 0xFFFF:
        return 6
    return 3 if code > 0xFF else 1


def split_like_js(text: str, budget: int = JS_CHUNK_BUDGET) -> list[str]:
    """Chunks as the page library's splitStrData cuts them (except that a non-BMP
    character is never cut in half: the browser would turn each half into U+FFFD)."""
    chunks: list[str] = []
    start = 0
    weight = 0
    for pos, char in enumerate(text):
        weight += _js_weight(char)
        if weight > budget - 3:
            chunks.append(text[start : pos + 1])
            start = pos + 1
            weight = 0
    if start != len(text) or not chunks:
        chunks.append(text[start:])
    return chunks


# --- BLOCKTXT frames -----------------------------------------------------------------------
#
# 128-character header, then the chunk:
#   0   "BLOCKTXT"
#   8   check code of the whole message (4)
#   12  check code of this chunk (4)
#   16  total length, UTF-16 units, zero-padded decimal (16)
#   32  this chunk's length (8)
#   40  number of chunks (4)
#   44  group GUID (36)
#   80  chunk number, from 0 (4)
#   84  reserved, "0" (44)


@dataclass(frozen=True)
class BlockHeader:
    total_code: str
    chunk_code: str
    total_units: int
    chunk_units: int
    count: int
    guid: str
    number: int


def encode_block(header: BlockHeader, chunk: str) -> str:
    text = (
        BLOCK_MAGIC
        + header.total_code.rjust(4, "0")
        + header.chunk_code.rjust(4, "0")
        + str(header.total_units).rjust(16, "0")
        + str(header.chunk_units).rjust(8, "0")
        + str(header.count).rjust(4, "0")
        + header.guid.rjust(36, "0")
        + str(header.number).rjust(4, "0")
    )
    return text.ljust(HEADER_CHARS, "0")[:HEADER_CHARS] + chunk


def encode_blocks(message: str, guid: str, budget: int = JS_CHUNK_BUDGET) -> list[str]:
    """Every frame the page library sends for `message` (it waits for a `_nextBlock`
    reply before each one after the first)."""
    chunks = split_like_js(message, budget)
    total_code = check_code(message)
    total = utf16_len(message)
    return [
        encode_block(
            BlockHeader(
                total_code, check_code(chunk), total, utf16_len(chunk), len(chunks), guid, number
            ),
            chunk,
        )
        for number, chunk in enumerate(chunks)
    ]


class BlockFault(Exception):
    """A frame that claims to be BLOCKTXT but whose header cannot even name its group."""


def _digits(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{what} is not a decimal number")
    return int(text)


def parse_block(frame: str) -> tuple[BlockHeader, str]:
    """Header and chunk. BlockFault when there is no usable GUID (nothing to answer);
    ValueError for any other malformed field (answerable: the GUID is known)."""
    if len(frame) < HEADER_CHARS or not frame.startswith(BLOCK_MAGIC):
        raise BlockFault("short BLOCKTXT header")
    guid = frame[44:80]
    if not _GUID.match(guid):
        raise BlockFault("BLOCKTXT header without a group GUID")
    total_code, chunk_code = frame[8:12], frame[12:16]
    if not (_HEX4.match(total_code) and _HEX4.match(chunk_code)):
        raise ValueError("check code is not 4 hex digits")
    header = BlockHeader(
        total_code=total_code.upper(),
        chunk_code=chunk_code.upper(),
        total_units=_digits(frame[16:32], "total size"),
        chunk_units=_digits(frame[32:40], "chunk size"),
        count=_digits(frame[40:44], "chunk count"),
        guid=guid,
        number=_digits(frame[80:84], "chunk number"),
    )
    return header, frame[HEADER_CHARS:]


@dataclass(frozen=True)
class BlockAck:
    """What to tell the page after a chunk: `ok` false = resend chunk `next`;
    `finish` true = the group is done (complete, or abandoned when not `ok`)."""

    guid: str
    received: int  # the chunk number this answers
    next: int
    finish: bool
    ok: bool
    error: ErrorPair | tuple[()] = ()


@dataclass(frozen=True)
class BlockOutcome:
    ack: BlockAck
    message: str | None = None  # the whole request, once complete
    # An abandoned group whose request is known from its first chunk: answer it, or the
    # page's callback never fires (the library only frees its copy on `finish`).
    failed: Request | None = None


# JSON.stringify keeps insertion order, and the library builds {"_method", "_id", ...}.
_REQUEST_START = re.compile(
    r'\{\s*"_method"\s*:\s*"([^"\\]{1,128})"\s*,\s*"_id"\s*:\s*(\d{1,15}|"[^"\\]{0,64}")'
)


def _sniff_request(first_chunk: str) -> Request | None:
    match = _REQUEST_START.match(first_chunk)
    if match is None:
        return None
    raw_id = match.group(2)
    req_id: JsonId = raw_id[1:-1] if raw_id.startswith('"') else int(raw_id)
    return Request(req_id, match.group(1), {})


@dataclass
class _Group:
    header: BlockHeader
    chunks: list[str] = field(default_factory=list)
    units: int = 0
    retries: int = 0
    request: Request | None = None

    @property
    def expected(self) -> int:
        return len(self.chunks)


class BlockAssembler:
    """Reassembles one chunked message at a time (the library sends chunks in order and
    only when asked), within a bound on the whole message. Memory is bounded by
    `max_units`: a group is refused from its header if it claims more, and dropped if
    its chunks add up to more."""

    def __init__(self, *, max_units: int, invalid_code: str) -> None:
        self.max_units = max_units
        self._invalid = invalid_code  # the official "bad arguments" code
        self._group: _Group | None = None

    @property
    def pending(self) -> bool:
        return self._group is not None

    def feed(self, frame: str) -> BlockOutcome:
        """Raises BlockFault for a frame that names no group (nothing to answer)."""
        try:
            header, chunk = parse_block(frame)
        except ValueError as exc:
            # BlockFault is not a ValueError: here the GUID is known, so answer it.
            group, self._group = self._group, None
            guid = frame[44:80]
            failed = group.request if group is not None and group.header.guid == guid else None
            return self._abandon(guid, 0, f"分块数据头错误: {exc}", failed)
        group = self._group
        if group is None or group.header.guid != header.guid:
            if header.number != 0:
                return self._abandon(header.guid, header.number, "未知的分块数据组")
            refusal = self._check_group(header)
            if refusal is not None:
                self._group = None
                return self._abandon(header.guid, 0, refusal, _sniff_request(chunk))
            # A new group replaces an unfinished one: the page gave up on it.
            group = self._group = _Group(header)
        if header.number != group.expected or not self._consistent(group.header, header):
            return self._retry(group, header.number, "分块顺序或数据头不一致")
        if utf16_len(chunk) != header.chunk_units or check_code(chunk) != header.chunk_code:
            return self._retry(group, header.number, "分块校验失败")
        group.units += header.chunk_units
        if group.units > group.header.total_units:
            self._group = None
            why = "分块数据超过声明的大小"
            return self._abandon(header.guid, header.number, why, group.request)
        if header.number == 0:
            group.request = _sniff_request(chunk)
        group.chunks.append(chunk)
        group.retries = 0
        if group.expected < group.header.count:
            return BlockOutcome(BlockAck(header.guid, header.number, group.expected, False, True))
        self._group = None
        message = "".join(group.chunks)
        if group.units != group.header.total_units or check_code(message) != header.total_code:
            why = "分块数据整体校验失败"
            return self._abandon(header.guid, header.number, why, group.request)
        ack = BlockAck(header.guid, header.number, header.count, True, True)
        return BlockOutcome(ack, message)

    def _check_group(self, header: BlockHeader) -> str | None:
        if header.count < 1 or header.total_units < 1:
            return "分块数量或大小为0"
        if header.total_units > self.max_units:
            return f"数据过大(超过{self.max_units}字符)"
        # Each chunk carries at least one unit and at most the library's budget.
        if not header.count <= header.total_units <= header.count * MAX_CHUNK_UNITS:
            return "分块数量与大小不符"
        return None

    @staticmethod
    def _consistent(first: BlockHeader, this: BlockHeader) -> bool:
        same = (first.total_code, first.total_units, first.count) == (
            this.total_code,
            this.total_units,
            this.count,
        )
        return same and this.chunk_units <= MAX_CHUNK_UNITS

    def _retry(self, group: _Group, received: int, why: str) -> BlockOutcome:
        group.retries += 1
        if group.retries > MAX_BLOCK_RETRIES:
            self._group = None
            return self._abandon(group.header.guid, received, why, group.request)
        error = (why, self._invalid)
        return BlockOutcome(
            BlockAck(group.header.guid, received, group.expected, False, False, error)
        )

    def _abandon(
        self, guid: str, received: int, why: str, failed: Request | None = None
    ) -> BlockOutcome:
        ack = BlockAck(guid, received, received, True, False, (why, self._invalid))
        return BlockOutcome(ack, None, failed)

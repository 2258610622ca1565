"""A tiny scripted ISO 7816-4 card for exchange-layer tests.

`ScriptedCard` implements `card.transport.Transport`. It answers every complete command
(after reassembling a chain) with `respond(command)` -> (data, sw) — by default the
fixed `payload` and `sw` — and applies the transport rules on the way out, each behind
a knob:

- `chunk`: hand the response out in pieces of at most `chunk` bytes, announcing the rest
  with 61xx and serving it on GET RESPONSE (Le honoured); `chunk=0` is T=0 style: no
  data with the first answer, everything (in pieces of up to 256) by GET RESPONSE;
- `exact_le`: answer 6Cxx (xx = the exact length) when a command's Le is not exactly
  the length of its response (responses of 256 bytes or fewer);
- `chaining`: accept CLA|0x10 chains, or refuse every chained chunk with 6884;
  `refuse_chunk` / `refuse_sw` refuse the n-th chained chunk (0-based) instead;
- `extended`: accept extended-length APDUs, or answer 6700 to any of them;
  `max_command_data`: answer 6700 to a single APDU carrying more data;
- `evil`: "endless_61" (61xx forever), "6c_always" (6Cxx to every command, a different
  length each time), "oversized" (one response of 65537 bytes).

Every raw APDU received is kept in `received` (decoded in `commands`); every complete
command after reassembly in `completed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from card.apdu import CLA_CHAINING, CommandApdu
from card.errors import TransportClosed

Evil = Literal["endless_61", "6c_always", "oversized"]

INS_GET_RESPONSE = 0xC0
SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_CHAINING_NOT_SUPPORTED = 0x6884
SW_LAST_COMMAND_EXPECTED = 0x6883
SW_CONDITIONS_NOT_SATISFIED = 0x6985
SW_WRONG_P1P2 = 0x6B00

DEFAULT_ATR = bytes.fromhex("3B8C800145504F52542D53494D30303100")


def _sw(value: int) -> bytes:
    return value.to_bytes(2, "big")


def is_extended(raw: bytes) -> bool:
    """Whether a (well-formed) command APDU uses the extended-length encoding."""
    return len(raw) > 5 and raw[4] == 0


@dataclass
class ScriptedCard:
    payload: bytes = b""
    sw: int = SW_OK
    respond: Callable[[CommandApdu], tuple[bytes, int]] | None = None
    chunk: int | None = None
    exact_le: bool = False
    chaining: bool = True
    refuse_chunk: int | None = None
    refuse_sw: int = SW_CONDITIONS_NOT_SATISFIED
    extended: bool = True
    max_command_data: int = 65535
    evil: Evil | None = None
    atr_bytes: bytes = DEFAULT_ATR

    received: list[bytes] = field(default_factory=list)
    completed: list[CommandApdu] = field(default_factory=list)
    _generation: int = 0
    _closed: bool = False
    _chain: list[CommandApdu] = field(default_factory=list)
    _pending: bytes = b""
    _pending_sw: int = SW_OK
    _evil_count: int = 0

    # --- Transport -----------------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self.atr_bytes

    @property
    def generation(self) -> int:
        return self._generation

    def reset(self) -> None:
        self._generation += 1
        self._chain.clear()
        self._pending = b""

    def close(self) -> None:
        self._closed = True

    def transmit(self, apdu: bytes) -> bytes:
        if self._closed:
            raise TransportClosed("scripted card closed")
        self.received.append(bytes(apdu))
        return self._answer(bytes(apdu))

    # --- what the tests look at ----------------------------------------------------

    @property
    def commands(self) -> list[CommandApdu]:
        return [CommandApdu.decode(raw) for raw in self.received]

    @property
    def get_responses(self) -> list[CommandApdu]:
        return [c for c in self.commands if c.ins == INS_GET_RESPONSE]

    # --- the card ------------------------------------------------------------------

    def _answer(self, raw: bytes) -> bytes:
        command = CommandApdu.decode(raw)
        if self.evil is not None:
            return self._evil_answer(command)
        if is_extended(raw) and not self.extended:
            return _sw(SW_WRONG_LENGTH)
        if len(command.data) > self.max_command_data:
            return _sw(SW_WRONG_LENGTH)
        if command.ins == INS_GET_RESPONSE and not command.cla & CLA_CHAINING:
            return self._get_response(command)
        self._pending = b""
        if command.cla & CLA_CHAINING:
            return self._chained_chunk(command)
        if self._chain:
            first = self._chain[0]
            if (first.ins, first.p1, first.p2) != (command.ins, command.p1, command.p2):
                self._chain.clear()
                return _sw(SW_LAST_COMMAND_EXPECTED)
            data = b"".join(c.data for c in self._chain) + command.data
            self._chain.clear()
            command = CommandApdu(
                command.cla, command.ins, command.p1, command.p2, data, command.le
            )
        self.completed.append(command)
        data, sw = self.respond(command) if self.respond else (self.payload, self.sw)
        if (
            self.exact_le
            and command.le is not None
            and len(data) <= 256
            and command.le != len(data)
        ):
            return _sw(0x6C00 | (len(data) & 0xFF))
        return self._hand_out(data, sw, command.le)

    def _chained_chunk(self, command: CommandApdu) -> bytes:
        if not self.chaining:
            self._chain.clear()
            return _sw(SW_CHAINING_NOT_SUPPORTED)
        if self.refuse_chunk is not None and len(self._chain) == self.refuse_chunk:
            self._chain.clear()
            return _sw(self.refuse_sw)
        self._chain.append(command)
        return _sw(SW_OK)

    def _hand_out(self, data: bytes, sw: int, le: int | None) -> bytes:
        """First piece of a response; the rest waits for GET RESPONSE behind 61xx."""
        size = len(data) if self.chunk is None else self.chunk
        if le is not None:
            size = min(size, le)
        if len(data) <= size:
            return data + _sw(sw)
        self._pending, self._pending_sw = data[size:], sw
        return data[:size] + _sw(self._announce())

    def _announce(self) -> int:
        step = self.chunk or len(self._pending)
        return 0x6100 | (min(len(self._pending), step, 256) & 0xFF)

    def _get_response(self, command: CommandApdu) -> bytes:
        if command.p1 or command.p2:
            return _sw(SW_WRONG_P1P2)
        if not self._pending:
            return _sw(SW_CONDITIONS_NOT_SATISFIED)
        size = min(command.le or 256, len(self._pending))
        if self.chunk:
            size = min(size, self.chunk)
        piece, self._pending = self._pending[:size], self._pending[size:]
        if self._pending:
            return piece + _sw(self._announce())
        return piece + _sw(self._pending_sw)

    def _evil_answer(self, command: CommandApdu) -> bytes:
        self._evil_count += 1
        if self.evil == "endless_61":
            return b"\xaa" * 16 + _sw(0x6110)
        if self.evil == "6c_always":
            return _sw(0x6C00 | (self._evil_count & 0xFF))
        return b"\x00" * 65537 + _sw(SW_OK)

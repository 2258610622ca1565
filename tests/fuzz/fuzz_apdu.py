"""Fuzz the APDU codecs (card/apdu.py) and the exchange layer (card/exchange.py).

Properties:
- `CommandApdu.decode` / `ResponseApdu.decode` raise nothing but `ApduFormatError`; what
  they accept re-encodes to exactly the same bytes (strict decoding), and the default
  encoding of a decoded command decodes to the same command.
- `CommandApdu(...)` refuses out-of-range fields with `ApduFormatError` and nothing
  else; a valid command survives encode/decode in both short and extended form, and
  the short form is refused exactly when the fields need the extended one.
- `redacted()` never shows the data of PIN commands, nor more than 8 bytes of a response.
- `ApduExchange.transmit` against a card that answers arbitrary bytes returns a final
  response or raises a `CardError`; never another exception, never an endless 61xx
  loop, never more than `max_response_size` bytes; what it puts on the wire is always a
  valid APDU within the configured limits, and chained chunks carry the command's data.

The first input byte picks the property; the rest is its input.

    python tests/fuzz/fuzz_apdu.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz.harness import OURS, main

with atheris.instrument_imports(include=list(OURS)):
    from card.apdu import (
        CLA_CHAINING,
        EXTENDED_MAX_LC,
        EXTENDED_MAX_LE,
        SECRET_INS,
        SHORT_MAX_LC,
        SHORT_MAX_LE,
        CommandApdu,
        ResponseApdu,
    )
    from card.errors import ApduFormatError, CardError, CardRemoved
    from card.exchange import ApduExchange, ExchangeConfig

MODES = 4
REDACTED_RESPONSE_MAX = 48  # "[65536] " + 8 bytes in hex + "…" + " 9000", with room


def is_extended_form(raw: bytes) -> bool:
    return len(raw) > 5 and raw[4] == 0


def check_command_decode(raw: bytes, order: int) -> None:
    try:
        cmd = CommandApdu.decode(raw)
    except ApduFormatError:
        return
    # The encodings are cached on the object: call them in an input-chosen order.
    forms = [True, False, None]
    forms = forms[order % 3 :] + forms[: order % 3]
    for extended in forms:
        if extended is False and cmd.needs_extended:
            try:
                cmd.encode(extended=False)
            except ApduFormatError:
                continue
            raise AssertionError("short encoding of a command that needs extended length")
        wire = cmd.encode(extended=extended)
        assert CommandApdu.decode(wire) == cmd, (raw.hex(), extended, wire.hex())
    assert cmd.encode(extended=is_extended_form(raw)) == raw, raw.hex()
    assert bytes(cmd) == cmd.encode()
    check_redacted(cmd)


def check_redacted(cmd: CommandApdu) -> None:
    text = cmd.redacted()
    # Longer than the 8 hex digits of the header, so it cannot appear there by chance.
    if cmd.ins in SECRET_INS and len(cmd.data) >= 5:
        assert cmd.data.hex().upper() not in text, "PIN command data in the log line"


def check_response_decode(raw: bytes) -> None:
    try:
        response = ResponseApdu.decode(raw)
    except ApduFormatError:
        assert len(raw) < 2
        return
    assert response.encode() == raw
    assert (response.sw1, response.sw2) == (raw[-2], raw[-1])
    assert response.ok == (raw[-2:] == b"\x90\x00")
    assert len(response.redacted()) <= REDACTED_RESPONSE_MAX, response.redacted()


def _pattern_bytes(fdp: atheris.FuzzedDataProvider, size: int) -> bytes:
    # Sizes up to 64 KiB without needing 64 KiB of input: repeat a short pattern.
    pattern = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8)) or b"\x00"
    return (pattern * (size // len(pattern) + 1))[:size]


def check_command_fields(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    header = [fdp.ConsumeIntInRange(-2, 0x101) for _ in range(4)]
    size = fdp.ConsumeIntInRange(0, EXTENDED_MAX_LC + 2)
    le: int | None = fdp.ConsumeIntInRange(-1, EXTENDED_MAX_LE + 1)
    if fdp.ConsumeBool():
        le = None
    body = _pattern_bytes(fdp, size)
    valid = (
        all(0 <= v <= 0xFF for v in header)
        and size <= EXTENDED_MAX_LC
        and (le is None or 1 <= le <= EXTENDED_MAX_LE)
    )
    try:
        cmd = CommandApdu(header[0], header[1], header[2], header[3], body, le)
    except ApduFormatError:
        assert not valid, (header, size, le)
        return
    assert valid, (header, size, le)
    needs_extended = size > SHORT_MAX_LC or (le is not None and le > SHORT_MAX_LE)
    assert cmd.needs_extended == needs_extended
    if not needs_extended:
        short = cmd.encode(extended=False)
        assert len(short) == 4 + (1 + size if size else 0) + (le is not None)
        assert CommandApdu.decode(short) == cmd
    extended = cmd.encode(extended=True)
    if size or le is not None:
        assert len(extended) == 5 + (2 + size if size else 0) + (2 if le is not None else 0)
    assert CommandApdu.decode(extended) == cmd
    check_redacted(cmd)


class ScriptedCard:
    """A transport whose card answers whatever the input says, in order."""

    def __init__(self, fdp: atheris.FuzzedDataProvider) -> None:
        self.fdp = fdp
        self.sent: list[bytes] = []

    atr = b"\x3b\x00"
    generation = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(bytes(apdu))
        if self.fdp.remaining_bytes() == 0 or len(self.sent) > 64:
            raise CardRemoved("script ended")
        kind = self.fdp.ConsumeIntInRange(0, 3)
        if kind == 0:  # anything at all, too short ones included
            return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, 300))
        data = _pattern_bytes(self.fdp, self.fdp.ConsumeIntInRange(0, 1024))
        if kind == 1:  # 61xx: more data waits
            return data + bytes((0x61, self.fdp.ConsumeIntInRange(0, 0xFF)))
        if kind == 2:  # 6Cxx: wrong Le
            return data + bytes((0x6C, self.fdp.ConsumeIntInRange(0, 0xFF)))
        return data + self.fdp.ConsumeBytes(2).rjust(2, b"\x90")

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


def check_exchange(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    config = ExchangeConfig(
        extended_length=fdp.ConsumeBool(),
        chaining=fdp.ConsumeBool(),
        max_command_data=fdp.ConsumeIntInRange(1, 300),
        max_get_response=fdp.ConsumeIntInRange(0, 8),
        max_response_size=fdp.ConsumeIntInRange(1, 4096),
    )
    size = fdp.ConsumeIntInRange(0, 1200)
    le = None if fdp.ConsumeBool() else fdp.ConsumeIntInRange(1, EXTENDED_MAX_LE)
    command = CommandApdu(
        fdp.ConsumeIntInRange(0, 0xFF) & ~CLA_CHAINING,
        fdp.ConsumeIntInRange(0, 0xFF),
        fdp.ConsumeIntInRange(0, 0xFF),
        fdp.ConsumeIntInRange(0, 0xFF),
        _pattern_bytes(fdp, size),
        le,
    )
    card = ScriptedCard(fdp)
    exchange = ApduExchange(card, config)
    try:
        response = exchange.transmit(command)
    except CardError:
        response = None
    sent = [CommandApdu.decode(raw) for raw in card.sent]  # each one a valid APDU
    for raw in card.sent:
        assert config.extended_length or not is_extended_form(raw), raw.hex()
    for cmd in sent:
        assert len(cmd.data) <= config.max_command_data or len(cmd.data) == len(command.data)
    check_chaining(command, sent)
    if response is None:
        return
    if response.sw >> 8 == 0x61:
        # Only a refused chunk of a chained command comes back as it was (the command
        # never completed, so there is nothing to GET RESPONSE for).
        assert sent[-1].cla & CLA_CHAINING, f"{response.sw:04X} returned as final"
    assert len(response.data) <= config.max_response_size, (len(response.data), config)


def check_chaining(command: CommandApdu, sent: list[CommandApdu]) -> None:
    """The chunks of a chained command carry its data in order, and only the last one
    goes without the chaining bit."""
    chunks: list[bytes] = []
    for cmd in sent:
        if cmd.ins != command.ins:
            break  # GET RESPONSE rounds
        chunks.append(cmd.data)
        if not cmd.cla & CLA_CHAINING:
            joined = b"".join(chunks)
            assert joined == command.data or len(chunks) == 1, "chained data differs"
            chunks = []


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % MODES, data[1:]
    if mode == 0:
        check_command_decode(body, data[0] // MODES)
    elif mode == 1:
        check_response_decode(body)
    elif mode == 2:
        check_command_fields(body)
    else:
        check_exchange(body)


if __name__ == "__main__":
    main("apdu", test_one_input, defaults=("-max_len=1024",))

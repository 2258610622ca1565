"""card.exchange.ApduExchange against a scripted card: what goes on the wire."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from card.apdu import CommandApdu
from card.errors import (
    ApduError,
    ApduFormatError,
    ChainingNotSupported,
    ConditionsNotSatisfied,
    FileNotFound,
    PinBlockedError,
    ProtocolError,
    TransportClosed,
    WrongLength,
    WrongPinError,
)
from card.exchange import ApduExchange, ExchangeConfig
from card.transport import Transport

# tests/unit is not a package: pytest (prepend mode) puts it on sys.path and imports the
# helper as `scripted_card`; mypy sees it as `tests.unit.scripted_card`.
if TYPE_CHECKING:
    from tests.unit.scripted_card import INS_GET_RESPONSE, ScriptedCard, is_extended
else:
    try:
        from scripted_card import INS_GET_RESPONSE, ScriptedCard, is_extended
    except ModuleNotFoundError:  # tests/unit made a package later
        from tests.unit.scripted_card import INS_GET_RESPONSE, ScriptedCard, is_extended

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

READ = CommandApdu(0x00, 0xB0, 0x00, 0x00, b"", 256)


def pattern(n: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(n))


def exchange(card: ScriptedCard, **config: int | bool) -> ApduExchange:
    return ApduExchange(card, ExchangeConfig(**config))  # type: ignore[arg-type]


def test_scripted_card_is_a_transport() -> None:
    card = ScriptedCard()
    assert isinstance(card, Transport)
    assert card.generation == 0
    card.reset()
    assert card.generation == 1


def test_plain_exchange_sends_exactly_the_encoding() -> None:
    card = ScriptedCard(payload=b"\x01\x02\x03")
    command = CommandApdu(0x00, 0xCA, 0x01, 0x02, b"\x05", 3)
    response = exchange(card).transmit(command)
    assert response.data == b"\x01\x02\x03"
    assert response.sw == 0x9000
    assert card.received == [bytes.fromhex("00CA0102 0105 03")]


# --- 61xx ----------------------------------------------------------------------------


def test_61xx_chunks_are_joined_with_get_response() -> None:
    payload = pattern(1000)
    card = ScriptedCard(payload=payload, chunk=100)
    assert exchange(card).send(READ) == payload
    # 1 command + 9 GET RESPONSE of Le=0x64 (the announced size), on the basic channel.
    assert len(card.received) == 10
    assert card.received[1:] == [bytes.fromhex("00C0000064")] * 9


def test_6100_asks_for_256() -> None:
    payload = pattern(600)
    card = ScriptedCard(payload=payload, chunk=256)
    assert exchange(card).send(READ) == payload
    assert card.received[1:] == [bytes.fromhex("00C0000000"), bytes.fromhex("00C0000058")]


def test_61xx_final_sw_is_the_last_one() -> None:
    card = ScriptedCard(payload=pattern(300), chunk=100, sw=0x6282)
    response = exchange(card).transmit(READ)
    assert response.data == pattern(300)
    assert response.sw == 0x6282


def test_61xx_after_case_3_command() -> None:
    # T=0 style: a case 3/4 command answered by 61xx, data fetched by GET RESPONSE.
    card = ScriptedCard(payload=pattern(40), chunk=0)
    command = CommandApdu(0x00, 0x2A, 0x9E, 0x9A, b"\x11" * 32)
    assert exchange(card).send(command) == pattern(40)
    assert card.received[1] == bytes.fromhex("00C0000028")


def test_get_response_cap_boundary() -> None:
    # 1 + 4 GET RESPONSE needed.
    ok = ScriptedCard(payload=pattern(50), chunk=10)
    assert exchange(ok, max_get_response=4).send(READ) == pattern(50)
    too_few = ScriptedCard(payload=pattern(50), chunk=10)
    with pytest.raises(ProtocolError, match="61xx"):
        exchange(too_few, max_get_response=3).send(READ)
    assert len(too_few.get_responses) == 3


def test_endless_61xx_is_capped() -> None:
    card = ScriptedCard(evil="endless_61")
    with pytest.raises(ProtocolError, match="after 5 GET RESPONSE"):
        exchange(card, max_get_response=5).transmit(READ)
    assert len(card.received) == 6


def test_endless_61xx_default_cap() -> None:
    card = ScriptedCard(evil="endless_61")
    with pytest.raises(ProtocolError):
        exchange(card).transmit(READ)
    assert len(card.received) == 1 + ExchangeConfig().max_get_response


def test_max_response_size_boundary() -> None:
    card = ScriptedCard(payload=pattern(1000), chunk=100)
    assert exchange(card, max_response_size=1000).send(READ) == pattern(1000)
    card = ScriptedCard(payload=pattern(1000), chunk=100)
    with pytest.raises(ProtocolError, match="exceeds 999 bytes"):
        exchange(card, max_response_size=999).send(READ)


def test_max_response_size_stops_fetching_early() -> None:
    card = ScriptedCard(payload=pattern(1000), chunk=100)
    with pytest.raises(ProtocolError):
        exchange(card, max_response_size=250).send(READ)
    assert len(card.get_responses) == 2  # 100 + 100 + 100 > 250: no third fetch


def test_max_response_size_applies_to_a_single_response() -> None:
    card = ScriptedCard(payload=pattern(300))
    with pytest.raises(ProtocolError):
        exchange(card, max_response_size=200, extended_length=True).send(
            CommandApdu(0, 0xB0, 0, 0, b"", 300)
        )


def test_oversized_response_is_refused() -> None:
    card = ScriptedCard(evil="oversized")
    with pytest.raises(ProtocolError, match="not an APDU"):
        exchange(card, max_response_size=1 << 20).transmit(READ)


def test_malformed_response_is_a_format_error() -> None:
    class Mute(ScriptedCard):
        def transmit(self, apdu: bytes) -> bytes:
            self.received.append(apdu)
            return b"\x90"

    with pytest.raises(ApduFormatError):
        exchange(Mute()).transmit(READ)


@pytest.mark.parametrize(
    ("cla", "get_response_cla"),
    [
        (0x00, 0x00),
        (0x01, 0x01),  # logical channel 1
        (0x03, 0x03),
        (0x0C, 0x00),  # secure messaging bits dropped
        (0x80, 0x00),  # proprietary class
        (0x82, 0x02),
        (0x40, 0x40),  # further interindustry: channel 4
        (0x4F, 0x4F),  # channel 19
        (0x65, 0x45),  # channel 9 with secure messaging
    ],
)
def test_get_response_stays_on_the_logical_channel(cla: int, get_response_cla: int) -> None:
    card = ScriptedCard(payload=pattern(30), chunk=10)
    exchange(card).send(CommandApdu(cla, 0xB0, 0, 0, b"", 30))
    assert [c.cla for c in card.get_responses] == [get_response_cla] * 2


# --- 6Cxx ----------------------------------------------------------------------------


def test_6cxx_resends_once_with_the_exact_le() -> None:
    card = ScriptedCard(payload=pattern(10), exact_le=True)
    assert exchange(card).send(CommandApdu(0x00, 0xB0, 0x00, 0x04, b"", 256)) == pattern(10)
    assert card.received == [bytes.fromhex("00B0000400"), bytes.fromhex("00B000040A")]


def test_6c00_resends_with_le_256() -> None:
    card = ScriptedCard(payload=pattern(256), exact_le=True)
    assert exchange(card).send(CommandApdu(0x00, 0xB0, 0, 0, b"", 16)) == pattern(256)
    assert card.received == [bytes.fromhex("00B0000010"), bytes.fromhex("00B0000000")]


def test_6cxx_resend_keeps_the_command_data() -> None:
    card = ScriptedCard(payload=pattern(5), exact_le=True)
    command = CommandApdu(0x80, 0xCA, 0x9F, 0x7F, b"\x01\x02", 1)
    assert exchange(card).send(command) == pattern(5)
    assert card.commands[1] == command.with_le(5)


def test_6cxx_on_a_case_1_command_adds_le() -> None:
    def respond(command: CommandApdu) -> tuple[bytes, int]:
        if command.le is None:
            return b"", 0x6C04
        return b"\xde\xad\xbe\xef", 0x9000

    card = ScriptedCard(respond=respond)
    assert exchange(card).send(CommandApdu(0x00, 0xCB, 0, 0)) == b"\xde\xad\xbe\xef"
    assert card.received[1] == bytes.fromhex("00CB000004")


def test_second_6cxx_is_wrong_length() -> None:
    card = ScriptedCard(evil="6c_always")
    with pytest.raises(WrongLength) as info:
        exchange(card).transmit(READ)
    assert info.value.sw == 0x6C02
    assert len(card.received) == 2
    assert card.received[1] == bytes.fromhex("00B0000001")


def test_6cxx_then_61xx() -> None:
    card = ScriptedCard(payload=pattern(200), exact_le=True, chunk=50)
    assert exchange(card).send(CommandApdu(0, 0xB0, 0, 0, b"", 10)) == pattern(200)
    assert card.received[:2] == [bytes.fromhex("00B000000A"), bytes.fromhex("00B00000C8")]
    assert len(card.get_responses) == 3


def test_6cxx_after_a_chain_resends_the_whole_chain() -> None:
    data = pattern(25)
    card = ScriptedCard(payload=b"\x01\x02\x03\x04", exact_le=True)
    ex = exchange(card, max_command_data=10)
    assert ex.send(CommandApdu(0x00, 0x2A, 0x80, 0x86, data, 256)) == b"\x01\x02\x03\x04"
    assert [c.cla for c in card.commands] == [0x10, 0x10, 0x00] * 2
    assert card.commands[-1].le == 4
    # The card saw the full command both times, never a lone last chunk.
    assert [c.data for c in card.completed] == [data, data]


# --- chaining ------------------------------------------------------------------------


def test_chaining_splits_at_max_command_data() -> None:
    data = pattern(250)
    card = ScriptedCard(payload=b"\x90\x91")
    ex = exchange(card, max_command_data=100)
    assert ex.send(CommandApdu(0x00, 0x2A, 0x9E, 0x9A, data, 256)) == b"\x90\x91"
    assert card.received == [
        bytes.fromhex("102A9E9A64") + data[:100],
        bytes.fromhex("102A9E9A64") + data[100:200],
        bytes.fromhex("002A9E9A32") + data[200:] + b"\x00",
    ]
    assert card.completed == [CommandApdu(0x00, 0x2A, 0x9E, 0x9A, data, 256)]


def test_chaining_keeps_the_class_bits() -> None:
    card = ScriptedCard()
    exchange(card, max_command_data=4).send(CommandApdu(0x81, 0xDA, 0, 0, pattern(9)))
    assert [c.cla for c in card.commands] == [0x91, 0x91, 0x81]


def test_data_exactly_at_the_limit_is_not_chained() -> None:
    card = ScriptedCard()
    exchange(card, max_command_data=100).send(CommandApdu(0, 0xDA, 0, 0, pattern(100)))
    assert len(card.received) == 1
    assert card.received[0][0] == 0x00


def test_short_limit_applies_without_extended_length() -> None:
    data = pattern(300)
    card = ScriptedCard(extended=False)
    exchange(card, max_command_data=1000).send(CommandApdu(0, 0xDA, 0, 0, data))
    assert [len(c.data) for c in card.commands] == [255, 45]
    assert not any(is_extended(raw) for raw in card.received)
    assert card.completed[0].data == data


def test_chain_stops_at_the_first_refused_chunk() -> None:
    card = ScriptedCard(refuse_chunk=1, refuse_sw=0x6985)
    ex = exchange(card, max_command_data=10)
    command = CommandApdu(0x00, 0xDA, 0, 0, pattern(50))
    response = ex.transmit(command)
    assert response.sw == 0x6985
    assert len(card.received) == 2
    assert card.completed == []
    with pytest.raises(ConditionsNotSatisfied):
        ex.send(command)


def test_refused_chunk_with_data_respects_max_response_size() -> None:
    # Found by tests/fuzz/fuzz_apdu.py: a card refusing a chained chunk with a long
    # answer got its data past the size cap (the refused-chunk path skipped the check).
    class Chatty(ScriptedCard):
        def transmit(self, apdu: bytes) -> bytes:
            self.received.append(apdu)
            return pattern(201) + b"\x69\x85"

    card = Chatty()
    with pytest.raises(ProtocolError, match="exceeds 2 bytes"):
        exchange(card, max_command_data=133, max_response_size=2).transmit(
            CommandApdu(0x00, 0xDA, 0, 0, pattern(300))
        )
    assert len(card.received) == 1


def test_chaining_refused_by_the_card() -> None:
    card = ScriptedCard(chaining=False)
    with pytest.raises(ChainingNotSupported) as info:
        exchange(card, max_command_data=10).send(CommandApdu(0, 0xDA, 0, 0, pattern(50)))
    assert info.value.sw == 0x6884
    assert len(card.received) == 1


def test_chaining_disabled_and_data_too_long_sends_nothing() -> None:
    card = ScriptedCard()
    ex = exchange(card, chaining=False, max_command_data=100)
    with pytest.raises(ApduFormatError, match=r"101 bytes .* limit of 100 .* chaining"):
        ex.transmit(CommandApdu(0, 0xDA, 0, 0, pattern(101)))
    assert card.received == []
    ex.transmit(CommandApdu(0, 0xDA, 0, 0, pattern(100)))
    assert len(card.received) == 1


def test_nonpositive_max_command_data() -> None:
    card = ScriptedCard()
    ex = exchange(card, max_command_data=0)
    with pytest.raises(ApduFormatError):
        ex.transmit(CommandApdu(0, 0xDA, 0, 0, b"\x01"))
    assert card.received == []
    ex.transmit(CommandApdu(0, 0xB0, 0, 0, b"", 1))  # no data: nothing to split
    assert len(card.received) == 1


def test_chained_response_comes_back_through_61xx() -> None:
    data, payload = pattern(600), pattern(700)[::-1]
    card = ScriptedCard(payload=payload, chunk=64)
    assert exchange(card, max_command_data=200).send(CommandApdu(0, 0x2A, 0, 0, data)) == payload
    assert card.completed[0].data == data
    assert all(c.cla == 0x00 for c in card.get_responses)


# --- extended length -----------------------------------------------------------------


def test_extended_length_on_the_wire_only_when_configured() -> None:
    card = ScriptedCard(payload=pattern(1000))
    ex = exchange(card, extended_length=True, max_command_data=65535)
    assert ex.send(CommandApdu(0, 0xB0, 0, 0, b"", 1000)) == pattern(1000)
    assert card.received == [bytes.fromhex("00B00000 0003E8")]


def test_extended_case_4_on_the_wire() -> None:
    data = pattern(300)
    card = ScriptedCard(payload=b"\x01")
    ex = exchange(card, extended_length=True, max_command_data=65535)
    ex.send(CommandApdu(0, 0x2A, 0x9E, 0x9A, data, 65536))
    assert card.received == [bytes.fromhex("002A9E9A 00012C") + data + b"\x00\x00"]


def test_extended_config_still_sends_short_when_it_fits() -> None:
    card = ScriptedCard(payload=b"\x01")
    exchange(card, extended_length=True, max_command_data=65535).send(READ)
    assert card.received == [bytes.fromhex("00B0000000")]


def test_without_extended_length_big_le_goes_short_and_61xx_joins() -> None:
    payload = pattern(1000)
    card = ScriptedCard(payload=payload, extended=False)
    assert exchange(card).send(CommandApdu(0, 0xB0, 0, 0, b"", 1000)) == payload
    assert card.received[0] == bytes.fromhex("00B0000000")
    assert not any(is_extended(raw) for raw in card.received)
    assert all(len(raw) == 5 for raw in card.received)  # short case 2 only


def test_extended_chaining_chunks() -> None:
    data = pattern(7000)
    card = ScriptedCard()
    exchange(card, extended_length=True, max_command_data=1024).send(
        CommandApdu(0, 0xDA, 0, 0, data)
    )
    assert [len(c.data) for c in card.commands] == [1024] * 6 + [len(data) - 6 * 1024]
    assert all(is_extended(raw) for raw in card.received)
    assert card.completed[0].data == data


def test_card_without_extended_length_answers_6700() -> None:
    card = ScriptedCard(extended=False)
    ex = exchange(card, extended_length=True, max_command_data=65535)
    with pytest.raises(WrongLength):
        ex.send(CommandApdu(0, 0xB0, 0, 0, b"", 1000))


# --- typed errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sw", "cls"),
    [(0x63C2, WrongPinError), (0x6983, PinBlockedError), (0x6A82, FileNotFound)],
)
def test_send_raises_the_typed_error(sw: int, cls: type[ApduError]) -> None:
    card = ScriptedCard(sw=sw)
    ex = exchange(card)
    with pytest.raises(cls) as info:
        ex.send(CommandApdu(0x00, 0x20, 0x00, 0x81, b"x" * 16))
    assert info.value.sw == sw
    assert ex.transmit(CommandApdu(0x00, 0x20, 0x00, 0x81)).sw == sw  # transmit never raises


def test_send_wrong_pin_tries_left() -> None:
    card = ScriptedCard(sw=0x63C1)
    with pytest.raises(WrongPinError) as info:
        exchange(card).send(CommandApdu(0x00, 0x20, 0x00, 0x81, b"x" * 16))
    assert info.value.tries_left == 1


def test_transport_errors_propagate() -> None:
    card = ScriptedCard()
    card.close()
    with pytest.raises(TransportClosed):
        exchange(card).send(READ)


# --- logging ---------------------------------------------------------------------------

PIN = b"739146"
NEW_PIN = b"582604"


def block(pin: bytes) -> bytes:
    return pin + b"\xff" * (16 - len(pin))


def assert_not_logged(text: str, secret: bytes) -> None:
    assert secret.decode() not in text
    assert secret.hex() not in text.lower()


def test_debug_log_never_contains_the_pin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="card.apdu")
    card = ScriptedCard(sw=0x63C2)
    ex = exchange(card)
    with pytest.raises(WrongPinError):
        ex.send(CommandApdu(0x00, 0x20, 0x00, 0x81, block(PIN)))
    ex.transmit(CommandApdu(0x00, 0x24, 0x00, 0x81, block(PIN) + block(NEW_PIN)))
    ex.transmit(CommandApdu(0x00, 0x2C, 0x00, 0x81, block(NEW_PIN) + block(PIN)))
    # chained, and resent after 6Cxx
    chained = exchange(ScriptedCard(payload=b"\x00", exact_le=True), max_command_data=5)
    chained.transmit(CommandApdu(0x00, 0x20, 0x00, 0x81, block(PIN), 8))
    text = caplog.text
    assert "> 00200081 Lc=16 " + "**" * 16 in text
    assert "< 63C2" in text
    assert "> 10200081 Lc=5 **********" in text
    assert_not_logged(text, PIN)
    assert_not_logged(text, NEW_PIN)
    for record in caplog.records:
        assert_not_logged(record.getMessage(), PIN)


def test_debug_log_truncates_response_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="card.apdu")
    holder = b"Zhang San, 12 Harbour Road"
    card = ScriptedCard(payload=b"\xe1\x20" + holder)
    exchange(card).send(READ)
    assert "Zhang" not in caplog.text
    assert holder[6:].hex() not in caplog.text.lower()
    assert f"[{2 + len(holder)}]" in caplog.text


# --- properties ------------------------------------------------------------------------


@PROPERTY
@given(data=st.data(), chunk=st.integers(1, 256), sw=st.sampled_from([0x9000, 0x6282]))
def test_joined_response_is_what_the_card_had(data: st.DataObject, chunk: int, sw: int) -> None:
    size = data.draw(st.integers(0, min(65536, 40 * chunk)), label="size")
    payload = pattern(size)
    card = ScriptedCard(payload=payload, chunk=chunk, sw=sw)
    response = exchange(card).transmit(READ)
    assert response.data == payload
    assert response.sw == sw
    assert len(card.get_responses) == math.ceil(max(0, size - chunk) / chunk)
    les = [c.le for c in card.get_responses]  # each asks for exactly what 61xx announced
    assert les == [chunk] * (len(les) - 1) + [size - chunk * len(les)] * bool(les)


@PROPERTY
@given(size=st.integers(1, 3000), limit=st.integers(1, 255), le=st.none() | st.integers(1, 256))
def test_chained_data_reassembles_exactly(size: int, limit: int, le: int | None) -> None:
    data = pattern(size)[::-1]
    card = ScriptedCard(payload=b"\x01\x02")
    command = CommandApdu(0x00, 0x2A, 0x9E, 0x9A, data, le)
    assert exchange(card, max_command_data=limit).send(command) == b"\x01\x02"
    wire = [c for c in card.commands if c.ins != INS_GET_RESPONSE]  # Le=1 fetches the rest
    assert len(wire) == math.ceil(size / limit)
    assert all(c.cla == 0x10 and c.le is None and len(c.data) == limit for c in wire[:-1])
    assert wire[-1].cla == 0x00
    assert wire[-1].le == le
    assert 1 <= len(wire[-1].data) <= limit
    assert card.completed == [command]


@PROPERTY
@given(
    size=st.integers(1, 5000),
    limit=st.integers(16, 4000),
    response_size=st.integers(0, 5000),
    chunk=st.integers(64, 256),
    extended=st.booleans(),
)
def test_chaining_and_61xx_together(
    size: int, limit: int, response_size: int, chunk: int, extended: bool
) -> None:
    data, payload = pattern(size), pattern(response_size)[::-1]
    card = ScriptedCard(payload=payload, chunk=chunk)
    ex = exchange(card, max_command_data=limit, extended_length=extended)
    assert ex.send(CommandApdu(0x00, 0xDA, 0, 0, data, 65536)) == payload
    assert card.completed[0].data == data
    effective = min(limit, 65535 if extended else 255)
    assert all(len(c.data) <= effective for c in card.commands)
    assert any(is_extended(raw) for raw in card.received) == extended

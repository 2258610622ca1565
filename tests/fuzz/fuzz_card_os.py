"""Fuzz the simulated card's OS (simulator/card_os.py) with arbitrary APDU sequences.

Input: two configuration bytes (profile and knobs, see `make_card`), then records:
`len` (1 byte) and that many APDU bytes; `0xFF` is followed by a 2-byte length
(extended APDUs); `0xFE` warm-resets the card and `0xFD` power-cycles it.

Properties, for every APDU:
- the card answers a well-formed R-APDU (data + a status word of the 61-6F or 90
  groups) and never fails internally (it would answer 6F00 and log an error);
- no answer carries more data than the command's Le or the card's response limit;
- the PIN and unblock retry counters never go up, and the PIN never changes, except
  through a 9000 answer to VERIFY, CHANGE REFERENCE DATA or RESET RETRY COUNTER;
  the card becomes verified only through a 9000 VERIFY; a 63Cx answer tells the
  counter as it is; reset and power-off forget the verified state;
- a PSO answers a signature (or 61xx for one) only while the PIN is verified.
At the end, the card's state file loads back with the counters and PIN in memory.

    python tests/fuzz/fuzz_card_os.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.fuzz` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz.harness import OURS, ErrorLogTripwire, main, scratch_dir

with atheris.instrument_imports(include=list(OURS)):
    from card.apdu import CommandApdu, ResponseApdu
    from card.eport import profile as p
    from card.errors import ApduFormatError
    from simulator.card_os import SimulatedCard
    from simulator.knobs import CardKnobs
    from simulator.state import CardFactory, CardState, StateStore

RESET, POWER_CYCLE, LONG = 0xFE, 0xFD, 0xFF
PIN_INS = frozenset({p.INS_VERIFY, p.INS_CHANGE_REFERENCE_DATA, p.INS_RESET_RETRY_COUNTER})
MAX_APDUS = 64

# Card states are made once (key generation): each input starts from a copy.
_FACTORY = CardFactory()
PROFILES = ("legal-person-sm2", "legacy-rsa1024", "blocked-pin")
_BASE = {name: _FACTORY.make_state(name).to_dict() for name in PROFILES}
_KEYS = {name: CardState.from_dict(d).signing_key() for name, d in _BASE.items()}
RESPONSE_LIMITS = (256, 1, 16, 255, 65536)
COMMAND_LIMITS = (255, 1, 16, 65535)

TRIPWIRE = ErrorLogTripwire().install()
STATE_FILE = scratch_dir("card-os") / "card.json"


def _random(n: int) -> bytes:
    # GET CHALLENGE: deterministic, so an input always runs the same way.
    return (hashlib.sha256(n.to_bytes(4, "big")).digest() * (n // 32 + 1))[:n]


def make_card(config: int, limits: int) -> SimulatedCard:
    """`config`: profile (bits 0-1), exact Le (0x04), no chaining (0x08), extended
    length (0x10); `limits`: response limit (low nibble), command limit (high nibble)."""
    name = PROFILES[(config & 0x03) % len(PROFILES)]
    state = CardState.from_dict(_BASE[name])
    state._signing_key = _KEYS[name]  # the PEM parse is the same every time: skip it
    knobs = CardKnobs(
        exact_le=bool(config & 0x04),
        chaining=not config & 0x08,
        extended_length=bool(config & 0x10),
        max_response_data=RESPONSE_LIMITS[(limits & 0x0F) % len(RESPONSE_LIMITS)],
        max_command_data=COMMAND_LIMITS[(limits >> 4) % len(COMMAND_LIMITS)],
    )
    store = StateStore(STATE_FILE)
    store.save(state)
    store.attach(state)
    return SimulatedCard(state, knobs=knobs, sleep=lambda _: None, random_bytes=_random)


@dataclass(frozen=True)
class Snapshot:
    pin_tries: int
    pin_value: bytes
    unblock_tries: int
    verified: bool

    @classmethod
    def of(cls, card: SimulatedCard) -> Snapshot:
        state = card.state
        return cls(state.pin.tries_left, state.pin.value, state.unblock.tries_left, card.verified)


def records(body: bytes) -> list[bytes | int]:
    """APDUs (bytes) and card movements (RESET / POWER_CYCLE) of one input."""
    out: list[bytes | int] = []
    pos = 0
    while pos < len(body) and len(out) < MAX_APDUS:
        size = body[pos]
        pos += 1
        if size in (RESET, POWER_CYCLE):
            out.append(size)
            continue
        if size == LONG:
            size = int.from_bytes(body[pos : pos + 2], "big")
            pos += 2
        out.append(body[pos : pos + size])
        pos += size
    return out


def check_answer(card: SimulatedCard, raw: bytes, answer: bytes, before: Snapshot) -> None:
    TRIPWIRE.check()
    response = ResponseApdu.decode(answer)  # at least the two SW bytes
    sw = response.sw
    assert 0x61 <= sw >> 8 <= 0x6F or sw >> 8 == 0x90, f"SW {sw:04X}"
    assert sw != 0x6F00, "6F00: the card failed to process a command"
    assert len(response.data) <= card.knobs.max_response_data
    if response.data:
        command = CommandApdu.decode(raw)  # data only ever answers a well-formed APDU
        assert command.le is not None
        assert len(response.data) <= command.le
    after = Snapshot.of(card)
    ins = raw[1] if len(raw) > 1 else -1
    if after.pin_tries > before.pin_tries or after.pin_value != before.pin_value:
        assert sw == 0x9000, f"PIN counter or value changed with SW {sw:04X}"
        assert ins in PIN_INS, f"PIN counter or value changed by INS {ins:02X}"
        assert ins != p.INS_VERIFY or after.pin_value == before.pin_value
    if after.unblock_tries > before.unblock_tries:
        assert sw == 0x9000, f"unblock counter reset with SW {sw:04X}"
        assert ins == p.INS_RESET_RETRY_COUNTER, f"unblock counter reset by INS {ins:02X}"
    if after.verified and not before.verified:
        assert sw == 0x9000, f"verified with SW {sw:04X}"
        assert ins == p.INS_VERIFY, f"verified by INS {ins:02X}"
    if sw & 0xFFF0 == 0x63C0:
        told = sw & 0x0F
        counters = (after.pin_tries, after.unblock_tries)
        assert told in (min(c, 0x0F) for c in counters), f"63C{told:X} but counters {counters}"
    if ins == p.INS_PSO and (response.data or sw >> 8 == 0x61):
        assert before.verified, "PSO answered without a verified PIN"


def check_persisted(card: SimulatedCard) -> None:
    stored = StateStore(STATE_FILE).load()
    assert stored is not None
    state = card.state
    assert stored.pin.tries_left == state.pin.tries_left
    assert stored.pin.value == state.pin.value
    assert stored.unblock.tries_left == state.unblock.tries_left
    assert stored.unblock.value == state.unblock.value


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    TRIPWIRE.clear()
    card = make_card(data[0], data[1])
    for record in records(data[2:]):
        if record == RESET:
            card.reset()
            assert not card.verified
            continue
        if record == POWER_CYCLE:
            card.power_off()
            card.power_on()
            assert not card.verified
            continue
        assert isinstance(record, bytes)
        before = Snapshot.of(card)
        answer = card.process(record)
        try:
            check_answer(card, record, answer, before)
        except ApduFormatError as exc:
            raise AssertionError(f"malformed answer {answer.hex()} to {record.hex()}") from exc
    check_persisted(card)


if __name__ == "__main__":
    main("card_os", test_one_input, defaults=("-max_len=4096", "-timeout=30"))

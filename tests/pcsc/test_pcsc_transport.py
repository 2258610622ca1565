"""PcscTransport through the real pcscd and vpcd virtual cards."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from smartcard import scard

from card.errors import (
    CardMissing,
    CardRemoved,
    CardReset,
    ReaderBusy,
    ReaderMissing,
    ServiceUnavailable,
    TransportClosed,
    TransportError,
)
from card.pcsc import PcscContext, PcscTransport, list_readers
from card.transport import Transport

pytestmark = pytest.mark.pcsc

Make = Callable[..., PcscTransport]


@pytest.fixture
def transport(pcscd) -> Iterator[Make]:
    """Factory for transports that are closed after the test."""
    made: list[PcscTransport] = []

    def _make(*args: object, **kwargs: object) -> PcscTransport:
        t = PcscTransport(*args, **kwargs)  # type: ignore[arg-type]
        made.append(t)
        return t

    yield _make
    for t in made:
        t.close()


def until(deadline_s: float, attempt: Callable[[], bytes], allowed: tuple[type, ...]) -> bytes:
    """Retry `attempt` until it succeeds; only `allowed` errors may happen meanwhile."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return attempt()
        except allowed:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_is_a_transport_and_transmits(pcscd, plug, make_card, transport, apdus) -> None:
    card = make_card()
    plug(card)
    t = transport(pcscd.readers[0])
    assert t.generation == 0  # nothing happens before the first call
    assert not t.connected
    assert t.transmit(apdus.select) == b"\x90\x00"
    # Only now: on Python 3.11 isinstance() on a runtime_checkable Protocol evaluates
    # properties, and `atr` connects (it would raise CardMissing with no card).
    assert isinstance(t, Transport)
    assert t.atr == card.atr
    assert t.reader == pcscd.readers[0]
    assert t.generation == 1
    assert t.transmit(apdus.counter) == card.processed.to_bytes(4, "big") + b"\x90\x00"


def test_list_readers(pcscd) -> None:
    assert list(pcscd.readers) == [r for r in list_readers() if r in pcscd.readers]


def test_default_selection_takes_the_reader_holding_a_card(
    pcscd, plug, make_card, transport
) -> None:
    card = make_card(label=b"second")
    plug(card, slot=1)  # reader 00 00 stays empty
    t = transport()
    t.connect()
    assert t.reader == pcscd.readers[1]
    assert t.atr == card.atr


def test_selection_by_pattern_and_accept_atr(pcscd, plug, make_card, transport) -> None:
    plain, eport = make_card(label=b"bank"), make_card(label=b"eport")
    plug(plain, slot=0)
    plug(eport, slot=1)

    by_pattern = transport(re.compile(r"PCD 00 01$"))
    assert by_pattern.atr == eport.atr
    by_pattern.close()  # exclusive: let the next transport have it
    preferred = transport(accept_atr=lambda atr: b"eport" in atr)
    assert preferred.atr == eport.atr
    preferred.close()
    # Nothing accepted: the first card still wins; the profile layer will refuse it.
    fallback = transport(accept_atr=lambda atr: False)
    assert fallback.atr == plain.atr
    assert fallback.reader == pcscd.readers[0]


def test_missing_reader_and_missing_card(pcscd, plug, make_card, transport) -> None:
    with pytest.raises(ReaderMissing) as e:
        transport("No Such Reader 00 00").connect()
    assert e.value.code == scard.SCARD_E_UNKNOWN_READER
    with pytest.raises(ReaderMissing):
        transport(re.compile("^nothing")).connect()
    with pytest.raises(CardMissing) as missing:
        transport(pcscd.readers[0]).connect()
    assert missing.value.code == scard.SCARD_E_NO_SMARTCARD
    with pytest.raises(CardMissing):
        transport().connect()  # no card anywhere


def test_two_readers_two_cards(pcscd, plug, make_card, transport, apdus) -> None:
    a, b = make_card(label=b"card-a"), make_card(label=b"card-b")
    plug(a, slot=0)
    plug(b, slot=1)
    ta, tb = transport(pcscd.readers[0]), transport(pcscd.readers[1])
    assert (ta.atr, tb.atr) == (a.atr, b.atr)
    for _ in range(3):
        ta.transmit(apdus.counter)
    tb.transmit(apdus.counter)
    assert (a.processed, b.processed) == (3, 1)


def test_card_removed_mid_exchange(pcscd, plug, make_card, transport, apdus, watch) -> None:
    card = make_card()
    link = plug(card)
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    generation = t.generation
    link.remove_when(lambda apdu: apdu[1] == 0x2A)  # pull the card during the signature

    start = time.monotonic()
    with pytest.raises((CardRemoved, CardMissing)):
        t.transmit(apdus.pso)
    assert time.monotonic() - start < 1.0  # pcscd polls presence every ~0.4 s
    with pytest.raises(CardMissing):
        t.transmit(apdus.select)  # still out: no hang, a clear answer

    link.insert()
    watch.present(pcscd.readers[0])
    assert t.transmit(apdus.select) == b"\x90\x00"
    assert t.generation > generation


def test_card_pulled_between_calls(pcscd, plug, make_card, transport, apdus, watch) -> None:
    link = plug(make_card())
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    link.remove()
    watch.empty(pcscd.readers[0])
    with pytest.raises(CardRemoved) as e:
        t.transmit(apdus.select)
    assert e.value.code == scard.SCARD_W_REMOVED_CARD
    assert not e.value.retryable


def test_pcscd_restart_recovers_on_a_later_call(pcscd, plug, make_card, transport, apdus) -> None:
    card = make_card()
    plug(card)
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    generation = t.generation

    pcscd.kill()
    with pytest.raises(ServiceUnavailable) as e:
        t.transmit(apdus.select)  # the failing call raises; it is not replayed
    assert e.value.retryable
    processed = card.processed
    with pytest.raises(ServiceUnavailable):
        t.transmit(apdus.select)  # still down

    pcscd.start()
    # The card link needs a moment to come back (backoff); readers appear at once.
    answer = until(5.0, lambda: t.transmit(apdus.select), (CardMissing, ServiceUnavailable))
    assert answer == b"\x90\x00"
    assert t.generation > generation
    assert card.processed == processed + 1  # nothing was replayed behind our back


def test_reset_bumps_generation(pcscd, plug, make_card, transport, apdus) -> None:
    card = make_card()
    plug(card)
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    generation, resets = t.generation, card.resets
    t.reset()
    assert t.generation == generation + 1
    assert card.resets == resets + 1
    assert t.transmit(apdus.select) == b"\x90\x00"


def test_reset_by_someone_else_raises_card_reset_then_works(
    pcscd, plug, make_card, transport, apdus
) -> None:
    card = make_card()
    plug(card)
    t = transport(pcscd.readers[0], share_mode=scard.SCARD_SHARE_SHARED)
    t.transmit(apdus.select)
    generation = t.generation

    other = PcscContext()
    try:
        hr, handle, _ = scard.SCardConnect(
            other.handle, pcscd.readers[0], scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1
        )
        assert hr == 0
        hr, _ = scard.SCardReconnect(
            handle, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1, scard.SCARD_RESET_CARD
        )
        assert hr == 0
        scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
    finally:
        other.release()

    with pytest.raises(CardReset) as e:
        t.transmit(apdus.select)
    assert e.value.retryable
    assert e.value.code == scard.SCARD_W_RESET_CARD
    assert t.generation > generation  # reconnected (LEAVE_CARD) before raising
    assert t.transmit(apdus.select) == b"\x90\x00"


_HOLDER = r"""
import sys
from smartcard import scard
hr, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
hr, handle, protocol = scard.SCardConnect(
    ctx, sys.argv[1], scard.SCARD_SHARE_EXCLUSIVE, scard.SCARD_PROTOCOL_T1)
print("held" if hr == 0 else f"failed {hr:#x}", flush=True)
sys.stdin.readline()
scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
"""


def test_another_process_holding_the_card_gives_reader_busy(
    pcscd, plug, make_card, transport, apdus
) -> None:
    plug(make_card())
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, pcscd.readers[0]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        t = transport(pcscd.readers[0])
        with pytest.raises(ReaderBusy) as e:
            t.transmit(apdus.select)
        assert e.value.retryable
        assert e.value.code == scard.SCARD_E_SHARING_VIOLATION
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)
    assert t.transmit(apdus.select) == b"\x90\x00"  # released: the next call works


def test_exclusive_means_exclusive(pcscd, plug, make_card, transport, apdus) -> None:
    plug(make_card())
    t = transport(pcscd.readers[0])
    t.reset()  # a reconnect: must stay exclusive (pyscard's wrapper would go shared)
    other = PcscContext()
    try:
        hr, _h, _p = scard.SCardConnect(
            other.handle, pcscd.readers[0], scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1
        )
        assert hr & 0xFFFFFFFF == scard.SCARD_E_SHARING_VIOLATION
    finally:
        other.release()


def test_close_is_idempotent_and_leaves_the_card_powered(
    pcscd, plug, make_card, transport, apdus
) -> None:
    card = make_card()
    plug(card)
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    power_offs = card.power_offs
    t.close()
    t.close()
    with pytest.raises(TransportClosed):
        t.transmit(apdus.select)
    # SCARD_LEAVE_CARD: the next user finds the card as we left it.
    t2 = transport(pcscd.readers[0])
    assert t2.transmit(apdus.select) == b"\x90\x00"
    assert card.power_offs == power_offs


def test_transport_belongs_to_one_thread(pcscd, plug, make_card, transport, apdus) -> None:
    plug(make_card())
    t = transport(pcscd.readers[0])
    t.transmit(apdus.select)
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            t.transmit(apdus.select)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join(5)
    assert len(errors) == 1
    assert isinstance(errors[0], RuntimeError)
    assert not isinstance(errors[0], TransportError)

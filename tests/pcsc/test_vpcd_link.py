"""VpcdLink through the real pcscd: framing, latency, controls, faults, reconnects."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from smartcard import scard

from card.pcsc import PcscContext
from simulator.vpcd import VpcdLink

pytestmark = pytest.mark.pcsc


class RawCard:
    """A bare pyscard connection (no PcscTransport) so link tests stand alone."""

    def __init__(self, reader: str) -> None:
        self.ctx = PcscContext()
        hr, self.handle, self.protocol = scard.SCardConnect(
            self.ctx.handle, reader, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1
        )
        assert hr == scard.SCARD_S_SUCCESS, scard.SCardGetErrorMessage(hr)

    def transmit(self, apdu: bytes) -> tuple[int, bytes]:
        hr, response = scard.SCardTransmit(self.handle, self.protocol, list(apdu))
        return hr & 0xFFFFFFFF, bytes(response) if hr == 0 else b""

    def close(self, disposition: int = scard.SCARD_LEAVE_CARD) -> None:
        scard.SCardDisconnect(self.handle, disposition)
        self.ctx.release()


@pytest.fixture
def raw(pcscd) -> Iterator[type[RawCard]]:
    opened: list[RawCard] = []

    class _Raw(RawCard):
        def __init__(self, reader: str) -> None:
            super().__init__(reader)
            opened.append(self)

    yield _Raw
    for card in opened:
        card.close()


def test_apdus_reach_the_card_and_back(pcscd, plug, make_card, raw, apdus) -> None:
    card = make_card()
    link = plug(card)
    conn = raw(pcscd.readers[0])

    assert conn.transmit(apdus.select) == (0, b"\x90\x00")
    hr, response = conn.transmit(apdus.counter)
    assert hr == 0
    assert response == card.processed.to_bytes(4, "big") + b"\x90\x00"
    assert conn.transmit(bytes.fromhex("00A4040003010203")) == (0, b"\x6a\x82")
    assert link.apdus_handled == card.processed == 3
    assert link.connected
    assert link.connections == 1


def test_latency_trap_is_avoided(pcscd, plug, make_card, raw, apdus) -> None:
    # Nagle + delayed ACK would cap this at ~21 APDU/s (300 APDUs: ~14 s).
    plug(make_card())
    conn = raw(pcscd.readers[0])
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        hr, _response = conn.transmit(apdus.counter)
        assert hr == 0
    rate = n / (time.perf_counter() - start)
    assert rate > 500, f"only {rate:.0f} APDU/s through vpcd: latency trap?"


def test_long_frames_both_ways(pcscd, plug, raw) -> None:
    class BigCard:
        atr = bytes.fromhex("3B8180018080")

        def power_on(self) -> None: ...
        def power_off(self) -> None: ...
        def reset(self) -> None: ...

        def process(self, apdu: bytes) -> bytes:
            # Echo an extended-length command's data back: frames of ~4 KiB each way.
            return apdu[7:] + b"\x90\x00"

    plug(BigCard())
    conn = raw(pcscd.readers[0])
    data = bytes(i & 0xFF for i in range(4000))
    apdu = b"\x00\xda\x00\x00\x00" + len(data).to_bytes(2, "big") + data
    hr, response = conn.transmit(apdu)
    assert hr == 0
    assert response == data + b"\x90\x00"


def test_card_exception_answers_6f00_and_link_survives(pcscd, plug, make_card, raw, apdus) -> None:
    card = make_card()
    link = plug(card)
    conn = raw(pcscd.readers[0])

    assert conn.transmit(apdus.failing) == (0, b"\x6f\x00")
    assert conn.transmit(apdus.select) == (0, b"\x90\x00")
    assert link.process_errors == 1
    assert link.connections == 1  # same connection: the link did not drop


def test_power_controls_reach_the_card(pcscd, plug, make_card, raw, apdus) -> None:
    card = make_card()
    plug(card)
    assert card.power_ons >= 1  # pcscd powers a new card up
    resets = card.resets
    conn = raw(pcscd.readers[0])
    hr, _protocol = scard.SCardReconnect(
        conn.handle, scard.SCARD_SHARE_SHARED, scard.SCARD_PROTOCOL_T1, scard.SCARD_RESET_CARD
    )
    assert hr == 0
    assert card.resets == resets + 1
    power_offs = card.power_offs
    conn.close(scard.SCARD_UNPOWER_CARD)
    deadline = time.monotonic() + 2
    while card.power_offs == power_offs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert card.power_offs == power_offs + 1


def test_remove_and_insert(pcscd, plug, make_card, watch) -> None:
    link = plug(make_card())
    link.remove()
    assert not link.inserted
    assert watch.empty(pcscd.readers[0]) < 1.0
    link.insert()
    assert link.wait_connected(2.0)
    assert watch.present(pcscd.readers[0]) < 1.0
    assert link.connections == 2


def test_remove_after_n_apdus_drops_mid_exchange(pcscd, plug, make_card, raw, apdus) -> None:
    card = make_card()
    link = plug(card)
    conn = raw(pcscd.readers[0])
    link.remove_after(2)
    assert conn.transmit(apdus.select)[0] == 0
    assert conn.transmit(apdus.counter)[0] == 0
    processed = card.processed
    hr, response = conn.transmit(apdus.counter)  # the link drops instead of answering
    assert (hr, response) in {(0, b""), (scard.SCARD_E_NOT_TRANSACTED, b"")}
    assert card.processed == processed  # the card never saw it
    assert not link.inserted
    assert link.wait_disconnected(1.0)


def test_remove_when_predicate_pulls_card_during_signature(
    pcscd, plug, make_card, raw, apdus, watch
) -> None:
    card = make_card()
    link = plug(card)
    conn = raw(pcscd.readers[0])
    link.remove_when(lambda apdu: apdu[1] == 0x2A)
    assert conn.transmit(apdus.select) == (0, b"\x90\x00")
    hr, response = conn.transmit(apdus.pso)
    assert (hr, response) in {(0, b""), (scard.SCARD_E_NOT_TRANSACTED, b"")}
    assert not link.inserted
    watch.empty(pcscd.readers[0])


def test_reconnects_after_pcscd_restart(pcscd, plug, make_card, watch, apdus) -> None:
    card = make_card()
    link = plug(card)
    pcscd.kill()
    assert link.wait_disconnected(2.0)
    assert link.inserted  # still wanted in: the link keeps trying
    pcscd.start()
    assert link.wait_connected(5.0)
    watch.present(pcscd.readers[0], timeout=5.0)
    assert link.connections == 2
    conn = RawCard(pcscd.readers[0])
    try:
        assert conn.transmit(apdus.select) == (0, b"\x90\x00")
    finally:
        conn.close()


def test_empty_atr_is_refused() -> None:
    class NoAtr:
        atr = b""

        def power_on(self) -> None: ...
        def power_off(self) -> None: ...
        def reset(self) -> None: ...
        def process(self, apdu: bytes) -> bytes:
            return b"\x90\x00"

    with pytest.raises(ValueError, match="ATR"):
        VpcdLink(NoAtr(), port=1).start()


def _opensc(*args: str) -> str:
    return subprocess.run(
        ["opensc-tool", *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


@pytest.mark.skipif(shutil.which("opensc-tool") is None, reason="opensc-tool not installed")
def test_third_party_client_sees_a_proper_card(pcscd, plug, make_card) -> None:
    card = make_card(label=b"opensc-ok")
    plug(card, slot=1)

    # "Nr.  Card  Features  Name" table: find our reader's index, see the card in it.
    listing = _opensc("--list-readers")
    row = re.search(rf"^(\d+)\s+(Yes|No)\s+.*{re.escape(pcscd.readers[1])}$", listing, re.M)
    assert row, listing
    index, has_card = row.groups()
    assert has_card == "Yes"

    assert _opensc("--reader", index, "--atr").strip().lower() == card.atr.hex(":")

    out = _opensc(
        "--reader", index, "-s", "00 A4 04 00 08 A0 00 00 00 03 45 43 48", "-s", "00 CA 00 00 04"
    )
    assert out.count("Received (SW1=0x90, SW2=0x00)") == 2, out
    # GET DATA answers with the card's APDU counter (opensc's own probing APDUs count).
    data = re.search(r"SW2=0x00\):\s*\n((?:[0-9A-F]{2} ){4})", out)
    assert data, out
    assert int(data.group(1).replace(" ", ""), 16) == card.processed

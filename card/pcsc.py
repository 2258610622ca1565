"""`Transport` over PC/SC (pyscard's low-level `smartcard.scard` API -> pcscd).

Why the low-level API: pyscard's high-level connection objects open one context per
connection, default to SCARD_UNPOWER_CARD on disconnect and fall back to shared mode
on reconnect. Here every choice is explicit: one context, established by and used from
one owning thread (pcsc-lite wants that); SCARD_SHARE_EXCLUSIVE on every (re)connect;
a deliberate disconnect disposition.

Failure model. Every PC/SC result is mapped to a typed `TransportError` (keeping the
result in `.code`) and the transport puts itself in a state from which the *next*
call can work:

- card removed / missing, reader gone -> drop the card handle; the next call selects a
  reader and connects again (a new card means a new `generation`).
- card reset by someone else -> reconnect with SCARD_LEAVE_CARD at once, bump
  `generation`, raise `CardReset`: the next call works, but the caller knows the card's
  security state (selected application, verified PIN) is gone.
- pcscd went away (stopped, restarted) -> drop the context; the next call establishes
  a new one and reconnects (new `generation`).

The call that saw the failure always raises; it is never replayed here. The command may
or may not have reached the card (a VERIFY may have spent a PIN try, a PSO may have
signed), and after a reconnect it would run in a fresh card session without the
selected application or verified PIN it was meant for. Only the layer that knows the
command's meaning can decide to redo the whole sequence, using `generation`.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from smartcard import scard

from card.errors import (
    CardMissing,
    CardRemoved,
    CardReset,
    ReaderBusy,
    ReaderMissing,
    ServiceUnavailable,
    Timeout,
    TransportClosed,
    TransportError,
)

ReaderSelector = str | re.Pattern[str] | None
AtrFilter = Callable[[bytes], bool]

PROTOCOLS_T0_T1: int = scard.SCARD_PROTOCOL_T0 | scard.SCARD_PROTOCOL_T1

# F_COMM_ERROR is what a call blocked inside pcscd gets when the daemon dies under it.
_SERVICE_GONE = frozenset(
    {scard.SCARD_E_NO_SERVICE, scard.SCARD_E_SERVICE_STOPPED, scard.SCARD_F_COMM_ERROR}
)
_READER_GONE = frozenset(
    {
        scard.SCARD_E_NO_READERS_AVAILABLE,
        scard.SCARD_E_UNKNOWN_READER,
        scard.SCARD_E_READER_UNAVAILABLE,
    }
)


def _u32(hr: int) -> int:
    # pyscard may hand back results as negative C longs on some platforms.
    return hr & 0xFFFFFFFF


def error_for_result(hr: int, doing: str) -> TransportError:
    """The typed error for a failed PC/SC result (`.code` keeps the result)."""
    hr = _u32(hr)
    text = f"{doing}: {scard.SCardGetErrorMessage(hr)} (0x{hr:08X})"
    if hr in _SERVICE_GONE:
        return ServiceUnavailable(text, code=hr)
    if hr in _READER_GONE:
        return ReaderMissing(text, code=hr)
    if hr == scard.SCARD_E_NO_SMARTCARD:
        return CardMissing(text, code=hr)
    if hr == scard.SCARD_W_REMOVED_CARD:
        return CardRemoved(text, code=hr)
    if hr == scard.SCARD_W_RESET_CARD:
        return CardReset(text, code=hr)
    if hr == scard.SCARD_E_SHARING_VIOLATION:
        return ReaderBusy(text, code=hr)
    if hr == scard.SCARD_E_TIMEOUT:
        return Timeout(text, code=hr)
    return TransportError(text, code=hr)


class PcscContext:
    """One PC/SC resource-manager context, bound to the thread that established it.

    pcsc-lite serialises calls per context and expects one context per thread; a
    context used from two threads ends with one of them blocked behind the other.
    The only call allowed from other threads is `cancel()` (that is SCardCancel's job).
    """

    def __init__(self) -> None:
        hr, handle = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        if _u32(hr) != scard.SCARD_S_SUCCESS:
            raise error_for_result(hr, "SCardEstablishContext")
        self.handle: int = handle
        self._owner = threading.get_ident()
        self._released = False

    @property
    def owner(self) -> int:
        """The thread ident this context belongs to."""
        return self._owner

    def check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise RuntimeError("PC/SC context used outside the thread that owns it")

    def list_readers(self) -> list[str]:
        self.check_thread()
        hr, readers = scard.SCardListReaders(self.handle, [])
        hr = _u32(hr)
        if hr == scard.SCARD_E_NO_READERS_AVAILABLE:
            return []
        if hr != scard.SCARD_S_SUCCESS:
            raise error_for_result(hr, "SCardListReaders")
        return list(readers)

    def get_status_change(
        self, timeout_ms: int, states: list[tuple[str, int]]
    ) -> tuple[int, list[tuple[str, int, bytes]]]:
        """SCardGetStatusChange; returns the raw result so callers can treat
        SCARD_E_TIMEOUT and SCARD_E_CANCELLED as normal outcomes."""
        self.check_thread()
        hr, new_states = scard.SCardGetStatusChange(self.handle, timeout_ms, states)
        hr = _u32(hr)
        if hr != scard.SCARD_S_SUCCESS:
            return hr, []
        return hr, [(name, state, bytes(atr)) for name, state, atr in new_states]

    def cancel(self) -> None:
        """Wake a blocked SCardGetStatusChange. Safe from any thread."""
        if not self._released:
            scard.SCardCancel(self.handle)

    def release(self) -> None:
        if not self._released:
            self._released = True
            scard.SCardReleaseContext(self.handle)  # result ignored: pcscd may be gone


def _status_atr(handle: int) -> tuple[int, bytes]:
    hr, _reader, _state, _protocol, atr = scard.SCardStatus(handle)
    return _u32(hr), bytes(atr)


def list_readers() -> list[str]:
    """Names of the readers pcscd knows now (a short-lived context in this thread)."""
    ctx = PcscContext()
    try:
        return ctx.list_readers()
    finally:
        ctx.release()


@dataclass(frozen=True, slots=True)
class _Card:
    handle: int
    reader: str
    protocol: int
    atr: bytes


class PcscTransport:
    """A `card.transport.Transport` on one PC/SC reader.

    `reader`: an exact reader name, a compiled regex (searched in the names), or None
    for the first reader that holds a card. With `accept_atr`, readers whose card's
    ATR it accepts are preferred (the E-Port layer uses that to skip bank cards);
    otherwise the first card wins and the profile layer decides.

    Nothing talks to pcscd before the first call (`connect()`, `atr`, `transmit`,
    `reset`); that call binds the transport to its thread. Not thread-safe, by design.
    """

    def __init__(
        self,
        reader: ReaderSelector = None,
        *,
        accept_atr: AtrFilter | None = None,
        disposition: int = scard.SCARD_LEAVE_CARD,
        share_mode: int = scard.SCARD_SHARE_EXCLUSIVE,
        protocols: int = PROTOCOLS_T0_T1,
        removal_grace_ms: int = 1500,
    ) -> None:
        self._selector = reader
        self._accept_atr = accept_atr
        self._disposition = disposition
        self._share_mode = share_mode
        self._protocols = protocols
        # How long to wait for pcscd to confirm a removal after a transmit came back
        # empty (vpcd / a reader dropped mid-APDU); pcscd polls presence every ~0.4 s.
        self._removal_grace_ms = removal_grace_ms
        self._ctx: PcscContext | None = None
        self._card: _Card | None = None
        self._generation = 0
        self._closed = False

    # --- Transport protocol --------------------------------------------------------

    @property
    def atr(self) -> bytes:
        return self._ensure_card().atr

    @property
    def generation(self) -> int:
        return self._generation

    def transmit(self, apdu: bytes) -> bytes:
        # The per-APDU path stays short: through pcscd the host's CPU time between two
        # APDUs costs throughput several times over (bench/bench_pcsc.py).
        card, ctx = self._card, self._ctx
        if card is None or ctx is None or self._closed or threading.get_ident() != ctx.owner:
            card = self._ensure_card()
        hr, response = scard.SCardTransmit(card.handle, card.protocol, list(apdu))
        if hr == 0 and len(response) >= 2:
            return bytes(response)
        hr = _u32(hr)
        if hr in (scard.SCARD_S_SUCCESS, scard.SCARD_E_NOT_TRANSACTED):
            # The reader lost the card mid-APDU: pcsc-lite reports success with no
            # bytes (vpcd) or NOT_TRANSACTED; pcscd learns of the removal only at its
            # next presence poll, so ask it (event-driven, bounded) what happened.
            raise self._diagnose_lost_exchange(card, hr)
        raise self._failed(hr, "SCardTransmit")

    def reset(self) -> None:
        card = self._ensure_card()
        self._reconnect(card, scard.SCARD_RESET_CARD)

    def close(self) -> None:
        """Disconnect with the configured disposition and release the context."""
        if self._closed:
            return
        if self._ctx is not None:
            self._ctx.check_thread()
        self._closed = True
        if self._card is not None:
            scard.SCardDisconnect(self._card.handle, self._disposition)
            self._card = None
        self._drop_context()

    # --- extras --------------------------------------------------------------------

    def connect(self) -> None:
        """Connect now (otherwise the first call does). Raises like `transmit`."""
        self._ensure_card()

    @property
    def reader(self) -> str | None:
        """The reader currently connected, if any."""
        return None if self._card is None else self._card.reader

    @property
    def connected(self) -> bool:
        return self._card is not None

    def __enter__(self) -> PcscTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- connection management -----------------------------------------------------

    def _ensure_card(self) -> _Card:
        if self._closed:
            raise TransportClosed("transport closed")
        ctx = self._ctx_checked()
        if self._card is not None:
            return self._card
        reader = self._select_reader(ctx)
        hr, handle, protocol = scard.SCardConnect(
            ctx.handle, reader, self._share_mode, self._protocols
        )
        hr = _u32(hr)
        if hr == scard.SCARD_W_REMOVED_CARD:
            hr = scard.SCARD_E_NO_SMARTCARD  # nothing was connected yet to be removed
        if hr != scard.SCARD_S_SUCCESS:
            raise self._failed(hr, f"SCardConnect({reader!r})")
        hr, atr = _status_atr(handle)
        if hr != scard.SCARD_S_SUCCESS:
            scard.SCardDisconnect(handle, scard.SCARD_LEAVE_CARD)
            raise self._failed(hr, "SCardStatus")
        self._card = _Card(handle, reader, protocol, atr)
        self._generation += 1
        return self._card

    def _ctx_checked(self) -> PcscContext:
        if self._ctx is None:
            self._ctx = PcscContext()  # raises ServiceUnavailable when pcscd is down
        else:
            self._ctx.check_thread()
        return self._ctx

    def _select_reader(self, ctx: PcscContext) -> str:
        try:
            readers = ctx.list_readers()
        except TransportError as e:
            raise self._after_error(e) from None
        if not readers:
            raise ReaderMissing("no smart-card reader", code=scard.SCARD_E_NO_READERS_AVAILABLE)
        selector = self._selector
        if isinstance(selector, str):
            if selector not in readers:
                raise ReaderMissing(
                    f"reader {selector!r} not found", code=scard.SCARD_E_UNKNOWN_READER
                )
            return selector  # an empty reader: SCardConnect says NO_SMARTCARD
        if isinstance(selector, re.Pattern):
            readers = [r for r in readers if selector.search(r)]
            if not readers:
                raise ReaderMissing(
                    f"no reader matches {selector.pattern!r}", code=scard.SCARD_E_UNKNOWN_READER
                )
        if len(readers) == 1:
            return readers[0]
        return self._first_reader_with_card(ctx, readers)

    def _first_reader_with_card(self, ctx: PcscContext, readers: list[str]) -> str:
        hr, states = ctx.get_status_change(0, [(r, scard.SCARD_STATE_UNAWARE) for r in readers])
        if hr != scard.SCARD_S_SUCCESS:
            raise self._failed(hr, "SCardGetStatusChange")
        with_card = [
            (name, atr) for name, state, atr in states if state & scard.SCARD_STATE_PRESENT
        ]
        if not with_card:
            raise CardMissing("no card in any reader", code=scard.SCARD_E_NO_SMARTCARD)
        if self._accept_atr is not None:
            for name, atr in with_card:
                if self._accept_atr(atr):
                    return name
        return with_card[0][0]

    def _reconnect(self, card: _Card, initialization: int) -> None:
        hr = self._try_reconnect(card, initialization)
        if hr != scard.SCARD_S_SUCCESS:
            raise self._failed(hr, "SCardReconnect")

    def _try_reconnect(self, card: _Card, initialization: int) -> int:
        # share_mode is passed again on purpose: a reconnect must stay exclusive.
        hr, protocol = scard.SCardReconnect(
            card.handle, self._share_mode, self._protocols, initialization
        )
        hr = _u32(hr)
        if hr != scard.SCARD_S_SUCCESS:
            return hr
        hr, atr = _status_atr(card.handle)
        if hr != scard.SCARD_S_SUCCESS:
            return hr
        self._card = _Card(card.handle, card.reader, protocol, atr)
        self._generation += 1
        return hr

    # --- failure handling ----------------------------------------------------------

    def _failed(self, hr: int, doing: str) -> TransportError:
        return self._after_error(error_for_result(hr, doing))

    def _after_error(self, error: TransportError) -> TransportError:
        """Put the transport in a state where the next call can succeed; return the
        error for the current call to raise."""
        if isinstance(error, ServiceUnavailable):
            self._card = None  # its handle died with the old pcscd
            self._drop_context()
        elif isinstance(error, CardReset):
            card = self._card
            # Not _reconnect(): a second RESET_CARD must not recurse back here.
            if card is not None and self._try_reconnect(card, scard.SCARD_LEAVE_CARD):
                self._drop_card()  # could not keep the handle: next call starts over
        elif (
            isinstance(error, (CardRemoved, CardMissing, ReaderMissing))
            or error.code == scard.SCARD_E_INVALID_HANDLE
        ):
            self._drop_card()
        return error

    def _diagnose_lost_exchange(self, card: _Card, hr: int) -> TransportError:
        ctx = self._ctx_checked()
        rc, states = ctx.get_status_change(0, [(card.reader, scard.SCARD_STATE_UNAWARE)])
        if rc == scard.SCARD_S_SUCCESS and states[0][1] & scard.SCARD_STATE_PRESENT:
            # Still believed present: wait (bounded) for pcscd's next presence poll.
            known = states[0][1] & ~scard.SCARD_STATE_CHANGED
            rc, states = ctx.get_status_change(self._removal_grace_ms, [(card.reader, known)])
            if rc == scard.SCARD_E_TIMEOUT:
                # Same card, still there: it just did not answer. Reconnect next time.
                self._drop_card()
                return TransportError(
                    f"SCardTransmit: the card gave no response (0x{hr:08X})", code=hr
                )
        if rc == scard.SCARD_S_SUCCESS:
            # Now absent, or present with a new insertion count: the card we were
            # talking to was pulled either way.
            return self._failed(scard.SCARD_W_REMOVED_CARD, "SCardTransmit")
        return self._failed(rc, "SCardGetStatusChange")

    def _drop_card(self) -> None:
        if self._card is not None:
            scard.SCardDisconnect(self._card.handle, scard.SCARD_LEAVE_CARD)
            self._card = None

    def _drop_context(self) -> None:
        if self._ctx is not None:
            self._ctx.release()
            self._ctx = None

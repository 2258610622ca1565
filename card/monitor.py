"""Reader and card events from SCardGetStatusChange, one blocking step at a time.

`CardMonitor.poll()` is meant to run in the thread that owns the reader, interleaved
with card jobs: poll a little, run the queued jobs, poll again. A `cancel()` from
another thread (SCardCancel) cuts a poll short when a job arrives. pyscard's own
CardMonitor/ReaderMonitor run observers on their own threads and the reader monitor
dies on its first error; a loop we drive ourselves is easier to reason about.

Reader arrivals and departures come from the `\\\\?PnP?\\Notification` pseudo-reader.
When pcscd goes away, the monitor reports every card and reader as removed, then
re-establishes its context on later polls and reports what it finds as added.

Events reach asyncio through `AsyncEventBridge` (loop.call_soon_threadsafe); no PC/SC
call ever runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from smartcard import scard

from card.errors import ServiceUnavailable
from card.pcsc import PcscContext, error_for_result

log = logging.getLogger(__name__)

PNP_NOTIFICATION = "\\\\?PnP?\\Notification"

EventKind = Literal["reader_added", "reader_removed", "card_inserted", "card_removed"]

_READER_INVALID = scard.SCARD_STATE_UNKNOWN | scard.SCARD_STATE_IGNORE
# Bits of a reader state worth remembering; CHANGED is per-call news, not state.
_KEEP = ~scard.SCARD_STATE_CHANGED & 0xFFFFFFFF
# Without PnP support, re-list readers at least this often.
_RELIST_MS = 1000


@dataclass(frozen=True, slots=True)
class CardEvent:
    """`atr`: the card's ATR for card events (for card_removed: the card that left);
    None for reader events."""

    kind: EventKind
    reader: str
    atr: bytes | None


def _event_count(state: int) -> int:
    # pcsc-lite keeps a per-reader insertion/removal counter in the high 16 bits; it
    # moves even when a card was pulled and put back between two polls.
    return (state >> 16) & 0xFFFF


@dataclass(slots=True)
class _Reader:
    state: int = scard.SCARD_STATE_UNAWARE
    atr: bytes | None = None  # None: no card


class CardMonitor:
    """Tracks readers and cards; `poll()` returns what changed since the last poll.

    The first successful poll reports the current situation (`reader_added` for each
    reader, `card_inserted` for each card) unless `initial_events` is False; after
    that only changes. Not thread-safe except `cancel()`.
    """

    def __init__(self, *, initial_events: bool = True) -> None:
        self._initial_events = initial_events
        self._readers: dict[str, _Reader] = {}
        self._pnp_state = scard.SCARD_STATE_UNAWARE
        self._pnp_supported = True
        self._synced = False  # reader list known for the current context
        self._ever_synced = False
        self._ctx: PcscContext | None = None
        self._ctx_lock = threading.Lock()  # only guards the swap vs. cancel()
        self._cancelled = threading.Event()
        self._closed = False
        self._available = False

    # --- public --------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether pcscd answered the last poll."""
        return self._available

    def readers(self) -> dict[str, bytes | None]:
        """Known readers -> ATR of the card in it (None when empty)."""
        return {name: r.atr for name, r in self._readers.items()}

    def poll(self, timeout_ms: int) -> list[CardEvent]:
        """Block up to `timeout_ms` for changes; return them (maybe none).

        Never raises for pcscd being down: that shows as removal events, `available`
        False, and a wait of `timeout_ms` before the next attempt. Other unexpected
        PC/SC results raise `TransportError`.
        """
        if self._closed:
            raise RuntimeError("CardMonitor closed")
        if self._cancelled.is_set():
            self._cancelled.clear()
            return []
        try:
            ctx = self._context()
            if not self._synced:
                self._synced = True  # before: _sync_readers may ask for another round
                events = self._sync_readers(ctx)
                if not self._ever_synced:
                    self._ever_synced = True
                    if not self._initial_events:
                        events = []
                if events:
                    return events
            return self._wait_for_change(ctx, timeout_ms)
        except ServiceUnavailable as e:
            return self._lose_service(e, timeout_ms)

    def cancel(self) -> None:
        """Make the current (or next) `poll()` return early. Any thread.

        SCardCancel only wakes a call in progress; the flag covers a cancel that
        comes before the poll. One that lands between the flag check and the
        blocking call waits out that poll's timeout, so keep timeouts bounded.
        """
        self._cancelled.set()
        with self._ctx_lock:
            ctx = self._ctx
        # Outside the lock: SCardCancel can block for as long as pcscd does not answer,
        # and the polling thread needs the lock to swap contexts.
        if ctx is not None:
            ctx.cancel()

    def close(self) -> None:
        """Release the context. Idempotent; call from the polling thread."""
        self._closed = True
        self._release_context()

    # --- context -------------------------------------------------------------------

    def _context(self) -> PcscContext:
        if self._ctx is None:
            ctx = PcscContext()  # ServiceUnavailable when pcscd is down
            with self._ctx_lock:
                self._ctx = ctx
            self._synced = False
            if not self._available:
                log.info("PC/SC service available")
        self._available = True
        return self._ctx

    def _release_context(self) -> None:
        with self._ctx_lock:
            ctx, self._ctx = self._ctx, None
        if ctx is not None:
            ctx.release()

    def _lose_service(self, error: ServiceUnavailable, timeout_ms: int) -> list[CardEvent]:
        was_available = self._available
        self._available = False
        self._release_context()
        events: list[CardEvent] = []
        for name in list(self._readers):
            events.extend(self._forget(name))
        self._pnp_state = scard.SCARD_STATE_UNAWARE
        if was_available:
            log.warning("PC/SC service lost: %s", error)
            return events
        # Still down: pace the retries without spinning (cancel() cuts this short).
        self._cancelled.wait(timeout_ms / 1000)
        self._cancelled.clear()
        return events

    # --- readers -------------------------------------------------------------------

    def _sync_readers(self, ctx: PcscContext) -> list[CardEvent]:
        names = ctx.list_readers()
        events: list[CardEvent] = []
        for name in [n for n in self._readers if n not in names]:
            events.extend(self._forget(name))
        new = [n for n in names if n not in self._readers]
        if not new:
            return events
        hr, states = ctx.get_status_change(0, [(n, scard.SCARD_STATE_UNAWARE) for n in new])
        if hr == scard.SCARD_E_UNKNOWN_READER:
            self._synced = False  # one of them left already; look again next poll
            return events
        if hr != scard.SCARD_S_SUCCESS:
            raise error_for_result(hr, "SCardGetStatusChange")
        for name, state, atr in states:
            self._readers[name] = _Reader()
            events.append(CardEvent("reader_added", name, None))
            events.extend(self._update(name, state, atr))
        return events

    def _forget(self, name: str) -> list[CardEvent]:
        reader = self._readers.pop(name)
        events = []
        if reader.atr is not None:
            events.append(CardEvent("card_removed", name, reader.atr))
        events.append(CardEvent("reader_removed", name, None))
        return events

    def _update(self, name: str, state: int, atr: bytes) -> list[CardEvent]:
        reader = self._readers[name]
        old_state, old_atr = reader.state, reader.atr
        reader.state = state & _KEEP
        present = bool(state & scard.SCARD_STATE_PRESENT)
        reader.atr = atr if present else None
        events: list[CardEvent] = []
        if old_atr is not None and (
            not present or _event_count(state) != _event_count(old_state) or atr != old_atr
        ):
            events.append(CardEvent("card_removed", name, old_atr))
            old_atr = None
        if present and old_atr is None:
            events.append(CardEvent("card_inserted", name, atr))
        return events

    # --- waiting -------------------------------------------------------------------

    def _wait_for_change(self, ctx: PcscContext, timeout_ms: int) -> list[CardEvent]:
        states = [(name, r.state) for name, r in self._readers.items()]
        if self._pnp_supported:
            states.append((PNP_NOTIFICATION, self._pnp_state))
        else:
            timeout_ms = min(timeout_ms, _RELIST_MS)
        if not states:
            # No readers and no PnP: nothing to block on but time.
            self._cancelled.wait(timeout_ms / 1000)
            self._cancelled.clear()
            self._synced = False
            return []
        hr, new_states = ctx.get_status_change(timeout_ms, states)
        if hr == scard.SCARD_E_CANCELLED:
            self._cancelled.clear()
            return []
        if hr == scard.SCARD_E_TIMEOUT:
            if not self._pnp_supported:
                self._synced = False
                return self._sync_readers(ctx)
            return []
        if hr == scard.SCARD_E_UNKNOWN_READER:
            self._synced = False  # a reader left between listing and waiting
            return self._sync_readers(ctx)
        if hr != scard.SCARD_S_SUCCESS:
            # ServiceUnavailable is handled by poll(); anything else is unexpected.
            raise error_for_result(hr, "SCardGetStatusChange")
        return self._apply(ctx, new_states)

    def _apply(self, ctx: PcscContext, new_states: list[tuple[str, int, bytes]]) -> list[CardEvent]:
        events: list[CardEvent] = []
        relist = False
        for name, state, atr in new_states:
            if name == PNP_NOTIFICATION:
                if state & scard.SCARD_STATE_UNKNOWN:
                    log.info("pcscd has no PnP notification; re-listing readers instead")
                    self._pnp_supported = False
                elif state & scard.SCARD_STATE_CHANGED:
                    relist = True
                self._pnp_state = state & _KEEP
            elif state & _READER_INVALID:
                relist = True  # reader gone; _sync_readers reports it
            elif state & scard.SCARD_STATE_CHANGED:
                events.extend(self._update(name, state, atr))
        if relist:
            events.extend(self._sync_readers(ctx))
        return events


class AsyncEventBridge:
    """Hands `CardEvent`s from the owner thread to an asyncio loop.

    Create it on the loop (or pass the loop). `publish()` is called on the owner
    thread and only schedules work with `call_soon_threadsafe`; consumers `await
    get()` or iterate with `async for`, and/or pass a `sink` run on the loop.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        sink: Callable[[CardEvent], object] | None = None,
    ) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()
        self._queue: asyncio.Queue[CardEvent] = asyncio.Queue()
        self._sink = sink

    def publish(self, events: Iterable[CardEvent]) -> None:
        batch = list(events)
        if not batch:
            return
        try:
            self._loop.call_soon_threadsafe(self._deliver, batch)
        except RuntimeError:
            # The loop is closed: the service is shutting down, nobody is listening.
            log.debug("event loop closed; dropped %d card events", len(batch))

    def _deliver(self, batch: list[CardEvent]) -> None:
        for event in batch:
            self._queue.put_nowait(event)
            if self._sink is not None:
                try:
                    self._sink(event)
                except Exception:
                    log.exception("card event sink failed")

    async def get(self) -> CardEvent:
        return await self._queue.get()

    def get_nowait(self) -> CardEvent:
        return self._queue.get_nowait()

    def __aiter__(self) -> AsyncEventBridge:
        return self

    async def __anext__(self) -> CardEvent:
        return await self._queue.get()

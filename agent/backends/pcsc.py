"""A real reader through pcscd (`card.pcsc.PcscTransport` + `card.monitor.CardMonitor`),
with the driver for each card chosen by the driver registry (`card.registry`)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.backends import BackendEvent, SessionFactory, eport_session
from card.errors import CardError, CardMissing, TransportError, UnsupportedCard
from card.identify import (
    DriverInfo,
    IdentifyReport,
    RegistryReport,
    atr_report,
    select_report,
    skf_report,
)
from card.registry import DriverEntry, Match, Observation, Registry, SkfLibraryDriver

if TYPE_CHECKING:
    from card.eport.driver import CardDriver
    from card.skf.binding import SkfLibrary
    from card.skf.driver import SkfDriver
    from card.transport import Transport

log = logging.getLogger(__name__)


class PcscBackend:
    """A real reader through pcscd (`card.pcsc.PcscTransport` + `card.monitor.CardMonitor`).

    `reader`: a pattern the reader's name must contain (`CardConfig.reader_pattern()`),
    or None for the first reader holding a card (a kiosk has one). With a pattern,
    events for other readers are ignored.

    Drivers: the card's ATR and reader name are looked up in `registry` (first match
    wins). An `eport-apdu` entry gets our APDU profile over this connection; an `skf`
    entry gets its vendor library, after our connection is released (the library
    opens its own, and ours is exclusive). With no match the built-in APDU profile is
    tried all the same (a card of ours with an ATR nobody listed); a card that does
    not answer it is an UnsupportedCard that says so and points to `card identify`.

    Waking: `wake()` only flags the request and returns; a waker thread of this backend
    makes the `CardMonitor.cancel()` call (SCardCancel; the monitor remembers a cancel
    that lands between polls). pcsc-lite's SCardCancel opens a new connection to pcscd
    and waits for its answer without a timeout, so a stopped pcscd holds the caller:
    that must never be the event loop. The monitor and the transport are created on
    the first call from the owner thread: pcsc-lite binds a context to its thread.
    """

    def __init__(
        self,
        reader: re.Pattern[str] | None = None,
        *,
        open_session: SessionFactory = eport_session,
        transport_factory: Callable[[re.Pattern[str] | None], Transport] | None = None,
        monitor_factory: Callable[[], Any] | None = None,
        registry: Registry | None = None,
        skf_library_factory: Callable[[Path], SkfLibrary] | None = None,
    ) -> None:
        self.reader = reader
        self.registry = registry
        self._open_session = open_session
        self._skf_library_factory = skf_library_factory or _skf_library
        self._skf_libraries: dict[Path, SkfLibrary] = {}  # loaded on first use, kept
        self._skf_driver: SkfDriver | None = None  # while an skf entry's driver is open
        self._info: DriverInfo | None = None
        self._transport_factory = transport_factory or _pcsc_transport
        self._monitor_factory = monitor_factory or _pcsc_monitor
        self._lock = threading.Lock()
        self._transport: Transport | None = None
        self._monitor: Any = None  # card.monitor.CardMonitor, created in the owner thread
        self._wake_pending = False
        self._closed = False
        self._cancel_requested = threading.Event()
        self._waker: threading.Thread | None = None

    def open_driver(self) -> CardDriver:
        self.drop_driver()
        transport = self._transport_factory(self.reader)
        try:
            if self.registry is None:  # nothing to choose from: our profile
                driver = self._open_session(transport)
                self._info = DriverInfo("eport-apdu", "the built-in APDU profile (no registry)")
            else:
                atr = transport.atr  # connects: CardMissing, ReaderMissing, ...
                reader = _reader_of(transport)
                match = self._match(atr, reader)
                entry = match.entry
                if entry is not None and isinstance(entry.driver, SkfLibraryDriver):
                    _close_quietly(transport)  # the vendor library connects by itself
                    return self._open_skf(entry, entry.driver, reader)
                driver = self._open_apdu(transport, match, atr, reader)
        except BaseException:
            _close_quietly(transport)
            raise
        self._transport = transport
        return driver

    def _match(self, atr: bytes, reader: str | None) -> Match:
        if self.registry is None:
            return Match(None, ("no driver registry",))
        return self.registry.match(Observation(atr=atr, reader=reader))

    def _open_apdu(
        self, transport: Transport, match: Match, atr: bytes, reader: str | None
    ) -> CardDriver:
        entry = match.entry
        try:
            driver = self._open_session(transport)
        except UnsupportedCard as exc:
            if entry is not None:
                raise
            raise UnsupportedCard(
                f"no driver registry entry matches this card (ATR {atr.hex(' ').upper()}, "
                f"reader {reader!r}) and it does not answer the built-in E-Port profile "
                f"({exc}); run `card-agent card identify` for a report"
            ) from exc
        if entry is None:
            why = "no registry entry matched; the built-in APDU profile answered"
            self._info = DriverInfo("eport-apdu", why)
        else:
            self._info = DriverInfo(
                "eport-apdu", f"registry entry {entry.name}", entry.name, entry.source
            )
        return driver

    def _open_skf(
        self, entry: DriverEntry, spec: SkfLibraryDriver, reader: str | None
    ) -> CardDriver:
        from agent.backends.skf import open_skf_driver

        library = self._library(spec.library)
        names = [name.text for name in library.enum_dev(True)]
        if not names:
            raise CardMissing(
                f"registry entry {entry.name} sends this card to {spec.library}, which "
                "lists no device"
            )
        # A library over PC/SC usually names its devices after the readers.
        device = reader if reader in names else names[0]
        self._skf_driver, self._info = open_skf_driver(library, entry, spec, device)
        return self._skf_driver

    def _library(self, path: Path) -> SkfLibrary:
        """The vendor library at `path`, loaded (in the owner thread) the first time an
        entry sends a card to it, then kept: libraries are not unloaded."""
        library = self._skf_libraries.get(path)
        if library is None:
            library = self._skf_libraries[path] = self._skf_library_factory(path)
        return library

    def drop_driver(self) -> None:
        self._info = None
        skf, self._skf_driver = self._skf_driver, None
        if skf is not None:
            skf.close()  # ignores errors: the card may be gone
        transport, self._transport = self._transport, None
        if transport is not None:
            _close_quietly(transport)

    def driver_info(self) -> DriverInfo:
        if self._info is None:
            raise CardMissing("no card driver is open")
        return self._info

    def identify(self) -> IdentifyReport:
        self.drop_driver()
        transport = self._transport_factory(self.reader)
        try:
            atr = transport.atr
            reader = _reader_of(transport)
            match = self._match(atr, reader)
            applications = select_report(transport)
        finally:
            _close_quietly(transport)  # before an SKF library looks at the card
        notes: list[str] = []
        skf = None
        entry = match.entry
        if self.registry is not None and entry is not None:
            if isinstance(entry.driver, SkfLibraryDriver):
                try:
                    library = self._library(entry.driver.library)
                except CardError as exc:
                    notes.append(f"registry entry {entry.name}: {exc}")
                else:
                    skf = skf_report(library, self.registry)
        elif self.registry is not None:
            notes.append(
                "no registry entry matches: the agent tries the built-in APDU profile "
                "(its application is the first SELECT below)"
            )
        return IdentifyReport(
            backend="pcsc",
            reader=reader,
            atr=atr_report(atr),
            registry=RegistryReport.from_match(match) if self.registry is not None else None,
            applications=applications,
            skf=skf,
            notes=tuple(notes),
        )

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        with self._lock:
            if self._wake_pending or self._closed:
                self._wake_pending = False
                return []
            monitor = self._monitor
            if monitor is None:
                # pcsc-lite wants one context per thread: create it in the owner thread.
                monitor = self._monitor = self._monitor_factory()
        try:
            raw = monitor.poll(max(0, int(timeout_s * 1000)))
        except TransportError:
            # pcscd went away or restarted: the context is dead, make a new one next time.
            with self._lock:
                self._monitor = None
            _close_quietly(monitor)
            raise
        finally:
            with self._lock:
                self._wake_pending = False
        return [
            BackendEvent(ev.kind, ev.reader, ev.atr)
            for ev in raw
            if self.reader is None or self.reader.search(ev.reader)
        ]

    def wake(self) -> None:
        with self._lock:
            self._wake_pending = True
            if self._monitor is None or self._closed:
                return  # no poll to cut short: the flag covers the next one
            if self._waker is None:
                self._waker = threading.Thread(
                    target=self._waker_main, name="pcsc-waker", daemon=True
                )
                self._waker.start()
        self._cancel_requested.set()

    def _waker_main(self) -> None:
        # Wake-ups that arrive while a cancel is still stuck in pcscd collapse into one.
        while True:
            self._cancel_requested.wait()
            self._cancel_requested.clear()
            with self._lock:
                if self._closed:
                    return
                monitor = self._monitor
            if monitor is not None:
                try:
                    monitor.cancel()
                except Exception as exc:  # a dead context: the poll fails on its own
                    log.debug("SCardCancel failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            monitor, self._monitor = self._monitor, None
        self._cancel_requested.set()  # lets the waker thread see `_closed` and exit
        self.drop_driver()
        if monitor is not None:
            _close_quietly(monitor)


def _reader_of(transport: Transport) -> str | None:
    reader = getattr(transport, "reader", None)  # PcscTransport: the connected reader
    return reader if isinstance(reader, str) else None


def _skf_library(path: Path) -> SkfLibrary:
    from card.skf.binding import SkfLibrary

    return SkfLibrary(path)


def _pcsc_transport(reader: re.Pattern[str] | None) -> Transport:
    from card.pcsc import PcscTransport

    return PcscTransport(reader)


def _pcsc_monitor() -> Any:
    from card.monitor import CardMonitor

    return CardMonitor()


def _close_quietly(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except CardError as exc:
        log.debug("ignoring error on close: %s", exc)

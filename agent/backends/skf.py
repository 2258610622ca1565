"""Keys and cards behind a vendor SKF (GM/T 0016) library (`card.backend = "skf"`).

What the agent calls a reader and a card, for a USB key: the vendor library is the
reader (it is there as long as the agent runs: `reader_added` once, named
`SKF <library file>`), and a device the library lists as present is the card in it
(`card_inserted` when a key is plugged in, `card_removed` when it is pulled). So an
unplugged key reads as "insert the card" (`card_missing`), the same as an empty PC/SC
reader, never as a missing reader, and a pull ends the sessions exactly as a card pull
does. With several devices present, the card is the first one a registry entry
matches (else the first one, which then opens as an unsupported card with the reasons),
and it stays the card until it is pulled.

Which library: the driver registry's enabled `skf` entries that name `devices` (the
only thing this backend can match on). They must all name one library: a kiosk has one
kind of key, and one library's events can be waited for in one thread. Entries for
another library are refused at start (`from_registry`) rather than silently ignored.

Threads: every library call happens in the card owner thread (`poll_events`,
`open_driver`, `identify`, and the driver's own calls), except what
`card.skf.events.SkfDeviceMonitor` does in its alarm thread: SKF_CancelWaitForDevEvent,
the one call GM/T 0016 makes for another thread. `wake()` only flags: it takes the
monitor's lock for an instant and never calls the library, so it never blocks the
event loop, even when the library hangs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.backends import BackendEvent
from card.errors import CardError, CardMissing, UnsupportedCard
from card.identify import DriverInfo, IdentifyReport, skf_report
from card.registry import DriverEntry, Observation, Registry, RegistryError, SkfLibraryDriver
from card.skf.binding import SkfLibrary
from card.skf.driver import SkfDriver, options_for
from card.skf.events import SkfDeviceMonitor

if TYPE_CHECKING:
    from card.eport.driver import CardDriver

log = logging.getLogger(__name__)

MonitorFactory = Callable[[SkfLibrary], SkfDeviceMonitor]


def skf_entries(registry: Registry) -> tuple[DriverEntry, ...]:
    """The entries an SKF backend serves: enabled, `skf`, matching on device names."""
    return tuple(
        e
        for e in registry.entries
        if e.enabled and isinstance(e.driver, SkfLibraryDriver) and e.devices
    )


def open_skf_driver(
    library: SkfLibrary, entry: DriverEntry, spec: SkfLibraryDriver, device: str
) -> tuple[SkfDriver, DriverInfo]:
    """`device` of `library` opened as registry `entry` says (both backends open SKF
    drivers this way), and how the agent reports it."""
    driver = SkfDriver.open(library, options_for(spec, device))
    info = DriverInfo(
        "skf",
        f"registry entry {entry.name}",
        entry.name,
        entry.source,
        library=str(library.path),
        device=device,
        application=driver.discovery.application,
        container=driver.discovery.container,
    )
    return driver, info


class SkfBackend:
    """One vendor SKF library: its devices are the cards (module docstring)."""

    def __init__(
        self,
        library: SkfLibrary,
        registry: Registry,
        *,
        monitor_factory: MonitorFactory = SkfDeviceMonitor,
    ) -> None:
        self.library = library
        self.registry = registry
        self.reader_name = f"SKF {library.path.name}"
        self._monitor_factory = monitor_factory
        self._lock = threading.Lock()  # the monitor's creation vs. wake()
        self._monitor: SkfDeviceMonitor | None = None  # made in the owner thread
        self._wake_pending = False
        self._closed = False
        self._reader_reported = False
        self._present: list[str] = []  # devices present, as the events said
        self._card: str | None = None  # the device reported as the card in the reader
        self._driver: SkfDriver | None = None
        self._info: DriverInfo | None = None

    @classmethod
    def from_registry(cls, registry: Registry) -> SkfBackend:
        """Load the one library the registry's SKF entries name.

        Raises RegistryError when no entry or more than one library is named, and
        card.skf.binding.SkfLibraryUnavailable when the library cannot be loaded."""
        entries = skf_entries(registry)
        if not entries:
            raise RegistryError(
                'card.backend = "skf" needs an enabled driver = "skf" entry with devices '
                "patterns in the driver registry (card.registry); there is none"
            )
        specs = [(e, e.driver) for e in entries if isinstance(e.driver, SkfLibraryDriver)]
        libraries = sorted({str(spec.library) for _, spec in specs})
        if len(libraries) > 1:
            named = "; ".join(f"{e.name} ({e.source}): {spec.library}" for e, spec in specs)
            raise RegistryError(
                "the SKF backend serves one library, but the enabled skf entries name "
                f"{len(libraries)}: {named}. Disable the others (enabled = false)"
            )
        return cls(SkfLibrary(libraries[0]), registry)

    # --- the driver -------------------------------------------------------------------

    def open_driver(self) -> CardDriver:
        self.drop_driver()
        present = [name.text for name in self.library.enum_dev(True)]
        device = self._card if self._card in present else self._choose(present)
        if device is None:
            raise CardMissing(f"no SKF device is present ({self.library.path.name})")
        match = self.registry.match(Observation(skf_device=device))
        entry = match.entry
        if entry is None or not isinstance(entry.driver, SkfLibraryDriver):
            reasons = "; ".join(match.reasons) or "the registry is empty"
            raise UnsupportedCard(
                f"no driver registry entry matches SKF device {device!r} ({reasons}); "
                "run `card-agent card identify` for a report"
            )
        if entry.driver.library != self.library.path:
            raise UnsupportedCard(
                f"registry entry {entry.name} matches SKF device {device!r} but names "
                f"{entry.driver.library}, not the library this agent loaded "
                f"({self.library.path})"
            )
        self._driver, self._info = open_skf_driver(self.library, entry, entry.driver, device)
        return self._driver

    def drop_driver(self) -> None:
        self._info = None
        driver, self._driver = self._driver, None
        if driver is not None:
            driver.close()  # ignores errors: the device may be gone

    def driver_info(self) -> DriverInfo:
        if self._info is None:
            raise CardMissing("no card driver is open")
        return self._info

    def identify(self) -> IdentifyReport:
        self.drop_driver()
        report = skf_report(self.library, self.registry)
        if report.error is None and not report.devices:
            raise CardMissing(f"no SKF device is present ({self.library.path.name})")
        return IdentifyReport(
            backend="skf",
            reader=self.reader_name,
            skf=report,
            notes=(
                "an SKF library hides the card's ATR and APDUs: what it enumerates is "
                "below; each device shows the registry entry it matches",
            ),
        )

    def _choose(self, present: list[str]) -> str | None:
        """The device to call the card: the first one a registry entry matches, else
        the first one (it will open as an unsupported card, saying why)."""
        for name in present:
            if self.registry.match(Observation(skf_device=name)).entry is not None:
                return name
        return present[0] if present else None

    # --- events -----------------------------------------------------------------------

    def poll_events(self, timeout_s: float) -> list[BackendEvent]:
        with self._lock:
            if self._wake_pending or self._closed:
                self._wake_pending = False
                return []
            monitor = self._monitor
            if monitor is None:
                monitor = self._monitor = self._monitor_factory(self.library)
        events: list[BackendEvent] = []
        if not self._reader_reported:
            self._reader_reported = True
            events.append(BackendEvent("reader_added", self.reader_name))
        try:
            changes = monitor.poll_events(timeout_s)
        except CardError:
            # The owner reports the failure (and a TransportError as the reader going).
            # Start over with a new monitor: its first poll reports the reader and the
            # devices present again.
            with self._lock:
                self._monitor = None
            monitor.close()
            self._reader_reported, self._present, self._card = False, [], None
            raise
        if changes:
            events.extend(self._apply([(e.kind, e.device) for e in changes]))
        return events

    def _apply(self, changes: list[tuple[str, str]]) -> list[BackendEvent]:
        """Devices came and went: what that does to the card in the reader. The whole
        batch first, then the choice of a new card (several devices plugged in at once:
        the one an entry matches, not the first to be reported)."""
        events = []
        for kind, device in changes:
            if kind == "card_removed":
                self._present = [n for n in self._present if n != device]
                if device == self._card:
                    self._card = None
                    events.append(BackendEvent("card_removed", self.reader_name))
            elif device not in self._present:
                self._present.append(device)
        if self._card is None:
            self._card = self._choose(self._present)
            if self._card is not None:
                events.append(BackendEvent("card_inserted", self.reader_name))
        return events

    def wake(self) -> None:
        with self._lock:
            monitor = self._monitor
            if monitor is None:
                self._wake_pending = True  # no poll to cut short: the flag covers the next
                return
        monitor.wake()  # a flag and a notify; the monitor's alarm thread does the rest

    def close(self) -> None:
        with self._lock:
            self._closed = True
            monitor, self._monitor = self._monitor, None
        self.drop_driver()
        if monitor is not None:
            monitor.close()

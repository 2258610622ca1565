"""Fixtures for the SKF tier: the compiled softskf library, simulated cards in its store.

softskf is built once per source change (tests/skf/softskf/build.py) into build/softskf.
Each test gets its own store and control file (through SOFTSKF_STORE / SOFTSKF_CONTROL)
and a library reset to "freshly loaded" (one process loads the .so once).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from card.skf.binding import SkfLibrary
from card.skf.driver import SkfDriver, SkfOptions
from simulator.state import CardFactory, CardState
from tests.skf.softskf.build import build_softskf
from tests.skf.softskf.control import SoftSkfControl
from tests.skf.softskf.store import StoreDevice, device_from_state, write_store

PROFILES = ("legal-person-sm2", "operator-sm2", "legacy-rsa1024", "blocked-pin")


class CardBank:
    """Card states from one test CA world, made on first use (RSA keys take a while)."""

    def __init__(self) -> None:
        self.factory = CardFactory()
        self._states: dict[str, CardState] = {}
        self._lock = threading.Lock()

    def get(self, profile: str) -> CardState:
        with self._lock:
            state = self._states.get(profile)
            if state is None:
                state = self._states[profile] = self.factory.make_state(profile)
            return state


class SoftSkf:
    """One test's softskf: store, control file, the loaded library."""

    def __init__(self, library_path: Path, directory: Path, cards: CardBank) -> None:
        self.library_path = library_path
        self.store = directory / "softskf.store"
        self.cards = cards
        write_store(self.store, [])
        self.control = SoftSkfControl(directory / "softskf.control")
        self._test_api = ctypes.CDLL(str(library_path))
        self._test_api.SOFTSKF_OpenHandles.restype = ctypes.c_uint32
        self._test_api.SOFTSKF_CallCount.restype = ctypes.c_uint32
        self._test_api.SOFTSKF_CallCount.argtypes = (ctypes.c_char_p,)
        self._test_api.SOFTSKF_Reset()
        self.library = SkfLibrary(library_path)
        self._drivers: list[SkfDriver] = []

    def load(self, *devices: StoreDevice) -> None:
        write_store(self.store, list(devices))

    def load_card(self, profile: str, **names: str) -> CardState:
        state = self.cards.get(profile)
        self.load(device_from_state(state, **names))
        return state

    def open(self, options: SkfOptions | None = None) -> SkfDriver:
        driver = SkfDriver.open(self.library, options)
        self._drivers.append(driver)
        return driver

    def open_handles(self) -> int:
        return int(self._test_api.SOFTSKF_OpenHandles())

    def calls(self, function: str) -> int:
        """Calls of `function` since this test began."""
        return int(self._test_api.SOFTSKF_CallCount(function.encode()))

    def close(self) -> None:
        self.control.hang(None)  # let an abandoned call finish
        for driver in self._drivers:
            driver.close()


@pytest.fixture(scope="session")
def cards() -> CardBank:
    return CardBank()


@pytest.fixture(scope="session")
def softskf_path() -> Path:
    return build_softskf("full")


@pytest.fixture(scope="session")
def softskf_noevents_path() -> Path:
    return build_softskf("no-events")


def _softskf(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cards: CardBank
) -> Iterator[SoftSkf]:
    monkeypatch.setenv("SOFTSKF_STORE", str(tmp_path / "softskf.store"))
    monkeypatch.setenv("SOFTSKF_CONTROL", str(tmp_path / "softskf.control"))
    env = SoftSkf(path, tmp_path, cards)
    try:
        yield env
    finally:
        env.close()


@pytest.fixture
def softskf(
    softskf_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cards: CardBank
) -> Iterator[SoftSkf]:
    yield from _softskf(softskf_path, tmp_path, monkeypatch, cards)


@pytest.fixture
def softskf_noevents(
    softskf_noevents_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cards: CardBank
) -> Iterator[SoftSkf]:
    yield from _softskf(softskf_noevents_path, tmp_path, monkeypatch, cards)

"""agent.backends.skf.SkfBackend against softskf: the library as the reader and its
devices as the card, the registry choosing the library and the driver, the identify
report, and wake() while the library hangs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agent.backends import BackendEvent
from agent.backends.skf import SkfBackend
from card.errors import CardError, CardMissing, UnsupportedCard
from card.registry import Registry, RegistryError, parse_registry
from card.skf.binding import SkfLibraryUnavailable
from card.skf.driver import SkfDriver
from card.skf.sar import SAR_FAIL
from tests.skf.conftest import SoftSkf
from tests.skf.softskf.store import device_from_state

TOKEN = "SoftSKF Token 0"
PIN = "88888888"


def _registry(*entries: str) -> Registry:
    return Registry(parse_registry("version = 1\n" + "\n".join(entries), "test.toml"))


def _entry(name: str, library: Path, devices: str = "SoftSKF Token *", extra: str = "") -> str:
    return (
        f'[[driver]]\nname = "{name}"\ndriver = "skf"\nlibrary = "{library}"\n'
        f'devices = ["{devices}"]\n{extra}\n'
    )


def _backend(env: SoftSkf, registry: Registry | None = None) -> SkfBackend:
    return SkfBackend(env.library, registry or _registry(_entry("token", env.library_path)))


def _poll_until(backend: SkfBackend, count: int, limit_s: float = 5.0) -> list[BackendEvent]:
    events: list[BackendEvent] = []
    deadline = time.monotonic() + limit_s
    while len(events) < count and time.monotonic() < deadline:
        events += backend.poll_events(0.2)
    return events


@pytest.fixture(params=["wait", "poll"])
def env(request: pytest.FixtureRequest) -> SoftSkf:
    """softskf with SKF_WaitForDevEvent, or without it (the backend then polls)."""
    softskf: SoftSkf = request.getfixturevalue(
        "softskf" if request.param == "wait" else "softskf_noevents"
    )
    softskf.load_card("legal-person-sm2")
    return softskf


# --- the reader and the card ---------------------------------------------------------------


def test_the_library_is_the_reader_and_a_device_the_card(env: SoftSkf) -> None:
    backend = _backend(env)
    reader = f"SKF {env.library_path.name}"
    try:
        assert backend.poll_events(1.0) == [
            BackendEvent("reader_added", reader),
            BackendEvent("card_inserted", reader),
        ]
        env.control.pull()
        assert _poll_until(backend, 1) == [BackendEvent("card_removed", reader)]
        env.control.insert()
        assert _poll_until(backend, 1) == [BackendEvent("card_inserted", reader)]
        # The reader is never reported gone: an unplugged key is a missing card.
        env.control.pull()
        assert _poll_until(backend, 1) == [BackendEvent("card_removed", reader)]
        with pytest.raises(CardMissing):
            backend.open_driver()
    finally:
        backend.close()


def test_open_driver_follows_the_registry_entry_and_says_which(env: SoftSkf) -> None:
    entry = _entry("token", env.library_path, extra='card_type = "legal_person"')
    backend = _backend(env, _registry(entry))
    try:
        driver = backend.open_driver()
        assert isinstance(driver, SkfDriver)
        assert driver.card_info().card_type.value == "legal_person"
        info = backend.driver_info()
        assert (info.driver, info.entry, info.source) == ("skf", "token", "test.toml")
        assert (info.device, info.application, info.container) == (TOKEN, "EPORT", "SignKey")
        assert info.library == str(env.library_path)
        assert "registry entry token" in info.describe()
        backend.drop_driver()
        assert env.open_handles() == 0  # the driver's handles are released
        with pytest.raises(CardMissing):
            backend.driver_info()
    finally:
        backend.close()


def test_a_device_no_entry_matches_is_an_unsupported_card_with_the_reasons(
    env: SoftSkf,
) -> None:
    backend = _backend(env, _registry(_entry("other", env.library_path, devices="ePass*")))
    try:
        assert [e.kind for e in backend.poll_events(1.0)] == ["reader_added", "card_inserted"]
        with pytest.raises(UnsupportedCard) as refused:
            backend.open_driver()
        message = str(refused.value)
        assert f"SKF device {TOKEN!r}" in message
        assert "matches none of ['ePass*']" in message
        assert "card-agent card identify" in message
    finally:
        backend.close()


def test_with_several_devices_the_card_is_the_one_an_entry_matches(softskf: SoftSkf) -> None:
    state = softskf.cards.get("legal-person-sm2")
    softskf.load(
        device_from_state(state, device="Foreign Key 1"),
        device_from_state(state, device=TOKEN),
    )
    backend = _backend(softskf)
    try:
        assert [e.kind for e in backend.poll_events(1.0)] == ["reader_added", "card_inserted"]
        backend.open_driver()
        assert backend.driver_info().device == TOKEN
    finally:
        backend.close()


def test_wake_returns_at_once_while_the_library_hangs(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    backend = _backend(softskf)
    backend.poll_events(0)
    driver = backend.open_driver()
    softskf.control.hang("SKF_GetPINInfo")
    stuck = threading.Thread(target=driver.pin_status, daemon=True)
    stuck.start()
    try:
        softskf.control.wait_until_hanging("SKF_GetPINInfo")
        started = time.monotonic()
        for _ in range(20):
            backend.wake()
        assert time.monotonic() - started < 0.1
    finally:
        softskf.control.hang(None)
        stuck.join(5)
        backend.close()
    assert not stuck.is_alive()


def test_a_wake_before_the_first_poll_is_kept(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    backend = _backend(softskf)
    try:
        backend.wake()
        started = time.monotonic()
        assert backend.poll_events(5.0) == []
        assert time.monotonic() - started < 1.0
        assert [e.kind for e in backend.poll_events(1.0)] == ["reader_added", "card_inserted"]
        backend.wake()  # now through the monitor: a blocking poll ends early
        started = time.monotonic()
        assert backend.poll_events(5.0) == []
        assert time.monotonic() - started < 1.0
    finally:
        backend.close()


# --- which library ---------------------------------------------------------------------


def test_from_registry_loads_the_one_library(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    registry = _registry(
        _entry("token", softskf.library_path),
        _entry("off", Path("/opt/other/libskf.so"), extra="enabled = false"),
        # PC/SC cards sent to a library by ATR are not this backend's business.
        '[[driver]]\nname = "by-atr"\ndriver = "skf"\nlibrary = "/opt/x/libskf.so"\n'
        'atr = ["3B 02 14 50"]\n',
    )
    backend = SkfBackend.from_registry(registry)
    try:
        assert backend.library.path == softskf.library_path
        backend.open_driver()
    finally:
        backend.close()


def test_from_registry_refuses_no_library_and_two(softskf: SoftSkf) -> None:
    with pytest.raises(RegistryError, match="needs an enabled"):
        SkfBackend.from_registry(_registry())
    two = _registry(
        _entry("a", softskf.library_path),
        _entry("b", Path("/opt/vendor/libskf.so"), devices="ePass*"),
    )
    with pytest.raises(RegistryError, match="serves one library") as refused:
        SkfBackend.from_registry(two)
    assert "/opt/vendor/libskf.so" in str(refused.value)
    assert "enabled = false" in str(refused.value)


def test_from_registry_says_when_the_library_does_not_load(tmp_path: Path) -> None:
    missing = tmp_path / "libnothing.so"
    with pytest.raises(SkfLibraryUnavailable, match="cannot load SKF library"):
        SkfBackend.from_registry(_registry(_entry("gone", missing)))


# --- identify ------------------------------------------------------------------------------


def test_identify_reports_what_the_library_lists_and_reads_no_secret(softskf: SoftSkf) -> None:
    state = softskf.cards.get("legal-person-sm2")
    token = device_from_state(state, device=TOKEN)
    token.applications[0].containers.append(
        type(token.applications[0].containers[0])(name="Empty", type=0)
    )
    softskf.load(token, device_from_state(state, device="Foreign Key 1"))
    backend = _backend(softskf)
    calls = softskf.calls
    try:
        backend.open_driver()  # identify releases it first
        before = {f: calls(f) for f in ("SKF_VerifyPIN", "SKF_ExportCertificate")}
        report = backend.identify()
        assert {f: calls(f) for f in before} == before  # no PIN, no certificate read
    finally:
        backend.close()
    assert softskf.open_handles() == 0
    assert report.backend == "skf"
    assert report.atr is None
    skf = report.skf
    assert skf is not None
    assert skf.library == str(softskf.library_path)
    assert skf.device_events is True
    ours, foreign = skf.devices
    assert ours.name == TOKEN
    assert ours.registry.entry == "token"
    assert foreign.registry.entry is None
    assert "matches none of ['SoftSKF Token *']" in foreign.registry.reasons[0]
    assert ours.manufacturer == "card-agent softskf"
    assert ours.serial_number == "*" * (len(state.card_number) - 4) + state.card_number[-4:]
    assert ours.firmware_version == "1.2"
    (app,) = ours.applications
    assert app.name == "EPORT"
    assert [(c.name, c.type) for c in app.containers] == [("SignKey", "ECC"), ("Empty", "empty")]
    document = report.to_json()
    assert document["skf"]["devices"][0]["applications"][0]["containers"][0]["type"] == "ECC"
    assert state.card_number not in str(document)
    assert state.holder_name not in str(document)


def test_identify_without_a_device_says_insert_the_card(softskf: SoftSkf) -> None:
    softskf.load_card("legal-person-sm2")
    softskf.control.pull()
    backend = _backend(softskf)
    try:
        with pytest.raises(CardMissing):
            backend.identify()
    finally:
        backend.close()


def test_after_a_failed_poll_the_next_one_reports_the_reader_and_card_again(
    env: SoftSkf,
) -> None:
    backend = _backend(env)
    function = "SKF_WaitForDevEvent" if env.library.has_dev_events else "SKF_EnumDev"
    try:
        assert len(backend.poll_events(1.0)) == 2
        env.control.fail(function, SAR_FAIL)
        with pytest.raises(CardError):
            backend.poll_events(0.2)
        env.control.clear_failure(function)
        # The owner took the failure as the reader going away: a fresh start follows.
        assert [e.kind for e in backend.poll_events(1.0)] == ["reader_added", "card_inserted"]
    finally:
        backend.close()

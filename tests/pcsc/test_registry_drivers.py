"""PcscBackend and the driver registry, over a real pcscd: the entry a card's ATR matches
chooses its driver; an SKF entry gets the card after our PC/SC connection is released;
no entry means the built-in profile, or an unsupported card that says what to do."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends.pcsc import PcscBackend
from card.eport.session import EPortSession
from card.errors import CardMissing, UnsupportedCard
from card.pcsc import PcscTransport
from card.registry import Registry, load_registry, parse_registry
from card.skf.driver import SkfDriver
from simulator.card_os import SimulatedCard
from tests.pcscd_support import EchoCard, PcscDaemon, Plug
from tests.skf.softskf.plugged import SkfCard, plugged_skf_card

pytestmark = pytest.mark.pcsc


@pytest.fixture
def reader(pcscd: PcscDaemon) -> str:
    return pcscd.readers[0]


def _backend(reader: str, registry: Registry) -> Iterator[PcscBackend]:
    backend = PcscBackend(re.compile(re.escape(reader)), registry=registry)
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SkfCard]:
    with plugged_skf_card(tmp_path / "token") as plugged:
        yield plugged


def test_the_shipped_entry_opens_the_apdu_driver_and_says_so(reader: str, plug: Plug) -> None:
    plug(SimulatedCard.create("legal-person-sm2"), 0)
    for backend in _backend(reader, load_registry()):
        assert isinstance(backend.open_driver(), EPortSession)
        info = backend.driver_info()
        assert (info.driver, info.entry) == ("eport-apdu", "card-agent-simulator")
        assert info.source == "card/data/drivers.toml"


def test_no_entry_falls_back_to_the_built_in_profile(reader: str, plug: Plug) -> None:
    plug(SimulatedCard.create("legal-person-sm2"), 0)
    for backend in _backend(reader, Registry(())):
        assert isinstance(backend.open_driver(), EPortSession)
        info = backend.driver_info()
        assert info.entry is None
        assert info.why == "no registry entry matched; the built-in APDU profile answered"


def test_no_entry_and_no_answer_is_an_unsupported_card_pointing_to_identify(
    reader: str, plug: Plug
) -> None:
    echo = EchoCard()
    plug(echo, 0)
    for backend in _backend(reader, load_registry()):
        with pytest.raises(UnsupportedCard) as refused:
            backend.open_driver()
        message = str(refused.value)
        assert "no driver registry entry matches this card" in message
        assert echo.atr.hex(" ").upper() in message
        assert repr(reader) in message
        assert "run `card-agent card identify`" in message


def test_an_skf_entry_gets_the_card_after_our_connection_is_released(
    reader: str, plug: Plug, token: SkfCard
) -> None:
    echo = EchoCard(label=b"vendor-key")
    plug(echo, 0)
    pattern = f"{echo.atr.hex()}/{'FF' * len(echo.atr)}"  # value/mask: every bit
    registry = Registry(
        parse_registry(
            f'version = 1\n[[driver]]\nname = "vendor-card"\ndriver = "skf"\n'
            f'library = "{token.library_path}"\natr = ["{pattern}"]\n',
            "kiosk.toml",
        )
    )
    for backend in _backend(reader, registry):
        driver = backend.open_driver()
        assert isinstance(driver, SkfDriver)
        info = backend.driver_info()
        assert (info.driver, info.entry, info.source) == ("skf", "vendor-card", "kiosk.toml")
        assert info.library == str(token.library_path)
        # Our PC/SC connection (exclusive) is gone: another program can have the card.
        with PcscTransport(reader) as other:
            other.connect()
            assert other.atr == echo.atr
        assert driver.card_info().card_number == token.state.card_number
        backend.drop_driver()
        with pytest.raises(CardMissing, match="no card driver is open"):
            backend.driver_info()

"""The browser flows again, with the whole chain a kiosk has:
Chromium -> extension -> agent -> pyscard -> pcscd -> vpcd -> the software card.

The test functions are the ones of the simulated-card modules, collected here a second
time; this module's `agent` fixture puts the agent on the PC/SC backend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from agent.config import CardConfig, Config
from agent.runtime import build_runtime
from simulator.card_os import SimulatedCard
from simulator.vpcd import VpcdLink
from tests.e2e.conftest import AgentHandle
from tests.e2e.test_bridge import test_whole_flow_through_the_bridge
from tests.e2e.test_card_pulled import test_card_pulled_mid_flow
from tests.e2e.test_first_page import (
    kiosk_prerequisites,
    site,
    test_first_page_after_start_is_bridged,
)
from tests.e2e.test_practice_flow import test_whole_practice_flow
from tests.pcscd_support import PcscCard, ReaderWatch, plugged_card
from tests.support.server import ServerThread

pytestmark = [pytest.mark.e2e, pytest.mark.pcsc]

__all__ = [
    "kiosk_prerequisites",  # fixtures of the first-page test
    "site",
    "test_card_pulled_mid_flow",
    "test_first_page_after_start_is_bridged",
    "test_whole_flow_through_the_bridge",
    "test_whole_practice_flow",
]


@dataclass
class PcscAgentHandle(AgentHandle):
    vpcd: PcscCard | None = None

    def sim_card(self) -> Any:
        assert self.vpcd is not None
        return self.vpcd.card

    def pull_card(self) -> None:
        assert self.vpcd is not None
        self.vpcd.link.remove()
        ReaderWatch().empty(self.vpcd.reader)

    def insert_card(self, profile: str | None = None) -> None:
        assert self.vpcd is not None
        if profile is not None:  # another visitor's card: a new card in the same reader
            self.vpcd.link.stop()
            self.vpcd.card = SimulatedCard.create(profile)
            self.vpcd.link = VpcdLink(self.vpcd.card, port=self.vpcd.port)
            self.vpcd.link.start()
        else:
            self.vpcd.link.insert()
        ReaderWatch().present(self.vpcd.reader)


@pytest.fixture
def agent(agent_config: Config, request: pytest.FixtureRequest) -> Iterator[AgentHandle]:
    with plugged_card(request, None) as vpcd:
        config = agent_config.model_copy(
            update={"card": CardConfig(backend="pcsc", reader=vpcd.reader)}
        )
        runtime: Any = build_runtime(config)
        with ServerThread.on_port(runtime.app, config.server.port):
            deadline = time.monotonic() + 10
            while not runtime.owner.state.card_present:  # the owner's first reader poll
                assert time.monotonic() < deadline, "the agent never saw the card"
                time.sleep(0.01)
            yield PcscAgentHandle(config, runtime, vpcd)


@pytest.fixture
def practice_read_seconds(request: pytest.FixtureRequest) -> float:
    # As in the modules the tests come from: the whole flow keeps the production 10 s.
    return 10.0 if request.node.originalname == "test_whole_practice_flow" else 2.0

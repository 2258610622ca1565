"""Fixtures: agents with the official-protocol endpoint on free loopback ports.

`start_agent` starts a fresh agent per call (for tests that change the card: PIN tries,
a pulled card, another profile); `shared_agent` is one SM2 agent per test module for
tests that leave the card as they found it (each opens its own connections, and a
session belongs to its connection).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import build_runtime
from tests.pcscd_support import BACKENDS, plugged_card
from tests.skf.softskf.plugged import plugged_skf_card

from .harness import CompatAgent, loopback_socket, make_config, serve

StartAgent = Callable[..., CompatAgent]


@contextlib.contextmanager
def agent_factory(
    root: Path, request: pytest.FixtureRequest | None = None, backend: str = "simulated"
) -> Iterator[StartAgent]:
    """`start(card={...}, compat={...}, security={...})` -> a running agent built by
    build_runtime with its state under `root`; all stopped when the block ends. With
    backend "pcsc" the card the settings describe sits behind pcscd + vpcd instead, with
    "skf" in a softskf token."""
    with contextlib.ExitStack() as stack:
        numbers = itertools.count()

        def start(**sections: Any) -> CompatAgent:
            home = root / f"agent{next(numbers)}"
            home.mkdir(parents=True)
            sock = loopback_socket()
            vpcd = skf = None
            if backend == "skf":
                skf = stack.enter_context(plugged_skf_card(home / "token", sections.get("card")))
                card = {
                    k: v
                    for k, v in (sections.get("card") or {}).items()
                    if k not in ("profile", "timing")
                }
                sections["card"] = {**card, "backend": "skf", "registry": str(skf.registry_path)}
            if backend == "pcsc":
                assert request is not None
                vpcd = stack.enter_context(plugged_card(request, sections.get("card")))
                card = {
                    k: v
                    for k, v in (sections.get("card") or {}).items()
                    if k not in ("profile", "timing")
                }
                sections["card"] = {**card, "backend": "pcsc", "reader": vpcd.reader}
            config = make_config(home, api_port=sock.getsockname()[1], **sections)
            runtime = build_runtime(config)
            return stack.enter_context(
                serve(runtime, sock, log_path=home / "agent.log", vpcd=vpcd, skf=skf)
            )

        yield start


@pytest.fixture(params=BACKENDS)
def start_agent(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StartAgent]:
    with agent_factory(tmp_path, request, request.param) as start:
        yield start


@pytest.fixture
def agent(start_agent: StartAgent) -> CompatAgent:
    """A fresh SM2 legal-person card."""
    return start_agent()


@pytest.fixture(scope="module", params=BACKENDS)
def shared_agent(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[CompatAgent]:
    with agent_factory(tmp_path_factory.mktemp("shared"), request, request.param) as start:
        yield start()

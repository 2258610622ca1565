"""CardOwner.run_backend: jobs on the backend (not the driver) share the owner thread,
the queue, the deadlines and the driver's lifecycle with driver jobs."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from agent.owner import CardOwner, JobTimeout
from card.errors import CardMissing
from tests.unit.test_owner import Blocker, FakeBackend, with_owner


def test_a_backend_job_runs_on_the_owner_thread_without_opening_the_driver() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> tuple[Any, int]:
        seen = await owner.run_backend(
            lambda b: (b, threading.get_ident()), timeout=2, label="backend"
        )
        return seen, owner.thread_id or 0

    ((backend_seen, thread), owner_thread), backend = with_owner(body)
    assert backend_seen is backend
    assert thread == owner_thread
    assert backend.opened == 0


def test_open_driver_opens_it_first_and_its_errors_are_the_jobs() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        assert await owner.run_backend(lambda b: b.opened, timeout=2, label="x", open_driver=True)
        # Opened once: a driver job after it uses the same driver.
        assert await owner.run(lambda d: d.serial, timeout=2, label="serial") == 1
        backend.open_error = CardMissing("no card")
        await owner.run_backend(lambda b: None, timeout=2, label="drop", release_driver=True)
        with pytest.raises(CardMissing):
            await owner.run_backend(lambda b: None, timeout=2, label="y", open_driver=True)

    _, backend = with_owner(body)
    assert backend.opened == 1


def test_release_driver_drops_it_first_and_the_next_job_opens_a_new_one() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> list[int]:
        serials = [await owner.run(lambda d: d.serial, timeout=2, label="a")]
        dropped = await owner.run_backend(
            lambda b: b.dropped, timeout=2, label="identify", release_driver=True
        )
        assert dropped == 1  # dropped before fn ran
        serials.append(await owner.run(lambda d: d.serial, timeout=2, label="b"))
        return serials

    serials, _ = with_owner(body)
    assert serials == [1, 2]


def test_backend_jobs_queue_behind_driver_jobs_and_keep_their_deadline() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        blocker = Blocker()
        first = asyncio.create_task(owner.run(blocker, timeout=2, label="slow"))
        await blocker.wait_started()
        with pytest.raises(JobTimeout) as timed_out:
            await owner.run_backend(lambda b: None, timeout=0.1, label="identify")
        assert timed_out.value.started is False  # it never reached the backend
        blocker.release.set()
        assert await first == "blocked"

    with_owner(body)


def test_open_and_release_exclude_each_other() -> None:
    async def body(owner: CardOwner, backend: FakeBackend) -> None:
        with pytest.raises(ValueError, match="exclude"):
            await owner.run_backend(
                lambda b: None, timeout=1, label="x", open_driver=True, release_driver=True
            )

    with_owner(body)

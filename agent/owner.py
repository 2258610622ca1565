"""`CardOwner`: exactly one thread owns the reader.

pyscard calls block and pcsc-lite wants one context per thread, so one dedicated daemon
thread does every card call and waits for reader/card events in between. The asyncio
side submits jobs with `await owner.run(fn, timeout=..., label=...)` and awaits the
result; events go back to the event loop with `call_soon_threadsafe`.

Jobs
  * `run(fn)` runs `fn(driver)` (the driver opened first if need be); `run_backend(fn)`
    runs `fn(backend)` for what is not a driver operation (which driver is in use, the
    identify report), optionally with the driver opened or released first. Both go
    through the same queue, deadlines and error handling.
  * FIFO, one at a time, from a bounded queue: a full queue raises `Busy` at once.
  * After a job the thread waits a moment (`linger_s`) for the next before it waits on
    the reader again, so a burst of jobs does not enter and cancel a reader wait each.
  * Every job has a deadline. A job still queued at its deadline is dropped without
    touching the card. A running job that overruns makes its caller get `JobTimeout`
    at the deadline; the thread finishes the call, discards the result and treats the
    card as suspect (the next job re-opens the driver).
  * Exceptions from `fn` reach the caller unchanged (typed `card.errors`).
  * A cancelled caller leaves the thread alone: the result is discarded.

Driver lifecycle
  The driver is opened lazily by the first job. It is dropped when a job sees the card
  or the reader go (CardRemoved, CardMissing, ReaderMissing, ServiceUnavailable,
  TransportClosed, Timeout), on card/reader events, and after an overrun. On CardReset
  the error still reaches the caller (the security state is gone), subscribers get a
  `card_reset` event, and the driver is re-opened once right away.

State and liveness
  `owner.state` is an immutable `CardState` snapshot replaced by the thread; the loop
  reads it without touching the thread. `owner.health()` says whether the thread is
  alive, how long the current card call has been running and when the thread last went
  round its loop: the systemd watchdog pinger stops when a card call hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, cast

from agent.backends import BackendEvent, CardBackend
from card.eport.driver import CardDriver
from card.errors import (
    CardError,
    CardMissing,
    CardRemoved,
    CardReset,
    ReaderMissing,
    ServiceUnavailable,
    Timeout,
    TransportClosed,
    TransportError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_QUEUE_SIZE = 16
DEFAULT_POLL_INTERVAL_S = 0.5  # also bounds the latency of a lost wake-up
# How long the thread waits for another job after one before waiting on the reader:
# longer than the gap between a client's answer and its next request under load,
# short against how soon a card pull must be noticed.
DEFAULT_LINGER_S = 0.05
DEFAULT_JOIN_TIMEOUT_S = 5.0
_POLL_ERROR_BACKOFF_S = 1.0
_INITIAL_JOB_ESTIMATE_S = 0.25
_MIN_RETRY_AFTER_S = 0.05
_MAX_RETRY_AFTER_S = 30.0

# Errors after which the driver (and the connection under it) is not to be trusted.
_DROP_DRIVER_ON: tuple[type[CardError], ...] = (
    CardRemoved,
    CardMissing,
    CardReset,
    ServiceUnavailable,
    ReaderMissing,
    TransportClosed,
    Timeout,
)


# --- errors ----------------------------------------------------------------------


class OwnerError(Exception):
    """A job could not be run (as opposed to a card error from the job itself)."""


class Busy(OwnerError):
    """The job queue is full. Nothing was queued."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"card reader busy, retry in {retry_after_s:.2f} s")


class JobTimeout(OwnerError):
    """The job did not finish before its deadline.

    `started` False: it never reached the card. True: the card call was still running
    (the owner discards its result and re-opens the card before the next job).
    """

    def __init__(self, label: str, timeout_s: float, *, started: bool) -> None:
        self.label = label
        self.timeout_s = timeout_s
        self.started = started
        where = "in the card call" if started else "waiting for the card"
        super().__init__(f"card job {label!r} timed out after {timeout_s:g} s {where}")


class OwnerStopped(OwnerError):
    """The owner is not running (not started yet, or stopping)."""


# --- what the loop sees ----------------------------------------------------------

OwnerEventKind = Literal[
    "reader_added", "reader_removed", "card_inserted", "card_removed", "card_reset"
]


@dataclass(frozen=True)
class OwnerEvent:
    """Delivered to subscribers on the event loop. `atr`: the card inserted, or the
    card that left (when known)."""

    kind: OwnerEventKind
    reader: str | None
    atr: bytes | None
    generation: int  # CardState.generation after this event


@dataclass(frozen=True)
class CardState:
    reader_present: bool = False
    card_present: bool = False
    reader: str | None = None
    atr: bytes | None = None
    generation: int = 0  # bumped on every card insert, removal and reset


@dataclass(frozen=True)
class OwnerHealth:
    thread_alive: bool
    busy_for_s: float | None  # how long the current card job has been running
    last_loop_at: float | None  # time.monotonic() of the thread's last loop round
    job_label: str | None = None

    def stuck(self, limit_s: float, *, now: float | None = None) -> bool:
        """True when the watchdog should stop petting: thread dead, a card call running
        longer than `limit_s`, or an idle thread that has not looped for `limit_s`
        (choose `limit_s` well above the owner's poll interval)."""
        if not self.thread_alive:
            return True
        if self.busy_for_s is not None:
            return self.busy_for_s > limit_s
        if self.last_loop_at is None:
            return False
        return (time.monotonic() if now is None else now) - self.last_loop_at > limit_s


EventCallback = Callable[[OwnerEvent], None]


# --- jobs ------------------------------------------------------------------------


class _Idle(enum.Enum):
    BUSY = enum.auto()  # running a job, or between steps: run() need not wake it
    LINGERING = enum.auto()  # waiting a moment for the next job (`_job_arrived`)
    POLLING = enum.auto()  # waiting on the reader (`backend.wake()` ends it)


class _JobState(enum.Enum):
    QUEUED = enum.auto()
    RUNNING = enum.auto()
    DONE = enum.auto()
    DROPPED = enum.auto()  # never reached the card


class _Job:
    __slots__ = ("deadline", "fn", "future", "label", "loop", "state", "timeout")

    def __init__(
        self,
        fn: Callable[[], Any],  # what runs on the owner thread (run() and run_backend())
        label: str,
        timeout: float,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
    ) -> None:
        self.fn = fn
        self.label = label
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.loop = loop
        self.future = future
        self.state = _JobState.QUEUED


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    """On the loop: complete the future unless the caller already gave up."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _post(job: _Job, result: Any, error: BaseException | None) -> None:
    with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)


# --- the owner -------------------------------------------------------------------


class CardOwner:
    def __init__(
        self,
        backend: CardBackend,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        linger_s: float = DEFAULT_LINGER_S,
        name: str = "card-owner",
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self._backend = backend
        self._queue_size = queue_size
        self._poll_interval_s = poll_interval_s
        self._linger_s = linger_s
        self._name = name

        self._lock = threading.Lock()  # guards _queue, job states, _idle
        self._queue: deque[_Job] = deque()
        # What the thread does while it has no job: how run() must wake it.
        self._idle = _Idle.BUSY
        self._job_arrived = threading.Event()  # ends the short wait after a job
        self._kick = threading.Event()  # wakes the back-off sleep after a poll error
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: list[EventCallback] = []

        # Owned by the thread; read by the loop (each is replaced atomically).
        self._driver: CardDriver | None = None
        self._state = CardState()
        self._current: _Job | None = None
        self._busy_since: float | None = None
        self._last_loop_at: float | None = None
        self._avg_job_s = _INITIAL_JOB_ESTIMATE_S
        self._poll_failing = False

    # --- lifecycle (loop side) ---------------------------------------------------

    async def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("CardOwner already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name=self._name, daemon=True)
        self._thread.start()

    async def stop(self, *, join_timeout: float = DEFAULT_JOIN_TIMEOUT_S) -> None:
        """Fail every pending job with OwnerStopped, wake the thread and join it.

        A card call in progress is not interrupted (nothing can interrupt it); its
        caller gets OwnerStopped now and the thread exits after the call returns.
        """
        thread = self._thread
        if thread is None or self._stopping.is_set():
            if thread is not None:
                await asyncio.to_thread(thread.join, join_timeout)
            return
        self._stopping.set()
        with self._lock:
            pending = list(self._queue)
            self._queue.clear()
            for job in pending:
                job.state = _JobState.DROPPED
            current = self._current
        if current is not None:
            pending.append(current)
        for job in pending:
            _post(job, None, OwnerStopped("card owner stopped"))
        self._kick.set()
        self._job_arrived.set()
        self._backend.wake()
        await asyncio.to_thread(thread.join, join_timeout)
        if thread.is_alive():
            label = current.label if current is not None else None
            log.error(
                "card owner thread did not stop within %.1f s (card call %r still running)",
                join_timeout,
                label,
            )

    # --- jobs (loop side) --------------------------------------------------------

    async def run(self, fn: Callable[[CardDriver], T], *, timeout: float, label: str) -> T:
        """Run `fn(driver)` on the owner thread and return its result.

        Raises Busy (queue full), JobTimeout (deadline passed), OwnerStopped, or
        whatever `fn` or opening the driver raised.
        """
        return await self._submit(lambda: fn(self._ensure_driver()), timeout, label)

    async def run_backend(
        self,
        fn: Callable[[CardBackend], T],
        *,
        timeout: float,
        label: str,
        open_driver: bool = False,
        release_driver: bool = False,
    ) -> T:
        """Run `fn(backend)` on the owner thread, as a job like `run`'s.

        `open_driver`: open the driver first (its errors are the job's, as for `run`);
        `release_driver`: drop it first, so `fn` has the card to itself (the next job
        opens a new driver).
        """
        if open_driver and release_driver:
            raise ValueError("open_driver and release_driver exclude each other")

        def call() -> T:
            if release_driver:
                self._drop_driver()
            elif open_driver:
                self._ensure_driver()
            return fn(self._backend)

        return await self._submit(call, timeout, label)

    async def _submit(self, fn: Callable[[], T], timeout: float, label: str) -> T:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if self._thread is None or self._stopping.is_set():
            raise OwnerStopped("card owner is not running")
        loop = asyncio.get_running_loop()
        job = _Job(fn, label, timeout, loop, loop.create_future())
        with self._lock:
            if len(self._queue) >= self._queue_size:
                raise Busy(self._retry_after(len(self._queue)))
            self._queue.append(job)
            idle = self._idle
        if idle is _Idle.LINGERING:
            self._job_arrived.set()
        elif idle is _Idle.POLLING:
            self._kick.set()
            self._backend.wake()
        try:
            return cast(T, await asyncio.wait_for(job.future, timeout))
        except TimeoutError:
            started = self._give_up(job)
            raise JobTimeout(label, timeout, started=started) from None
        except asyncio.CancelledError:
            self._give_up(job)
            raise

    def _give_up(self, job: _Job) -> bool:
        """The caller stopped waiting: unqueue the job. True if it had already started."""
        with self._lock:
            if job.state is _JobState.QUEUED:
                job.state = _JobState.DROPPED
                with contextlib.suppress(ValueError):
                    self._queue.remove(job)
                return False
            return job.state is not _JobState.DROPPED

    def _retry_after(self, queued: int) -> float:
        estimate = self._avg_job_s * (queued + 1)
        busy_since = self._busy_since
        if busy_since is not None:
            estimate += max(0.0, time.monotonic() - busy_since - self._avg_job_s)
        return round(min(_MAX_RETRY_AFTER_S, max(_MIN_RETRY_AFTER_S, estimate)), 3)

    # --- state, events, health (loop side) -----------------------------------------

    @property
    def state(self) -> CardState:
        return self._state

    @property
    def thread_id(self) -> int | None:
        """`threading.get_ident()` of the owner thread (for tests and diagnostics)."""
        return self._thread.ident if self._thread is not None else None

    def subscribe(self, callback: EventCallback) -> None:
        """`callback(event)` is called on the event loop for every OwnerEvent."""
        if callback not in self._subscribers:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: EventCallback) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def health(self) -> OwnerHealth:
        thread = self._thread
        current = self._current
        busy_since = self._busy_since
        return OwnerHealth(
            thread_alive=thread is not None and thread.is_alive(),
            busy_for_s=None if busy_since is None else time.monotonic() - busy_since,
            last_loop_at=self._last_loop_at,
            job_label=current.label if current is not None and busy_since is not None else None,
        )

    def _dispatch(self, event: OwnerEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("card event subscriber failed on %s", event.kind)

    # --- the thread --------------------------------------------------------------

    def _thread_main(self) -> None:
        worked = False
        try:
            while not self._stopping.is_set():
                self._last_loop_at = time.monotonic()
                job = self._next_job()
                if job is not None:
                    # After a job that lost the card, look at the reader at once.
                    worked = self._execute(job)
                    continue
                if worked:
                    worked = False
                    if self._linger():
                        continue
                self._poll()
        except BaseException:
            log.exception("card owner thread died")
            raise
        finally:
            self._drop_driver()
            try:
                self._backend.close()
            except Exception:
                log.exception("closing the card backend failed")

    def _next_job(self) -> _Job | None:
        """Pop the next job that can still make its deadline; drop the expired ones."""
        while True:
            with self._lock:
                if not self._queue:
                    return None
                job = self._queue.popleft()
                if time.monotonic() < job.deadline:
                    job.state = _JobState.RUNNING
                    self._current = job
                    return job
                job.state = _JobState.DROPPED
            log.debug("dropping card job %r: deadline passed while queued", job.label)
            _post(job, None, JobTimeout(job.label, job.timeout, started=False))

    def _linger(self) -> bool:
        """After a job, wait a moment for the next one before waiting on the reader: a
        burst of requests then never pays for entering and cancelling a reader wait
        (with PC/SC, SCardGetStatusChange and an SCardCancel over a new connection to
        pcscd, per request). True when a job arrived."""
        with self._lock:
            if self._queue:
                return True
            self._job_arrived.clear()
            self._idle = _Idle.LINGERING  # under the lock: run() knows how to wake us
        try:
            return self._job_arrived.wait(self._linger_s)
        finally:
            with self._lock:
                self._idle = _Idle.BUSY

    def _poll(self) -> None:
        with self._lock:
            if self._queue:
                return  # a job arrived since _next_job looked
            self._idle = _Idle.POLLING  # under the lock: run() knows to wake us
        try:
            events = self._backend.poll_events(self._poll_interval_s)
        except Exception as exc:
            self._poll_failed(exc)
            return
        finally:
            with self._lock:
                self._idle = _Idle.BUSY
        if self._poll_failing:
            log.info("card/reader monitoring works again")
            self._poll_failing = False
        for event in events:
            self._apply(event)

    def _poll_failed(self, exc: Exception) -> None:
        if not self._poll_failing:
            log.warning("card/reader monitoring failed: %s", exc)
            self._poll_failing = True
        else:
            log.debug("card/reader monitoring still failing: %s", exc)
        if isinstance(exc, TransportError) and self._state.reader_present:
            # pcscd gone: every handle is dead; report it as the reader going away.
            self._apply(BackendEvent("reader_removed", self._state.reader or ""))
        if self._kick.wait(_POLL_ERROR_BACKOFF_S):
            self._kick.clear()

    def _execute(self, job: _Job) -> bool:
        """Run `job`; False when it left the card or reader in doubt."""
        started = time.monotonic()
        self._busy_since = started
        result: Any = None
        error: BaseException | None = None
        try:
            result = job.fn()
        except Exception as exc:
            error = exc
        finally:
            finished = time.monotonic()
            self._busy_since = None
            self._current = None
            with self._lock:
                job.state = _JobState.DONE
        self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * (finished - started)

        if isinstance(error, _DROP_DRIVER_ON):
            self._drop_driver()
        if finished > job.deadline:
            log.warning(
                "card job %r overran its %g s deadline (%.2f s); re-opening the card",
                job.label,
                job.timeout,
                finished - started,
            )
            self._drop_driver()
        if isinstance(error, StopIteration | StopAsyncIteration):
            error = RuntimeError(f"card job {job.label!r} raised {type(error).__name__}")
        _post(job, result, error)

        if isinstance(error, CardReset):
            state = self._state
            self._state = replace(state, generation=state.generation + 1)
            self._emit("card_reset", state.reader, state.atr)
            try:
                self._ensure_driver()
            except CardError as exc:
                log.info("re-opening the card after a reset failed: %s", exc)
        return not isinstance(error, _DROP_DRIVER_ON) and finished <= job.deadline

    def _ensure_driver(self) -> CardDriver:
        driver = self._driver
        if driver is None:
            driver = self._backend.open_driver()
            self._driver = driver
        return driver

    def _drop_driver(self) -> None:
        if self._driver is None:
            return
        self._driver = None
        try:
            self._backend.drop_driver()
        except Exception:
            log.exception("releasing the card driver failed")

    def _apply(self, event: BackendEvent) -> None:
        state = self._state
        if event.kind == "reader_added":
            self._state = replace(state, reader_present=True, reader=event.reader)
            self._emit("reader_added", event.reader, None)
        elif event.kind == "reader_removed":
            if state.card_present:
                self._apply(BackendEvent("card_removed", event.reader))
                state = self._state
            self._drop_driver()
            self._state = replace(state, reader_present=False, card_present=False, atr=None)
            self._emit("reader_removed", event.reader, None)
        elif event.kind == "card_inserted":
            self._drop_driver()
            self._state = CardState(
                reader_present=True,
                card_present=True,
                reader=event.reader,
                atr=event.atr,
                generation=state.generation + 1,
            )
            self._emit("card_inserted", event.reader, event.atr)
        elif event.kind == "card_removed":
            self._drop_driver()
            if not state.card_present:
                return  # an empty reader reported as such: nothing changed
            self._state = replace(
                state, card_present=False, atr=None, generation=state.generation + 1
            )
            self._emit("card_removed", event.reader, event.atr or state.atr)

    def _emit(self, kind: OwnerEventKind, reader: str | None, atr: bytes | None) -> None:
        loop = self._loop
        if loop is None:
            return
        event = OwnerEvent(kind, reader, atr, self._state.generation)
        with contextlib.suppress(RuntimeError):  # loop closed
            loop.call_soon_threadsafe(self._dispatch, event)

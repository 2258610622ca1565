"""The selftest's checks: small registered units with an id, a title, an order and what
they need.

A check is an async function of the `SelftestContext` returning an `Outcome`. What it
needs (`Need`) is settled by the runner before it runs: an unmet need skips it with the
reason (no card: the card rows are skipped, saying why). A check that provides a need
(the reader and card checks provide the card; the certificate check the certificate)
leaves it unmet when it is skipped with --skip or cannot finish.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agent.selftest.context import SelftestContext

Status = Literal["pass", "warn", "fail", "skip"]


@dataclass(frozen=True)
class Outcome:
    """What a check found: a status, a one-line message and, unless it passed, a
    one-line fix hint."""

    status: Status
    message: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Need(enum.Enum):
    PCSC = "pcsc"  # the PC/SC backend (not the simulated card)
    CARD = "card"  # a reachable card: nothing before failed to find one
    CERTIFICATE = "certificate"  # the card's signing certificate, read
    SIGN_REQUEST = "sign_request"  # a test signature was asked for (--sign, a PIN)


CheckFunction = Callable[["SelftestContext"], Awaitable[Outcome]]


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    order: int
    run: CheckFunction
    needs: tuple[Need, ...] = ()
    provides: Need | None = None


_REGISTRY: dict[str, CheckSpec] = {}


def check(
    check_id: str,
    title: str,
    *,
    order: int,
    needs: tuple[Need, ...] = (),
    provides: Need | None = None,
) -> Callable[[CheckFunction], CheckFunction]:
    """Register the decorated function as the check `check_id`."""

    def register(run: CheckFunction) -> CheckFunction:
        if check_id in _REGISTRY:
            raise ValueError(f"selftest check {check_id!r} registered twice")
        if any(spec.order == order for spec in _REGISTRY.values()):
            raise ValueError(f"selftest check {check_id!r}: order {order} is taken")
        _REGISTRY[check_id] = CheckSpec(check_id, title, order, run, needs, provides)
        return run

    return register


def registered() -> tuple[CheckSpec, ...]:
    """Every registered check, in running order."""
    return tuple(sorted(_REGISTRY.values(), key=lambda spec: spec.order))

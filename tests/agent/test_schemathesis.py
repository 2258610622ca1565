"""Property-based fuzzing of the served OpenAPI document: no input yields a 5xx.

Schemathesis (Python API) reads /v1/openapi.json from the running agent and generates
requests that fit the schema (positive) and that do not (negative), sent with a valid
token and the listed Origin (Host is the agent's own), so they get past the security
checks and reach validation, the service and the card. Signing runs first, with a
verified PIN, so generated documents and digests reach the card; the PIN endpoints run
last (fuzzed PINs spend tries and eventually block the card).
"""

from __future__ import annotations

import base64
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.agent.conftest import ORIGIN, Agent, assert_no_traceback

MAX_EXAMPLES = 60
LAST = ("/v1/session/end", "/v1/pin/change", "/v1/pin/verify")


def _order(path: str) -> int:
    if path == "/v1/sign":
        return -1
    return LAST.index(path) + 1 if path in LAST else 0


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    no_negative: list[str] = field(default_factory=list)


def fuzz(
    operation: Any, mode: GenerationMode, base_url: str, headers: dict[str, str], tally: Tally
) -> None:
    sign_positive = mode is GenerationMode.POSITIVE and operation.path == "/v1/sign"

    @given(case=operation.as_strategy(generation_mode=mode), payload=st.binary(max_size=4096))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def probe(case: Any, payload: bytes) -> None:
        if sign_positive:
            # The schema says "string" where the API wants base64: make the positive
            # cases valid base64 so that they reach the card.
            if isinstance(case.body.get("data"), str):
                case.body["data"] = base64.b64encode(payload).decode()
            if isinstance(case.body.get("digest"), str):
                digest = (payload * 32)[:32] if payload else bytes(32)
                case.body["digest"] = base64.b64encode(digest).decode()
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        tally.statuses[response.status_code] += 1
        assert_no_traceback(response.content)
        if response.status_code >= 500:
            tally.server_errors.append(
                f"{case.method} {case.formatted_path} -> {response.status_code} "
                f"{response.content[:200]!r}"
            )

    try:
        probe()
    except (Unsatisfiable, schemathesis.errors.SchemathesisError):
        # No negative input exists for an operation without parameters.
        if mode is not GenerationMode.NEGATIVE:
            raise
        tally.no_negative.append(f"{operation.method.upper()} {operation.path}")


@pytest.mark.slow
def test_fuzzed_requests_never_get_a_server_error(agent: Agent, token: str) -> None:
    headers = {"Origin": ORIGIN, "Authorization": f"Bearer {token}"}
    with agent.client(ORIGIN, token) as c:
        assert agent.verify(c).status_code == 200
    schema = schemathesis.openapi.from_url(
        f"{agent.base_url}/v1/openapi.json", headers={"Origin": ORIGIN}, timeout=10
    )
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),  # type: ignore[union-attr]
        key=lambda op: _order(op.path),
    )
    assert {op.path for op in operations} >= {"/v1/sign", "/v1/pin/verify", "/v1/pair"}

    tally = Tally()
    started = time.monotonic()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(operation, mode, agent.base_url, headers, tally)
    elapsed = time.monotonic() - started

    total = sum(tally.statuses.values())
    print(f"schemathesis: {total} requests in {elapsed:.1f} s, statuses {dict(tally.statuses)}")
    print(f"no negative cases for: {tally.no_negative}")
    assert not tally.server_errors, tally.server_errors[:10]
    assert total >= MAX_EXAMPLES * len(operations)
    assert tally.statuses[200] > MAX_EXAMPLES // 2  # signatures and reads did happen
    assert elapsed < 60

"""A client of the native API (`/v1`) that records every call, and pairing the real way.

Every call goes through `Api.call`: it measures the latency, classifies the outcome
(success, the API's error `code`, `bad_response` when a success is not the documented
shape, or no answer at all) into the `Recorder`, and hands the caller an `Answer` (or
None when nothing came back) to decide what a real client would do next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.pairing import PairingError, PairingStore
from soak.recorder import Recorder

# An extension id is 32 letters a-p. The token is bound to this origin.
ORIGIN = "chrome-extension://" + "hgfedcbaponmlkji" * 2
PIN = "88888888"  # the simulated card's PIN (legal-person-sm2)
WRONG_PIN = "12345679"
REQUEST_TIMEOUT_S = 45.0  # longer than card.job_timeout_s plus a full queue


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None  # None: success
    body: Any
    retry_after_s: float | None

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def reason(self) -> str | None:
        """`details.reason` of an error (session_required, pairing_error)."""
        if not isinstance(self.body, dict):
            return None
        details = self.body.get("error", {}).get("details", {})
        reason = details.get("reason") if isinstance(details, dict) else None
        return reason if isinstance(reason, str) else None


def _error_code(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("code"), str):
            return str(error["code"])
    return "bad_response"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


class Api:
    def __init__(self, base_url: str, recorder: Recorder, pairing_path: Path) -> None:
        self.base_url = base_url
        self.recorder = recorder
        self._pairing_path = pairing_path
        self._names = 0
        # One pairing at a time, as an operator approves them: the agent keeps at most
        # three pending requests per origin and drops the oldest beyond that.
        self._pairing = asyncio.Lock()

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        headers = {"Origin": ORIGIN}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=REQUEST_TIMEOUT_S,
            trust_env=False,  # no proxy between us and 127.0.0.1
        )

    async def call(
        self,
        http: httpx.AsyncClient,
        kind: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        expect: Callable[[Any], bool] | None = None,
    ) -> Answer | None:
        started = time.monotonic()
        try:
            response = await http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self.recorder.unanswered(kind, exc)
            return None
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        code: str | None = None
        if not response.is_success:
            code = _error_code(parsed)
        elif expect is not None and not expect(parsed):
            code = "bad_response"
        self.recorder.answered(kind, started, code)
        return Answer(response.status_code, code, parsed, _retry_after(response))

    # --- pairing -----------------------------------------------------------------------

    def _store(self) -> PairingStore:
        # One per operation: a store caches the file's state and is not meant to be
        # shared between threads; the file itself is guarded by flock.
        return PairingStore(self._pairing_path)

    def unique_name(self, what: str) -> str:
        self._names += 1
        return f"soak {what} {self._names}"

    async def pair(self, name: str) -> str | None:
        """Ask, approve on the kiosk side (the pairing store, like `card-agent pair
        approve`), claim. The token, or None if a step failed (recorded)."""
        async with self._pairing, self.client() as http:
            asked = await self.call(
                http,
                "pair",
                "POST",
                "/v1/pair",
                {"client_name": name},
                expect=lambda b: isinstance(b, dict) and "code" in b and "request_id" in b,
            )
            if asked is None or not asked.ok:
                return None
            try:
                await asyncio.to_thread(self._store().approve, asked.body["code"])
            except PairingError as exc:
                self.recorder.notes[f"approve_failed:{exc.code}"] += 1
                return None
            claimed = await self.call(
                http,
                "pair_claim",
                "POST",
                "/v1/pair/claim",
                {"request_id": asked.body["request_id"]},
                expect=lambda b: isinstance(b, dict) and isinstance(b.get("token"), str),
            )
            if claimed is None or not claimed.ok:
                if claimed is not None and claimed.reason is not None:
                    self.recorder.notes[f"claim_failed:{claimed.reason}"] += 1
                return None
            return str(claimed.body["token"])

    async def revoke(self, name: str) -> bool:
        """Revoke the client paired as `name` (like `card-agent pair revoke`)."""

        def revoke() -> bool:
            store = self._store()
            for client in store.list_clients():
                if client.client_name == name:
                    return store.revoke(client.client_id)
            return False

        return await asyncio.to_thread(revoke)

"""The mixed load on the native API: what kiosk clients do, and what they do when the
agent says no.

Workers (each an asyncio task, each its own paired client where a token is needed):

- `status_poller`: GET /v1/status twice a second (the extension's "is the agent up");
- `card_reader`: card info, certificates and PIN status every few seconds;
- `signer` (several): verify the PIN, then sign documents at a visitor's pace, ending
  the session now and then and verifying again;
- `wrong_pin`: now and then a mistyped PIN, then the right one (it ends every session:
  the other clients see `session_required` with reason `card_verification_lost`);
- `pairing_churn`: pair a new client, use it, revoke it, check it is refused;
- `events_listener`: the /v1/events WebSocket, reconnecting whenever it drops.

Every documented error code is handled as a real client would: `session_required` ->
verify again; `busy` -> wait `Retry-After`; card and reader codes -> wait and retry;
`unauthorized` -> pair again; no answer (agent restarting) -> wait and retry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Origin

from soak.native import ORIGIN, PIN, WRONG_PIN, Answer, Api
from soak.recorder import Recorder, SignAck

PURPOSES = ("agreement", "seal", "data_authorisation", "application", "receipt", "other")
SIGNS_PER_SESSION = 25
WS_TIMEOUT_S = 10.0


@dataclass
class LoadContext:
    api: Api
    recorder: Recorder
    events_url: str
    stopping: asyncio.Event
    rng: random.Random

    async def sleep(self, seconds: float) -> bool:
        """Sleep unless the run stops first; False once it stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), max(0.0, seconds))
        return not self.stopping.is_set()

    async def back_off(self, answer: Answer | None) -> None:
        """What a client waits before trying again after `answer` (None: no answer)."""
        if answer is None:
            await self.sleep(0.5)
        elif answer.code == "busy":
            await self.sleep(answer.retry_after_s or 1.0)
        else:
            await self.sleep(1.0)

    async def paired(self, what: str) -> tuple[str, str] | None:
        """(token, client name), pairing until it works; None if the run stops first."""
        while not self.stopping.is_set():
            name = self.api.unique_name(what)
            token = await self.api.pair(name)
            if token is not None:
                return token, name
            await self.sleep(1.0)
        return None


def _has(*keys: str) -> Callable[[Any], bool]:
    return lambda body: isinstance(body, dict) and all(k in body for k in keys)


def _is_audit_id(body: object) -> bool:
    if not isinstance(body, dict):
        return False
    audit_id = body.get("audit_id")
    return isinstance(audit_id, str) and audit_id.startswith("a-") and "signature" in body


async def status_poller(ctx: LoadContext, interval_s: float = 0.5) -> None:
    async with ctx.api.client() as http:
        while not ctx.stopping.is_set():
            await ctx.api.call(
                http, "status", "GET", "/v1/status", expect=_has("reader_present", "card_present")
            )
            await ctx.sleep(interval_s)


async def card_reader(ctx: LoadContext, interval_s: float = 3.0) -> None:
    pairing = await ctx.paired("reader")
    if pairing is None:
        return
    token, _ = pairing
    http = ctx.api.client(token)
    try:
        while not ctx.stopping.is_set():
            for kind, path, keys in (
                ("card_info", "/v1/card", ("card_number",)),
                ("certificates", "/v1/card/certificates", ("sign",)),
                ("pin_status", "/v1/pin", ("tries_left",)),
            ):
                answer = await ctx.api.call(http, kind, "GET", path, expect=_has(*keys))
                if answer is not None and answer.code == "unauthorized":
                    await http.aclose()
                    pairing = await ctx.paired("reader")
                    if pairing is None:
                        return
                    http = ctx.api.client(pairing[0])
            await ctx.sleep(interval_s * ctx.rng.uniform(0.7, 1.3))
    finally:
        await http.aclose()


def _document(rng: random.Random, n: int) -> bytes:
    size = rng.randint(200, 4000)
    head = f"<soak n='{n}'>".encode()
    return head + rng.randbytes(size)


async def signer(ctx: LoadContext, number: int) -> None:
    """Verify, then sign at a visitor's pace; every error handled like a client would."""
    pairing = await ctx.paired(f"signer {number}")
    if pairing is None:
        return
    token, _ = pairing
    http = ctx.api.client(token)
    session = False
    signed = 0  # attempts: each gets its own title
    in_session = 0  # signatures received in the current session
    try:
        while not ctx.stopping.is_set():
            if not session:
                answer = await ctx.api.call(
                    http, "verify", "POST", "/v1/pin/verify", {"pin": PIN}, expect=_has("session")
                )
                if answer is not None and answer.ok:
                    session, in_session = True, 0
                    continue
                if answer is not None and answer.code == "pin_tries_low":
                    # Only the wrong_pin worker spends tries, one at a time; never expected.
                    ctx.recorder.notes["pin_tries_low_seen"] += 1
                    await ctx.api.call(
                        http,
                        "verify",
                        "POST",
                        "/v1/pin/verify",
                        {"pin": PIN, "confirm_final_try": True},
                    )
                elif answer is not None and answer.code == "unauthorized":
                    await http.aclose()
                    pairing = await ctx.paired(f"signer {number}")
                    if pairing is None:
                        return
                    http = ctx.api.client(pairing[0])
                    continue
                await ctx.back_off(answer)
                continue
            signed += 1
            title = f"soak signer {number} doc {signed}"
            body = {
                "purpose": ctx.rng.choice(PURPOSES),
                "title": title,
                "data": base64.b64encode(_document(ctx.rng, signed)).decode(),
                "signature_format": ctx.rng.choice(("raw", "der")),
            }
            answer = await ctx.api.call(http, "sign", "POST", "/v1/sign", body, expect=_is_audit_id)
            if answer is not None and answer.ok:
                ctx.recorder.ack(SignAck("native", title, answer.body["audit_id"], time.time()))
                in_session += 1
                if in_session == SIGNS_PER_SESSION:
                    await ctx.api.call(http, "session_end", "POST", "/v1/session/end", {})
                    session = False
                await ctx.sleep(ctx.rng.uniform(0.3, 1.5))
                continue
            if answer is not None and answer.code == "session_required":
                ctx.recorder.notes[f"session_required:{answer.reason or 'none'}"] += 1
                session = False
                continue
            if answer is not None and answer.code == "unauthorized":
                session = False
                continue  # verify answers unauthorized too, and pairs again
            await ctx.back_off(answer)
    finally:
        await http.aclose()


async def wrong_pin(ctx: LoadContext, interval_s: float) -> None:
    """A mistyped PIN now and then, then the right one, so the counter is back at full."""
    pairing = await ctx.paired("typo")
    if pairing is None:
        return
    http = ctx.api.client(pairing[0])
    try:
        while await ctx.sleep(interval_s * ctx.rng.uniform(0.8, 1.2)):
            status = await ctx.api.call(
                http, "pin_status", "GET", "/v1/pin", expect=_has("tries_left")
            )
            if status is None or not status.ok:
                continue
            tries = status.body["tries_left"]
            if tries is not None and tries < 5:
                ctx.recorder.notes["wrong_pin_skipped_low_tries"] += 1
                continue
            answer = await ctx.api.call(
                http, "verify_wrong", "POST", "/v1/pin/verify", {"pin": WRONG_PIN}
            )
            if answer is not None and answer.ok:
                ctx.recorder.notes["wrong_pin_accepted"] += 1
            for _ in range(10):  # put the counter back: the right PIN
                answer = await ctx.api.call(http, "verify", "POST", "/v1/pin/verify", {"pin": PIN})
                if answer is not None and answer.ok:
                    await ctx.api.call(http, "session_end", "POST", "/v1/session/end", {})
                    break
                await ctx.back_off(answer)
    finally:
        await http.aclose()


async def pairing_churn(ctx: LoadContext, interval_s: float) -> None:
    """Pair, use, revoke, and check the revoked token is refused."""
    while await ctx.sleep(interval_s * ctx.rng.uniform(0.8, 1.2)):
        name = ctx.api.unique_name("visitor")
        token = await ctx.api.pair(name)
        if token is None:
            continue
        async with ctx.api.client(token) as http:
            await ctx.api.call(http, "pin_status", "GET", "/v1/pin", expect=_has("tries_left"))
            if not await ctx.api.revoke(name):
                ctx.recorder.notes["revoke_found_no_client"] += 1
                continue
            answer = await ctx.api.call(http, "revoked_use", "GET", "/v1/pin")
            if answer is not None and answer.code != "unauthorized":
                ctx.recorder.notes[f"revoked_token_got:{answer.code or 'ok'}"] += 1


async def events_listener(ctx: LoadContext) -> None:
    """The events WebSocket, authenticated, reconnecting whenever it drops."""
    pairing = await ctx.paired("events")
    if pairing is None:
        return
    token = pairing[0]
    while not ctx.stopping.is_set():
        started = time.monotonic()
        connected = False
        try:
            async with ws_connect(
                ctx.events_url, origin=Origin(ORIGIN), open_timeout=WS_TIMEOUT_S
            ) as ws:
                await ws.send(json.dumps({"type": "auth", "token": token}))
                hello = json.loads(await asyncio.wait_for(ws.recv(), WS_TIMEOUT_S))
                ok = isinstance(hello, dict) and hello.get("type") == "hello"
                ctx.recorder.answered("events_connect", started, None if ok else "bad_response")
                connected = True
                stop = asyncio.ensure_future(ctx.stopping.wait())
                try:
                    while not stop.done():
                        recv = asyncio.ensure_future(ws.recv())
                        await asyncio.wait([recv, stop], return_when=asyncio.FIRST_COMPLETED)
                        if not recv.done():
                            recv.cancel()
                            break
                        event = json.loads(recv.result())
                        ctx.recorder.events_seen[str(event.get("type"))] += 1
                finally:
                    stop.cancel()
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 4401:
                ctx.recorder.notes["events_refused_4401"] += 1
                pairing = await ctx.paired("events")
                if pairing is None:
                    return
                token = pairing[0]
            elif connected:
                ctx.recorder.notes["events_dropped"] += 1
            else:
                ctx.recorder.unanswered("events_connect", exc)
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            ctx.recorder.unanswered("events_connect", exc)
        await ctx.sleep(0.5)

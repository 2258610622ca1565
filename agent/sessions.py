"""Signing sessions: what a verified PIN buys, and for how long.

A session is bound to the paired client that verified the PIN, to the card's number
and to the card's generation (bumped on every insert, remove and reset). It ends on
explicit end, TTL, idle timeout, card removal or reset; the service then clears the
card's verified state so the next visitor at the kiosk starts clean.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class SigningSession:
    client_id: str
    card_number: str
    generation: int
    created_at: float
    last_used_at: float

    def expires_at(self, ttl_s: float, idle_s: float) -> float:
        return min(self.created_at + ttl_s, self.last_used_at + idle_s)


class SessionManager:
    def __init__(
        self, *, ttl_s: float, idle_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.idle_s = idle_s
        self._clock = clock
        self._sessions: dict[str, SigningSession] = {}

    def open(self, client_id: str, card_number: str, generation: int) -> SigningSession:
        now = self._clock()
        session = SigningSession(client_id, card_number, generation, now, now)
        self._sessions[client_id] = session
        return session

    def get(self, client_id: str) -> SigningSession | None:
        session = self._sessions.get(client_id)
        if session is None:
            return None
        if self._clock() >= session.expires_at(self.ttl_s, self.idle_s):
            # Not removed here: `expire()` must still return it, because its caller is
            # the one that logs the card out. Dropping it silently left the card verified.
            return None
        return session

    def live(self) -> list[SigningSession]:
        """The sessions not yet past their TTL or idle time."""
        now = self._clock()
        return [s for s in self._sessions.values() if now < s.expires_at(self.ttl_s, self.idle_s)]

    def touch(self, session: SigningSession) -> None:
        session.last_used_at = self._clock()

    def end(self, client_id: str) -> SigningSession | None:
        return self._sessions.pop(client_id, None)

    def end_all(self) -> list[SigningSession]:
        ended = list(self._sessions.values())
        self._sessions.clear()
        return ended

    def expire(self) -> list[SigningSession]:
        """Drop and return the sessions past their TTL or idle timeout."""
        now = self._clock()
        gone = [s for s in self._sessions.values() if now >= s.expires_at(self.ttl_s, self.idle_s)]
        for session in gone:
            del self._sessions[session.client_id]
        return gone

    def remaining_s(self, session: SigningSession) -> float:
        return max(0.0, session.expires_at(self.ttl_s, self.idle_s) - self._clock())

    def __len__(self) -> int:
        return len(self._sessions)

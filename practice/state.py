"""Visits to the practice site: one per browser (a cookie), in memory only."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from card.crypto.certs import CertificateInfo


@dataclass(frozen=True)
class SignatureRecord:
    step: str
    purpose: str
    title: str
    sha256: str  # of the signed document
    algorithm: str
    certificate_number: str
    signature_b64: str
    verified: bool
    at: float


@dataclass
class Visit:
    visit_id: str
    reference: str = field(default_factory=lambda: "LX" + secrets.token_hex(4).upper())
    created: float = field(default_factory=time.time)
    challenge: str | None = None
    certificate: CertificateInfo | None = None
    holder: str = ""
    company: str = ""
    uscc: str = ""
    card_number: str = ""  # masked
    contact: dict[str, str] = field(default_factory=dict)
    documents: dict[str, str] = field(default_factory=dict)  # step -> text handed out
    records: list[SignatureRecord] = field(default_factory=list)
    policy_number: str = field(
        default_factory=lambda: "SME-PRACTICE-" + secrets.token_hex(5).upper()
    )

    @property
    def logged_in(self) -> bool:
        return self.certificate is not None

    @property
    def cert_number(self) -> str:
        return self.certificate.serial_hex if self.certificate else ""

    def signed(self, step: str) -> bool:
        return any(r.step == step and r.verified for r in self.records)


class VisitStore:
    """At most `limit` visits, the least recently used dropped first; idle ones expire."""

    def __init__(self, *, limit: int = 256, idle_s: float = 3600) -> None:
        self._visits: OrderedDict[str, Visit] = OrderedDict()
        self._limit = limit
        self._idle_s = idle_s
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, visit_id: str | None) -> Visit | None:
        if not visit_id:
            return None
        with self._lock:
            visit = self._visits.get(visit_id)
            if visit is None:
                return None
            if time.monotonic() - self._seen[visit_id] > self._idle_s:
                del self._visits[visit_id]
                del self._seen[visit_id]
                return None
            self._visits.move_to_end(visit_id)
            self._seen[visit_id] = time.monotonic()
            return visit

    def new(self) -> Visit:
        visit = Visit(secrets.token_urlsafe(18))
        with self._lock:
            self._visits[visit.visit_id] = visit
            self._seen[visit.visit_id] = time.monotonic()
            while len(self._visits) > self._limit:
                old, _ = self._visits.popitem(last=False)
                del self._seen[old]
        return visit

    def drop(self, visit_id: str) -> None:
        with self._lock:
            self._visits.pop(visit_id, None)
            self._seen.pop(visit_id, None)

"""What the selftest's checks share: the `SelftestContext` of one run."""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.access import CardAccess, ReaderView
from agent.config import Config
from agent.selftest.registry import Need
from agent.selftest.report import CheckResult
from card.crypto.certs import CertificateInfo
from card.eport.driver import PinStatus


@dataclass(frozen=True)
class SignRequest:
    """`--sign`: verify this PIN and sign a test message (never one of the last
    `security.pin_floor` tries unless `confirm_final_try`)."""

    pin: str = field(repr=False)
    confirm_final_try: bool = False


@dataclass
class SelftestContext:
    """One run: its inputs, then what the checks found so far, for the checks after
    them (set by the check named in each comment)."""

    config: Config
    access: CardAccess
    sign: SignRequest | None = None
    config_source: str | None = None  # where the configuration came from, for the report

    results: list[CheckResult] = field(default_factory=list)  # the runner: rows so far
    readers: list[ReaderView] | None = None  # pcscd: every reader pcscd lists (PC/SC)
    reader: ReaderView | None = None  # reader: the one the card checks use
    sign_cert: CertificateInfo | None = None  # certificate: the signing certificate
    pin_status: PinStatus | None = None  # pin
    _unmet: dict[Need, str] = field(default_factory=dict)

    @property
    def pcsc(self) -> bool:
        return self.config.card.backend == "pcsc"

    def block(self, need: Need, reason: str) -> None:
        """`need` cannot be met in this run; the first reason given is kept."""
        self._unmet.setdefault(need, reason)

    def unmet(self, need: Need) -> str | None:
        """Why `need` is not met (the skip message of a check that needs it), or None."""
        if need is Need.PCSC:
            return None if self.pcsc else f"n/a ({self.config.card.backend} backend)"
        if need is Need.SIGN_REQUEST:
            return None if self.sign is not None else "not requested (--sign)"
        if need is Need.CERTIFICATE:
            reason = self._unmet.get(Need.CARD) or self._unmet.get(Need.CERTIFICATE)
            if reason is None and self.sign_cert is None:
                reason = "no certificate"
            return reason
        return self._unmet.get(need)

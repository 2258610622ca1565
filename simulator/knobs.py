"""Knobs that make the software card behave like the awkward real cards a host meets.

The defaults describe a friendly T=1 card: short APDUs of up to 255/256 bytes, chaining
accepted, no 6Cxx corrections, no delays. Each knob turns on one thing the exchange layer
must cope with (61xx splitting, 6Cxx, chaining refused, extended length, slowness,
arbitrary injected errors). The card announces the size and flag knobs in its FCI, so a
host that believes the FCI stays within them.

`CardKnobs` is mutable on purpose: a test flips a knob or queues a fault between two
APDUs of a running session.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

from card.apdu import EXTENDED_MAX_LC, EXTENDED_MAX_LE, SHORT_MAX_LC, SHORT_MAX_LE
from card.eport.profile import AlgorithmRef

# The FCI carries the sizes in two bytes, so an extended card announces at most this.
_FCI_SIZE_MAX = 0xFFFF


@dataclass(frozen=True, slots=True)
class TimingModel:
    """How long the card takes: a *model* for realistic pacing, not a measurement.

    Smart-card signatures are slow compared to host crypto: published figures for
    SM2 and RSA-2048 on contact cards span roughly 50-500 ms. `REALISTIC` picks values in
    that range so that timeouts, progress reporting and queueing in the agent get
    exercised; nobody measured an E-Port card to obtain them.
    """

    apdu_delay_s: float = 0.0  # every APDU: T=1 block exchange + card OS dispatch
    sm2_signature_s: float = 0.0
    rsa1024_signature_s: float = 0.0
    rsa2048_signature_s: float = 0.0

    INSTANT: ClassVar[TimingModel]
    REALISTIC: ClassVar[TimingModel]

    def __post_init__(self) -> None:
        for name in (
            "apdu_delay_s",
            "sm2_signature_s",
            "rsa1024_signature_s",
            "rsa2048_signature_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def flat(cls, apdu_delay_s: float, signature_delay_s: float) -> TimingModel:
        """The same signature time whatever the key."""
        return cls(apdu_delay_s, signature_delay_s, signature_delay_s, signature_delay_s)

    def signature_delay_s(self, algorithm: AlgorithmRef, key_bits: int) -> float:
        if algorithm is AlgorithmRef.SM2_SM3:
            return self.sm2_signature_s
        # RSA cost grows about with the cube of the modulus size; two points suffice here.
        return self.rsa1024_signature_s if key_bits <= 1024 else self.rsa2048_signature_s


TimingModel.INSTANT = TimingModel()
TimingModel.REALISTIC = TimingModel(
    apdu_delay_s=0.002,
    sm2_signature_s=0.150,
    rsa1024_signature_s=0.080,
    rsa2048_signature_s=0.300,
)


@dataclass(slots=True)
class _Fault:
    sw: int
    ins: int | None
    remaining: int


@dataclass
class CardKnobs:
    """Transport-level behaviour of the simulated card (not persisted with its state)."""

    max_command_data: int = SHORT_MAX_LC  # per APDU; longer command data -> 6700
    max_response_data: int = SHORT_MAX_LE  # per APDU; longer answers -> 61xx + GET RESPONSE
    exact_le: bool = False  # T=0 style: 6Cxx when Le does not match the answer's length
    chaining: bool = True  # CLA|0x10 accepted; when False -> 6884
    extended_length: bool = False  # when False an extended-length APDU -> 6700
    timing: TimingModel = TimingModel.INSTANT
    _faults: list[_Fault] = field(default_factory=list, init=False, repr=False, compare=False)
    # Faults may be queued from a test thread while the card thread processes APDUs.
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not 1 <= self.max_command_data <= EXTENDED_MAX_LC:
            raise ValueError(f"max_command_data must be 1..{EXTENDED_MAX_LC}")
        if not 1 <= self.max_response_data <= EXTENDED_MAX_LE:
            raise ValueError(f"max_response_data must be 1..{EXTENDED_MAX_LE}")

    @property
    def apdu_delay_s(self) -> float:
        return self.timing.apdu_delay_s

    def signature_delay_s(self, algorithm: AlgorithmRef, key_bits: int) -> float:
        return self.timing.signature_delay_s(algorithm, key_bits)

    # --- what the FCI announces ------------------------------------------------------

    @property
    def effective_max_command_data(self) -> int:
        """What one APDU can really carry given the length encoding the card accepts."""
        cap = min(EXTENDED_MAX_LC, _FCI_SIZE_MAX) if self.extended_length else SHORT_MAX_LC
        return min(self.max_command_data, cap)

    @property
    def effective_max_response_data(self) -> int:
        # 65536 does not fit the FCI's two bytes; announcing 65535 costs one byte.
        cap = _FCI_SIZE_MAX if self.extended_length else SHORT_MAX_LE
        return min(self.max_response_data, cap)

    # --- injected errors -------------------------------------------------------------

    def fail_next(self, sw: int, ins: int | None = None, count: int = 1) -> None:
        """Answer `sw` (without executing anything) to the next `count` APDUs whose INS is
        `ins` (any INS when None). Queued faults are matched in order."""
        if not 0 <= sw <= 0xFFFF:
            raise ValueError(f"status word out of range: {sw:#x}")
        if ins is not None and not 0 <= ins <= 0xFF:
            raise ValueError(f"INS out of range: {ins:#x}")
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.append(_Fault(sw, ins, count))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending_faults(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def take_fault(self, ins: int) -> int | None:
        """The injected SW for this APDU, if one is queued for it (consumes one use)."""
        with self._lock:
            for fault in self._faults:
                if fault.ins is None or fault.ins == ins:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                    return fault.sw
        return None

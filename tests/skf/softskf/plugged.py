"""A simulated card in a softskf instance of its own, for an agent on the SKF backend.

Each `SkfCard` gets a copy of the compiled library in its directory: softskf keeps its
store beside the file it was loaded from (`<library>.store`, control file
`<library>.store.control`), and the dynamic loader gives every copy its own globals
(handles, logins, call counters), so several agents in one test process each have a
token of their own, and a `card-agent` subprocess reaches the same store through the
same files. The card is one of the simulator's profiles (its certificates, keys, PIN
and retry counter, `store.device_from_state`); a driver registry file in the directory
sends the agent to the copy (`card.registry`).
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.state import CardFactory, CardState
from tests.skf.softskf.build import build_softskf
from tests.skf.softskf.control import SoftSkfControl
from tests.skf.softskf.store import device_from_state, user_pin_counter, write_store

DEVICE = "SoftSKF Token 0"
APPLICATION = "EPORT"
CONTAINER = "SignKey"
REGISTRY_ENTRY = "softskf-test-token"
# Every SKF function a card operation can call; the device-event calls are not card
# operations (the agent waits on them between jobs) and softskf does not count them.
_CARD_CALLS = (
    "SKF_ConnectDev",
    "SKF_DisConnectDev",
    "SKF_GetDevInfo",
    "SKF_EnumApplication",
    "SKF_OpenApplication",
    "SKF_CloseApplication",
    "SKF_GetPINInfo",
    "SKF_VerifyPIN",
    "SKF_ChangePIN",
    "SKF_ClearSecureState",
    "SKF_EnumContainer",
    "SKF_OpenContainer",
    "SKF_CloseContainer",
    "SKF_GetContainerType",
    "SKF_ExportCertificate",
    "SKF_ExportPublicKey",
    "SKF_ECCSignData",
    "SKF_RSASignData",
    "SKF_DigestInit",
    "SKF_Digest",
    "SKF_CloseHandle",
)
_SIGN_CALLS = ("SKF_ECCSignData", "SKF_RSASignData")
# TimingModel.REALISTIC's signature times, for `timing = "realistic"` cards.
_REALISTIC_MS = {"SM2": 150, "RSA1024": 80, "RSA2048": 300}

_states: dict[str, CardState] = {}
_states_lock = threading.Lock()
_factory = CardFactory()


def card_state(profile: str) -> CardState:
    """The card of `profile`, made once per test process: softskf only reads it (the
    PIN counter lives in each card's own store), so cards can share it."""
    with _states_lock:
        state = _states.get(profile)
        if state is None:
            state = _states[profile] = _factory.make_state(profile)
        return state


@dataclass
class SkfCard:
    state: CardState  # what the card was issued with; the live PIN counter is in the store
    library_path: Path
    registry_path: Path
    control: SoftSkfControl = field(repr=False)
    _api: Any = field(repr=False)

    @property
    def store_path(self) -> Path:
        return self.library_path.with_name(self.library_path.name + ".store")

    def calls(self, *functions: str) -> int:
        """Calls of these SKF functions this card has seen."""
        return sum(int(self._api.SOFTSKF_CallCount(f.encode())) for f in functions)

    def card_operations(self) -> int:
        return self.calls(*_CARD_CALLS)

    def signatures_made(self) -> int:
        return self.calls(*_SIGN_CALLS)

    def pins_presented(self) -> int:
        return self.calls("SKF_VerifyPIN")

    def logged_in(self) -> bool:
        return bool(self._api.SOFTSKF_UserLoggedIn())

    def pin_tries_left(self) -> int:
        return user_pin_counter(self.store_path, APPLICATION)[1]

    def slow_signatures(self, seconds: float) -> None:
        self.control.delays({f: seconds for f in _SIGN_CALLS})

    def faulty_signatures(self, faulty: bool) -> None:
        self.control.corrupt_signatures(faulty)

    def pull(self) -> None:
        self.control.pull()

    def insert(self) -> None:
        self.control.insert()


def registry_text(library: Path, state: CardState) -> str:
    return f"""version = 1

[[driver]]
name = "{REGISTRY_ENTRY}"
description = "card-agent's test SKF library (tests/skf/softskf)"
driver = "skf"
library = "{library}"
devices = ["SoftSKF Token *"]
card_type = "{state.card_type.value}"
"""


@contextlib.contextmanager
def plugged_skf_card(directory: Path, card: dict[str, Any] | None = None) -> Iterator[SkfCard]:
    """A token holding the card `card` describes (profile, timing) in its own softskf
    copy under `directory`, plugged in. On the way out a hanging call is let go."""
    settings = card or {}
    directory.mkdir(parents=True, exist_ok=True)
    library = directory / "libsoftskf.so"
    shutil.copyfile(build_softskf("full"), library)
    state = card_state(settings.get("profile", "legal-person-sm2"))
    store = library.with_name(library.name + ".store")
    token = device_from_state(state, device=DEVICE, application=APPLICATION, container=CONTAINER)
    write_store(store, [token])
    control = SoftSkfControl(store.with_name(store.name + ".control"))
    if settings.get("timing") == "realistic":
        key = "SM2" if state.algorithm == "SM2" else f"RSA{state.key_bits}"
        control.delays({f: _REALISTIC_MS[key] / 1000 for f in _SIGN_CALLS})
    registry = directory / "drivers.toml"
    registry.write_text(registry_text(library, state), encoding="utf-8")
    api = ctypes.CDLL(str(library))  # the same instance the agent loads (same file)
    api.SOFTSKF_CallCount.restype = ctypes.c_uint32
    api.SOFTSKF_CallCount.argtypes = (ctypes.c_char_p,)
    api.SOFTSKF_UserLoggedIn.restype = ctypes.c_uint32
    plugged = SkfCard(state, library, registry, control, api)
    try:
        yield plugged
    finally:
        control.hang(None)  # an abandoned call may finish

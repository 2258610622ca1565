"""Driving softskf from a test: plugging, faults and vendor behaviours.

softskf re-reads its control file on every call, so a change here takes effect at the
library's next call (and within ~20 ms for a hanging call or a waiting
SKF_WaitForDevEvent). Every write replaces the file atomically.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal


class SoftSkfControl:
    """The control file of one softskf store."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._settings: dict[str, str] = {"present": "1", "generation": "0"}
        self._fails: dict[str, int] = {}
        self._delays: dict[str, int] = {}
        self._write()

    def _write(self) -> None:
        lines = [f"{k}={v}" for k, v in self._settings.items()]
        lines += [f"fail={fn}:0x{code:08X}" for fn, code in self._fails.items()]
        lines += [f"delay={fn}:{ms}" for fn, ms in self._delays.items()]
        tmp = self.path.with_name(self.path.name + ".new")
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")
        os.replace(tmp, self.path)

    def _set(self, key: str, value: str | None) -> None:
        if value is None:
            self._settings.pop(key, None)
        else:
            self._settings[key] = value
        self._write()

    # --- devices ---------------------------------------------------------------------

    def pull(self) -> None:
        """Every device leaves: calls on its handles get SAR_DEVICE_REMOVED."""
        self._set("present", "0")

    def insert(self) -> None:
        """The devices come back as new insertions: handles from before are stale."""
        generation = int(self._settings["generation"]) + 1
        self._settings["generation"] = str(generation)
        self._set("present", "1")

    def replug(self) -> None:
        """Pull and re-insert in one step, as if between two looks."""
        self.insert()

    # --- vendor behaviours -------------------------------------------------------------

    def size_convention(self, convention: Literal["ok", "too_small"]) -> None:
        """How a NULL-buffer size query answers: SAR_OK or SAR_BUFFER_TOO_SMALL."""
        self._set("size_convention", convention)

    def digest_supported(self, supported: bool) -> None:
        self._set("digest", "1" if supported else "0")

    def cancel_latch(self, latched: bool) -> None:
        """Whether a cancel with nobody waiting is remembered for the next wait."""
        self._set("cancel_latch", "1" if latched else "0")

    def cancel_result(self, code: int) -> None:
        """What a cancelled SKF_WaitForDevEvent returns."""
        self._set("cancel_rc", f"0x{code:08X}")

    def delays(self, seconds: dict[str, float]) -> None:
        """These functions take this long (0: no delay), as a slow token does."""
        for function, value in seconds.items():
            if value > 0:
                self._delays[function] = round(value * 1000)
            else:
                self._delays.pop(function, None)
        self._write()

    def corrupt_signatures(self, corrupt: bool) -> None:
        """SKF_ECCSignData / SKF_RSASignData return a signature with one bit flipped."""
        self._set("corrupt_signature", "1" if corrupt else None)

    def signature_alignment(self, alignment: Literal["right", "left"]) -> None:
        """Where SKF_ECCSignData puts r and s in their 64-byte fields (the standard:
        right)."""
        self._set("sig_align", alignment)

    # --- faults ------------------------------------------------------------------------

    def fail(self, function: str, code: int) -> None:
        self._fails[function] = code
        self._write()

    def clear_failure(self, function: str) -> None:
        self._fails.pop(function, None)
        self._write()

    def hang(self, function: str | None) -> None:
        """`function` blocks (before doing anything) until `hang(None)`."""
        self._set("hang", function)

    def wait_until_hanging(self, function: str, timeout_s: float = 10.0) -> None:
        """Block until a call of `function` is inside its hang."""
        marker = self.path.with_name(self.path.name + ".hanging")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if marker.read_text(encoding="ascii") == function:
                    return
            except FileNotFoundError:
                pass
            time.sleep(0.01)
        raise TimeoutError(f"no call of {function} is hanging after {timeout_s} s")

    def wrong_size(
        self, function: str | None, mode: Literal["short", "overflow"] = "short"
    ) -> None:
        self._set("wrong_size", None if function is None else f"{function}:{mode}")

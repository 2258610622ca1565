"""Reference data with a retry counter: the user PIN and the issuer's unblock code.

Values are kept as the profile's 16-byte PIN block, so a comparison is always two
16-byte strings through `hmac.compare_digest`: its time does not depend on where the
first wrong character is, nor on the length of the PIN.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable

from card.eport.profile import PIN_BLOCK_LEN, PIN_MAX_LEN, PIN_MIN_LEN

_PAD = 0xFF
DEFAULT_MAX_TRIES = 10


def parse_pin_block(block: bytes) -> bytes | None:
    """The PIN inside a well-formed block, or None: 16 bytes, 6-16 printable ASCII
    characters (0x21-0x7E) followed only by FF padding."""
    if len(block) != PIN_BLOCK_LEN:
        return None
    end = block.find(_PAD)
    if end < 0:
        end = PIN_BLOCK_LEN
    value, padding = block[:end], block[end:]
    if not PIN_MIN_LEN <= len(value) <= PIN_MAX_LEN:
        return None
    if any(b != _PAD for b in padding) or any(not 0x21 <= b <= 0x7E for b in value):
        return None
    return bytes(value)


def make_pin_block(value: str | bytes) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    block = raw + bytes([_PAD]) * (PIN_BLOCK_LEN - len(raw))
    if parse_pin_block(block) is None:
        raise ValueError("a PIN is 6 to 16 printable ASCII characters")
    return block


class CheckResult(enum.Enum):
    OK = enum.auto()
    WRONG = enum.auto()  # one try spent; see tries_left
    BLOCKED = enum.auto()  # nothing compared, nothing spent


class PinObject:
    """A secret with a retry counter: blocked at 0, reset to the maximum on success.

    `on_change` is called after every change of the value or the counter, so that the
    card's state file follows (a card locked before a restart stays locked).
    """

    def __init__(
        self,
        value: str | bytes,
        *,
        max_tries: int = DEFAULT_MAX_TRIES,
        tries_left: int | None = None,
    ) -> None:
        if max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        left = max_tries if tries_left is None else tries_left
        if not 0 <= left <= max_tries:
            raise ValueError(f"tries_left must be 0..{max_tries}")
        self._block = make_pin_block(value)
        self.max_tries = max_tries
        self._tries_left = left
        self.on_change: Callable[[], None] | None = None

    def __repr__(self) -> str:  # never the value
        return f"PinObject(tries_left={self._tries_left}, max_tries={self.max_tries})"

    @property
    def tries_left(self) -> int:
        return self._tries_left

    @property
    def blocked(self) -> bool:
        return self._tries_left == 0

    @property
    def value(self) -> bytes:
        """The PIN (for the state file only; never log it)."""
        parsed = parse_pin_block(self._block)
        if parsed is None:  # only well-formed blocks are ever stored
            raise RuntimeError("corrupt PIN object")
        return parsed

    def check(self, block: bytes) -> CheckResult:
        """Compare a well-formed PIN block; spends a try when wrong."""
        if self.blocked:
            return CheckResult.BLOCKED
        if hmac.compare_digest(self._block, bytes(block)):
            if self._tries_left != self.max_tries:
                self._tries_left = self.max_tries
                self._changed()
            return CheckResult.OK
        self._tries_left -= 1
        self._changed()
        return CheckResult.WRONG

    def set_value(self, value: str | bytes) -> None:
        """New secret, counter back to the maximum."""
        self._block = make_pin_block(value)
        self._tries_left = self.max_tries
        self._changed()

    def reset_counter(self) -> None:
        if self._tries_left != self.max_tries:
            self._tries_left = self.max_tries
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

"""Checks every listening endpoint makes before routing (the native API and the
official-protocol endpoint alike): loopback Host names, one value per guarded header,
bounded JSON nesting. ASGI type names for the middleware that use them."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_JSON_DEPTH = 16
DUPLICATE = "\x00duplicate"  # what `single_header` returns for a repeated header
_STRUCTURAL = re.compile(rb'[\[\]{}"\\]')


def allowed_hosts(port: int) -> frozenset[str]:
    """Host values a loopback listener on `port` answers to. Page JavaScript cannot set
    Host, so this defeats DNS rebinding."""
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def single_header(scope: Scope, name: bytes) -> str | None:
    """The single value of a header; a repeated Host/Origin is treated as hostile
    (`DUPLICATE`, which matches no allowlist)."""
    found: str | None = None
    for key, value in scope.get("headers", ()):
        if key == name:
            if found is not None:
                return DUPLICATE
            found = value.decode("latin-1")
    return found


def json_depth_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when arrays/objects nest deeper than `limit`.

    Checked on the raw bytes before any parser recurses: a deeply nested body would
    otherwise cost recursion (and, in some parsers, a crash) before validation runs.
    Only structural characters are visited, so a long base64 string costs one match.
    """
    depth = 0
    in_string = False
    skip_at = -1
    for match in _STRUCTURAL.finditer(body):
        pos = match.start()
        if pos == skip_at:
            continue
        char = body[pos]
        if in_string:
            if char == 0x5C:  # backslash: the next character is escaped
                skip_at = pos + 1
            elif char == 0x22:
                in_string = False
            continue
        if char == 0x22:
            in_string = True
        elif char in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif char in (0x5D, 0x7D):
            depth -= 1
    return False

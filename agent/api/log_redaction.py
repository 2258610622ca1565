"""WebSocket frame logging without secrets.

The websockets library logs every frame at DEBUG through uvicorn's logger; the events
socket's first message holds the client's bearer token.
"""

from __future__ import annotations

import logging

_DATA_OPCODES = frozenset({"TEXT", "BINARY", "CONT"})
_SECRET_HEADERS = frozenset({"authorization", "cookie", "set-cookie"})


class WebSocketLogRedactor(logging.Filter):
    """The websockets library logs every frame at DEBUG through uvicorn's logger
    ("< TEXT '{"type": "auth", "token": ...}'"): the events socket's first message holds
    the client's bearer token. Data frames are logged as opcode and length only, and
    secret handshake headers as "[redacted]"."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.levelno > logging.DEBUG or not isinstance(args, tuple):
            return True
        if record.msg in ("< %s", "> %s") and len(args) == 1:
            frame = args[0]
            opcode = getattr(getattr(frame, "opcode", None), "name", None)
            data = getattr(frame, "data", None)
            if opcode in _DATA_OPCODES and isinstance(data, bytes | bytearray | memoryview):
                record.args = (f"{opcode} [{len(data)} bytes]",)
        elif (
            record.msg in ("< %s: %s", "> %s: %s")
            and len(args) == 2
            and str(args[0]).lower() in _SECRET_HEADERS
        ):
            record.args = (args[0], "[redacted]")
        return True


WEBSOCKET_LOGGERS = ("uvicorn.error", "websockets.server", "websockets.protocol")


def redact_websocket_logs() -> None:
    """Install `WebSocketLogRedactor` on the loggers WebSocket frames go to (idempotent)."""
    for name in WEBSOCKET_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, WebSocketLogRedactor) for f in logger.filters):
            logger.addFilter(WebSocketLogRedactor())

"""Remote commands on `card-agent/v1/<kiosk>/cmd`, replies on `.../cmd/response`.

Only an allowlist is served: `status` (the current status payload) and `selftest` (the
hook the runtime provides). Everything else — anything that would touch the PIN or
signing included — is refused with `command_refused` and logged with the command's
name only: the request payload is never logged nor echoed back.

Request:  {"id": "<caller's id, optional>", "command": "status" | "selftest"}
Response: {"v": 1, "kiosk": ..., "ts": ..., "id": <request id>, "command": ...,
           "ok": true, "result": {...}}  or  {"ok": false, "error": "<code>", ...}
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from agent.telemetry.payloads import SCHEMA_VERSION, now_iso, sanitize

log = logging.getLogger(__name__)

SelftestHook = Callable[[], Awaitable[Mapping[str, Any]]]

ALLOWED_COMMANDS = ("selftest", "status")
MAX_REQUEST_BYTES = 4096
SELFTEST_TIMEOUT_S = 120.0
# What a refused command's name may be to be logged and echoed: letters and '_' only,
# so a PIN or a card number sent as a "command" is never repeated anywhere.
_COMMAND_NAME = re.compile(r"^[A-Za-z_]{1,32}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class CommandHandler:
    def __init__(
        self,
        kiosk_id: str,
        *,
        status: Callable[[], Mapping[str, Any]],
        selftest_hook: SelftestHook | None,
        on_selftest: Callable[[Mapping[str, Any]], None] | None = None,
        selftest_timeout_s: float = SELFTEST_TIMEOUT_S,
    ) -> None:
        self.kiosk_id = kiosk_id
        self._status = status
        self.selftest_hook = selftest_hook
        self._on_selftest = on_selftest
        self._selftest_timeout_s = selftest_timeout_s
        self._selftest_lock = asyncio.Lock()
        self.refused = 0

    async def handle(self, raw: bytes) -> dict[str, Any]:
        """The response payload for one request (never raises)."""
        request_id, command = self._parse(raw)
        response: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "kiosk": self.kiosk_id,
            "ts": now_iso(),
            "id": request_id,
            "command": command if _COMMAND_NAME.match(command) else "invalid",
        }
        if command not in ALLOWED_COMMANDS:
            self.refused += 1
            log.warning(
                "refused remote command %r (allowed: %s)",
                response["command"],
                ", ".join(ALLOWED_COMMANDS),
            )
            response.update(ok=False, error="command_refused")
            return response
        log.info("remote command %s", command)
        try:
            if command == "status":
                response.update(ok=True, result=sanitize(dict(self._status())))
            else:
                response.update(await self._selftest())
        except Exception as exc:
            log.warning("remote command %s failed: %s", command, type(exc).__name__)
            response.update(ok=False, error="command_failed")
        return response

    async def _selftest(self) -> dict[str, Any]:
        hook = self.selftest_hook
        if hook is None:
            return {
                "ok": False,
                "error": "selftest_unavailable",
                "message": "selftest not available",
            }
        async with self._selftest_lock:
            try:
                result = await asyncio.wait_for(hook(), self._selftest_timeout_s)
            except TimeoutError:
                return {"ok": False, "error": "selftest_timeout"}
        clean = sanitize(dict(result))
        if self._on_selftest is not None:
            self._on_selftest(clean)
        return {"ok": True, "result": clean}

    @staticmethod
    def _parse(raw: bytes) -> tuple[str, str]:
        """(request id, command); "" when missing or unreadable."""
        if len(raw) > MAX_REQUEST_BYTES:
            return "", ""
        try:
            request = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return "", ""
        if not isinstance(request, dict):
            return "", ""
        request_id = request.get("id")
        if not (isinstance(request_id, str) and _REQUEST_ID.match(request_id)):
            request_id = ""
        command = request.get("command")
        return request_id, command if isinstance(command, str) else ""

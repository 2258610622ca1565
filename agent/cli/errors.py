"""The CLI's one failure exception, and what the domain's failures become.

A command raises `CliError` (or lets a domain failure through: a card command's
`CardCommandError`, the pairing store's `PairingError`, a `PermissionError` on the state
directory, a missing optional dependency); `cli_error_for` turns each into a
`CliError`, and the root group prints it once (agent.cli.main).
"""

from __future__ import annotations

from typing import Any

# Modules that come with an extra, not with the core install: which extra brings them.
EXTRA_OF_MODULE = {
    "fastapi": "agent",
    "starlette": "agent",
    "uvicorn": "agent",
    "pydantic": "agent",
    "pydantic_core": "agent",
    "aiomqtt": "agent",
    "paho": "agent",
    "websockets": "agent",
    "smartcard": "pcsc",
}


class CliError(Exception):
    """A command failed: `code` (stable, for scripts), a one-line `message` for the
    operator, optional `details`. Printed as `error: MESSAGE (CODE)` on stderr, or as
    `{"error": {...}}` on stdout with --json; exit code 1."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def as_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def missing_extra(exc: ModuleNotFoundError) -> CliError | None:
    """The CliError for a missing optional dependency; None for any other module (a
    broken install or a bug: let it show)."""
    module = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    if extra is None:
        return None
    return CliError(
        "missing_dependency",
        f"this command needs {module}, which is not installed: pip install 'card-agent[{extra}]'",
        {"module": module, "extra": extra},
    )


def cli_error_for(exc: BaseException) -> CliError | None:
    """The CliError a failure becomes, or None when it is not one the CLI explains."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, ModuleNotFoundError):
        return missing_extra(exc)
    if isinstance(exc, PermissionError):
        where = exc.filename or "the state directory"
        return CliError(
            "permission_denied",
            f"{where}: permission denied; run as root or as the card-agent user",
        )
    # Imported only now: `card-agent --help` loads nothing but click.
    from agent.access import CardCommandError
    from agent.config import ConfigError
    from agent.pairing import PairingError

    if isinstance(exc, ConfigError):  # found at start: the driver registry, an SKF library
        return CliError("config_invalid", str(exc))
    if isinstance(exc, CardCommandError):
        return CliError(exc.code, exc.message, exc.details)
    if isinstance(exc, PairingError):
        return CliError("pairing_error", str(exc), {"reason": exc.code})
    return None

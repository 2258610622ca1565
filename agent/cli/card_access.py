"""The CLI's way to the card.

The agent owns the reader exclusively: while it answers on its port, card commands go
through its API (`ApiAccess`, with the CLI's local-tool token). When nothing answers,
the CLI builds the same card service in its own process (`agent.runtime.local_service`:
owner thread, PIN floor, sessions, signature check, audit log) and calls it as a local
caller (`ServiceAccess.local`). Either way the rules are the service's, never the CLI's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agent.access import CardAccess, CardCommandError, ReaderView, SignTest
from agent.vocabulary import ErrorCode
from card.crypto.certs import CertificateInfo
from card.eport.driver import CardInfo, CertSlot, PinStatus
from card.identify import DriverInfo

if TYPE_CHECKING:
    from agent.access.agent_api import LocalToolToken
    from agent.config import Config

T = TypeVar("T")


def local_tool_token(config: Config) -> LocalToolToken:
    """The CLI's token store in the configured state directory."""
    from agent.access.agent_api import LocalToolToken
    from agent.pairing import PairingStore
    from agent.runtime import pairing_path, state_dir

    return LocalToolToken(state_dir(config), PairingStore(pairing_path(config)))


@contextlib.asynccontextmanager
async def open_card_access(config: Config) -> AsyncIterator[CardAccess]:
    """The running agent's API if it answers on its port, else a local card service.

    Raises CardCommandError when the card cannot be reached at all (something else
    answers on the port, the simulated card's state file is unusable), PermissionError
    when the state directory is not ours."""
    from agent.access.agent_api import AgentClient, ApiAccess

    client = AgentClient.from_config(config)
    if await asyncio.to_thread(client.probe) is not None:
        yield ApiAccess(client, local_tool_token(config))
        return

    from agent.access.service import ServiceAccess
    from agent.runtime import local_service

    try:
        async with contextlib.AsyncExitStack() as stack:
            from agent.config import ConfigError

            try:
                service = await stack.enter_async_context(local_service(config))
            except (CardCommandError, PermissionError, ConfigError):
                raise  # the configuration's problem (e.g. its driver registry): config_invalid
            except Exception as exc:  # a corrupt simulated-card file, an unknown profile
                raise _open_failure(exc) from exc
            yield ServiceAccess.local(service)
    finally:
        await asyncio.to_thread(adopt_state_files, config.paths.state_dir)


def _open_failure(exc: Exception) -> CardCommandError:
    from agent.audit import AuditLogError

    if isinstance(exc, AuditLogError):
        # Held by an agent that does not answer on its port (starting, stuck), or
        # corrupt: nothing may touch the card without its record.
        return CardCommandError(
            ErrorCode.AUDIT_UNAVAILABLE.value, f"cannot open the audit log: {exc}"
        )
    failure = CardCommandError.from_exception(exc)
    if failure.code == ErrorCode.INTERNAL_ERROR:
        # Not a card error: the operator on this kiosk needs the reason itself.
        return CardCommandError(failure.code, f"cannot open the card directly: {exc}")
    return failure


def adopt_state_files(state_dir: Path) -> None:
    """Root ran a direct card command: give what it created in the state directory (the
    audit log, the simulated card) to the directory's owner, the service user, or the
    agent could not open them at its next start. The CLI's own token stays root's."""
    if os.geteuid() != 0:
        return
    try:
        owner = state_dir.stat()
        entries = list(os.scandir(state_dir))
    except OSError:
        return
    if owner.st_uid == 0:
        return
    for entry in entries:
        if entry.name.startswith("cli-token."):
            continue
        with contextlib.suppress(OSError):
            if entry.stat(follow_symlinks=False).st_uid == 0 and entry.is_file(
                follow_symlinks=False
            ):
                os.chown(entry.path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def describe_route(access: CardAccess, config: Config) -> str:
    if access.mode == "agent":
        return f"through the running agent on {config.server.host}:{config.server.port}"
    return f"agent not running: opening the card directly ({config.card.backend})"


def run_card_command(config: Config, job: Callable[[CardAccess], Awaitable[T]]) -> T:
    """Run `job` with the way to the card; say on stderr which way it went."""

    async def main() -> T:
        async with open_card_access(config) as access:
            click.echo(f"({describe_route(access, config)})", err=True)
            return await job(access)

    return asyncio.run(main())


class DeferredCardAccess(CardAccess):
    """`open_card_access` at the first card call, not before: a selftest whose card
    checks are skipped (pcscd down, --skip) never opens the card. `mode` is "none"
    until then. A failure to open is remembered and raised again by every call."""

    def __init__(self, config: Config, stack: contextlib.AsyncExitStack) -> None:
        self.mode = "none"
        self._config = config
        self._stack = stack
        self._access: CardAccess | None = None
        self._failure: CardCommandError | None = None

    async def _opened(self) -> CardAccess:
        from agent.config import ConfigError

        if self._access is not None:
            return self._access
        if self._failure is not None:
            raise self._failure
        try:
            self._access = await self._stack.enter_async_context(open_card_access(self._config))
        except CardCommandError as exc:
            self._failure = exc
            raise
        except PermissionError as exc:
            self._failure = CardCommandError(
                "permission_denied",
                f"{exc.filename or self._config.paths.state_dir}: permission denied; "
                "run as root or as the card-agent user",
            )
            raise self._failure from None
        except ConfigError as exc:  # the driver registry, an SKF library: found at start
            self._failure = CardCommandError("config_invalid", str(exc))
            raise self._failure from None
        self.mode = self._access.mode
        return self._access

    async def reader(self) -> ReaderView | None:
        return await (await self._opened()).reader()

    async def card_atr(self) -> bytes | None:
        return await (await self._opened()).card_atr()

    async def card_info(self) -> CardInfo:
        return await (await self._opened()).card_info()

    async def certificates(self) -> dict[CertSlot, CertificateInfo]:
        return await (await self._opened()).certificates()

    async def pin_status(self) -> PinStatus:
        return await (await self._opened()).pin_status()

    async def driver_info(self) -> DriverInfo:
        return await (await self._opened()).driver_info()

    async def identify(self) -> dict[str, Any]:
        return await (await self._opened()).identify()

    async def change_pin(self, old_pin: str, new_pin: str, *, confirm_final_try: bool) -> None:
        access = await self._opened()
        await access.change_pin(old_pin, new_pin, confirm_final_try=confirm_final_try)

    async def sign_test(self, pin: str, message: bytes, *, confirm_final_try: bool) -> SignTest:
        access = await self._opened()
        return await access.sign_test(pin, message, confirm_final_try=confirm_final_try)

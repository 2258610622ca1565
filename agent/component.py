"""Parts of the running agent that live as long as the service: the official-protocol
endpoint, telemetry, the systemd notifier. The main app's lifespan starts them after
the card owner and the service, and stops them in reverse order."""

from __future__ import annotations

from typing import Protocol


class Component(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

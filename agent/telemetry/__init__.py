"""Fleet telemetry over MQTT: status, events and metrics through a durable outbox, and
a small allowlist of remote commands. Off unless `[mqtt] enabled = true`.
See docs/telemetry.md."""

from agent.telemetry.commands import ALLOWED_COMMANDS, CommandHandler, SelftestHook
from agent.telemetry.outbox import AsyncOutbox, Outbox, OutboxStats
from agent.telemetry.publisher import TelemetryPublisher

__all__ = [
    "ALLOWED_COMMANDS",
    "AsyncOutbox",
    "CommandHandler",
    "Outbox",
    "OutboxStats",
    "SelftestHook",
    "TelemetryPublisher",
]

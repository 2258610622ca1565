"""The selftest's checks, one module per area; importing this registers them all."""

from agent.selftest.checks import api, card, clock, compat, config, mqtt, pcsc

__all__ = ["api", "card", "clock", "compat", "config", "mqtt", "pcsc"]

"""The native localhost API (docs/api.md)."""

from agent.api.app import create_app
from agent.api.context import ApiSettings

__all__ = ["ApiSettings", "create_app"]

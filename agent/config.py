"""Configuration: a TOML file plus environment overrides, validated at start.

Environment variables `CARD_AGENT_<SECTION>__<KEY>` override file values (for example
`CARD_AGENT_SERVER__PORT=17400`, `CARD_AGENT_CARD__BACKEND=pcsc`); list values are
comma-separated. Unknown keys are errors, not silently ignored: a typo in a security
setting must not fall back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

ENV_PREFIX = "CARD_AGENT_"
DEFAULT_PORT = 17321


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        # The API signs with the card: it must never be reachable from the network.
        if value == "localhost":
            return value
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        if not address.is_loopback:
            raise ValueError(
                f"{value} is not a loopback address; card-agent listens on loopback only"
            )
        return value


class SecurityConfig(_Section):
    # Exact origins allowed to call the API, e.g. "chrome-extension://<32 letters a-p>".
    allowed_origins: tuple[str, ...] = ()
    # When the card has this many tries left or fewer, VERIFY is refused unless the
    # request confirms it (confirm_final_try). 1 = never spend the last try unconfirmed.
    pin_floor: int = Field(1, ge=0, le=9)
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    max_data_bytes: int = Field(1024 * 1024, ge=1, le=32 * 1024 * 1024)
    session_ttl_s: float = Field(600, gt=0)
    session_idle_s: float = Field(180, gt=0)

    @field_validator("allowed_origins")
    @classmethod
    def _exact_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin in ("*", "null") or "*" in origin:
                raise ValueError(f"origin {origin!r}: wildcards and null are never allowed")
            scheme, sep, rest = origin.partition("://")
            if (
                not sep
                or not rest
                or "/" in rest
                or scheme
                not in (
                    "http",
                    "https",
                    "chrome-extension",
                )
            ):
                raise ValueError(f"origin {origin!r} is not scheme://host[:port]")
        return value


class CardConfig(_Section):
    backend: Literal["simulated", "pcsc"] = "simulated"
    reader: str | None = None  # exact name or regular expression; None = first with a card
    profile: str = "legal-person-sm2"  # simulated backend only
    # Simulated backend: where the card's keys and PIN counters persist (relative to
    # the state directory); "" keeps the card in memory only.
    sim_state_file: str = "simulated-card.json"
    timing: Literal["instant", "realistic"] = "instant"  # simulated card's timing model
    queue_size: int = Field(16, ge=1, le=1024)
    job_timeout_s: float = Field(15, gt=0, le=300)


class PathsConfig(_Section):
    state_dir: Path = Path("state")


class Config(_Section):
    server: ServerConfig = ServerConfig()
    security: SecurityConfig = SecurityConfig()
    card: CardConfig = CardConfig()
    paths: PathsConfig = PathsConfig()


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        parsed: Any = value
        if key in ("allowed_origins",):
            parsed = tuple(v.strip() for v in value.split(",") if v.strip())
        out.setdefault(section, {})[key] = parsed
    return out


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (if given), apply environment overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for section, values in _env_overrides(os.environ if env is None else env).items():
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"[{section}] must be a table")
        target.update(values)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(part) for part in err["loc"])
            lines.append(f"  {where}: {err['msg']}")
        source = str(path) if path else "defaults/environment"
        raise ConfigError(f"invalid configuration ({source}):\n" + "\n".join(lines)) from None

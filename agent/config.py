"""Configuration: a TOML file plus environment overrides, validated at start.

Environment variables `CARD_AGENT_<SECTION>__<KEY>` override file values (for example
`CARD_AGENT_SERVER__PORT=17400`, `CARD_AGENT_CARD__BACKEND=pcsc`); list values are
comma-separated. Unknown keys are errors, not silently ignored: a typo in a security
setting must not fall back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

if TYPE_CHECKING:
    from card.registry import Registry

ENV_PREFIX = "CARD_AGENT_"
DEFAULT_PORT = 17321
# The kiosk's own driver registry entries (card.registry), used when it exists and
# `card.registry` does not name another file.
DEFAULT_REGISTRY = Path("/etc/card-agent/drivers.toml")
# In the state directory: the simulated card's test CAs (PEM), written by the runtime
# when it builds the simulated backend, read by the selftest's chain check.
SIMULATED_CA_FILE = "simulated-card-ca.pem"


class ConfigError(Exception):
    """The configuration cannot be used; the message says what and where."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    # A request must arrive whole this long after the connection opened (or after its
    # first byte on a kept-alive connection); slower connections are closed.
    request_timeout_s: float = Field(10, gt=0, le=300)
    # Idle kept-alive connections are closed after this long.
    keepalive_timeout_s: float = Field(5, gt=0, le=300)
    # Open connections at most (lowered to stay below the open-files limit); over it
    # the connection that has waited longest for a request is closed.
    max_connections: int = Field(512, ge=16, le=65536)

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
    backend: Literal["simulated", "pcsc", "skf"] = "simulated"
    reader: str | None = None  # a substring of the reader name (any case); None: any reader
    # The driver registry override file (card.registry: which driver serves which card),
    # tried before the shipped one. Unset: DEFAULT_REGISTRY when it exists. A file named
    # here must exist.
    registry: Path | None = None
    profile: str = "legal-person-sm2"  # simulated backend only
    # Simulated backend: where the card's keys and PIN counters persist (relative to
    # the state directory); "" keeps the card in memory only.
    sim_state_file: str = "simulated-card.json"
    timing: Literal["instant", "realistic"] = "instant"  # simulated card's timing model
    queue_size: int = Field(16, ge=1, le=1024)
    job_timeout_s: float = Field(15, gt=0, le=300)
    # PEM file of the CA certificates the card's signing certificate must chain to
    # (`card-agent selftest`). Unset: the simulated card's own test CA for the simulated
    # backend; for PC/SC the chain is not checked (a selftest warning).
    ca_bundle: Path | None = None
    # Demo/training kiosk: a virtual reader (vsmartcard-vpcd) is expected there, so the
    # selftest does not warn about it. Never set this on a production kiosk.
    demo: bool = False

    def reader_pattern(self) -> re.Pattern[str] | None:
        """`reader` as the backend and the selftest match reader names with it: a
        case-insensitive substring; None for any reader."""
        if self.reader is None:
            return None
        return re.compile(re.escape(self.reader), re.IGNORECASE)


class PathsConfig(_Section):
    state_dir: Path = Path("state")


class MqttConfig(_Section):
    """Fleet telemetry over MQTT (docs/telemetry.md). Off unless `enabled`."""

    enabled: bool = False
    host: str = "127.0.0.1"  # the broker (or the fleet's load balancer)
    port: int = Field(1883, ge=1, le=65535)  # 8883 is usual with TLS
    kiosk_id: str = ""  # required when enabled; the topic level and the broker username
    tls: bool = False  # TLS with the system's CAs; implied by tls_ca
    tls_ca: Path | None = None
    tls_cert: Path | None = None  # client certificate (with tls_key)
    tls_key: Path | None = None
    username: str | None = None
    password: SecretStr | None = None  # never logged; `config show` prints ********
    keepalive_s: int = Field(30, ge=5, le=3600)
    metrics_interval_s: float = Field(60, gt=0, le=86400)
    outbox_max_events: int = Field(10000, ge=10, le=10_000_000)
    reconnect_min_s: float = Field(1.0, gt=0, le=600)
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)

    @field_validator("kiosk_id")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        # One topic level: no '/', '+', '#', nothing a broker ACL pattern would misread.
        if value and not (
            len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in value)
        ):
            raise ValueError("kiosk_id: 1-64 characters from A-Z a-z 0-9 - _ .")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.enabled and not self.kiosk_id:
            raise ValueError("mqtt.kiosk_id is required when mqtt is enabled")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("mqtt.tls_cert and mqtt.tls_key go together")
        if self.password is not None and not self.username:
            raise ValueError("mqtt.password needs mqtt.username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("mqtt.reconnect_max_s is less than mqtt.reconnect_min_s")
        return self

    @property
    def use_tls(self) -> bool:
        return self.tls or self.tls_ca is not None


class CompatConfig(_Section):
    """The official E-Port client's WebSocket protocol (docs/compat.md). Off by default:
    the protocol has no pairing, so each origin allowed here is trusted with the card."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(61232, ge=0, le=65535)  # the official client's; 0: any free port
    # Exact origins, e.g. "http://127.0.0.1:8080" for a practice page.
    allowed_origins: tuple[str, ...] = ()
    # https://singlewindow.cn and https://<sub>.singlewindow.cn (https only, default port).
    allow_singlewindow: bool = True
    # Pages connected at once. A new page takes the slot of the longest-idle one; it is
    # refused only while every page has a request in progress.
    max_connections: int = Field(8, ge=1, le=64)
    # A page that sends no request for this long is disconnected (its PIN session ends).
    idle_timeout_s: float = Field(300, gt=0, le=86400)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        return ServerConfig._loopback_only(value)

    @field_validator("allowed_origins")
    @classmethod
    def _exact_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return SecurityConfig._exact_origins(value)


class Config(_Section):
    server: ServerConfig = ServerConfig()
    security: SecurityConfig = SecurityConfig()
    card: CardConfig = CardConfig()
    paths: PathsConfig = PathsConfig()
    mqtt: MqttConfig = MqttConfig()
    compat: CompatConfig = CompatConfig()


def load_driver_registry(card: CardConfig) -> Registry:
    """The driver registry the card backends use: `card.registry` (which must exist),
    else DEFAULT_REGISTRY when it exists, over the shipped file. A file that cannot be
    used is a ConfigError naming it: the agent does not start on half a registry."""
    from card.registry import RegistryError, load_registry

    try:
        if card.registry is not None:
            return load_registry(card.registry)
        return load_registry(DEFAULT_REGISTRY, missing_ok=True)
    except RegistryError as exc:
        raise ConfigError(f"driver registry (card.registry): {exc}") from None


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

"""Service configuration from environment variables.

| variable | default | meaning |
| --- | --- | --- |
| ``VYAPAAR_DATABASE_URL`` | (required) | ``postgresql://user:pass@host:port/db`` |
| ``VYAPAAR_DB_SCHEMA`` | service name | PostgreSQL schema (search_path) of the service |
| ``VYAPAAR_DB_POOL_MIN`` / ``VYAPAAR_DB_POOL_MAX`` | 1 / 10 | asyncpg pool bounds |
| ``VYAPAAR_AMQP_URL`` | (required) | ``amqp://user:pass@host:port/vhost`` |
| ``VYAPAAR_AMQP_PREFIX`` | "" | prefix of every exchange/queue name (test isolation) |
| ``VYAPAAR_PREFETCH`` | 16 | unacked messages per consumer (bounded concurrency) |
| ``VYAPAAR_RETRY_DELAYS`` | ``1,5,30`` | delay tiers in seconds before the DLQ |
| ``VYAPAAR_REDIS_URL`` | unset | ``redis://host:port/db``; optional (inventory hot-SKU locks) |
| ``VYAPAAR_HTTP_HOST`` | 127.0.0.1 | bind address of the admin/read API (0.0.0.0 in a pod) |
| ``VYAPAAR_HTTP_PORT`` | per service | inventory 8081, payment 8082, shipping 8083,
  notification 8084, analytics 8085 |
| ``VYAPAAR_OUTBOX_POLL_INTERVAL`` | 1.0 | seconds between outbox polls (NOTIFY wakes it earlier) |
| ``VYAPAAR_RETENTION_DAYS`` | 7 | inbox rows and sent outbox rows older than this are deleted |
| ``VYAPAAR_FAULT_ERROR_RATE`` | 0 | 0..1 probability that a simulated processor call fails |
| ``VYAPAAR_FAULT_LATENCY_MS`` | 0 | added latency of a simulated processor call |
| ``VYAPAAR_LOG_LEVEL`` | INFO | log level |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from vyapaar_messaging.topology import DEFAULT_RETRY_DELAYS

__all__ = ["DEFAULT_HTTP_PORTS", "ConfigError", "Settings", "env_float", "env_int", "env_text"]

DEFAULT_HTTP_PORTS: Final[dict[str, int]] = {
    "inventory": 8081,
    "payment": 8082,
    "shipping": 8083,
    "notification": 8084,
    "analytics": 8085,
    "gateway": 8080,
}
_SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ConfigError(ValueError):
    """A missing or invalid environment variable."""


def env_text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value is not None and value.strip() != "" else None


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env_text(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def env_float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env_text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    service: str
    database_url: str
    amqp_url: str
    db_schema: str = ""
    db_pool_min: int = 1
    db_pool_max: int = 10
    amqp_prefix: str = ""
    prefetch: int = 16
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    redis_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 0
    outbox_poll_interval: float = 1.0
    retention_days: int = 7
    fault_error_rate: float = 0.0
    fault_latency_ms: int = 0
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.db_schema:
            object.__setattr__(self, "db_schema", self.service)
        if not _SCHEMA_RE.match(self.db_schema):
            raise ConfigError(
                f"VYAPAAR_DB_SCHEMA must be a lower-case SQL identifier, got {self.db_schema!r}"
            )
        if not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("VYAPAAR_DATABASE_URL must be a postgresql:// URL")
        if not self.amqp_url.startswith(("amqp://", "amqps://")):
            raise ConfigError("VYAPAAR_AMQP_URL must be an amqp:// or amqps:// URL")
        if self.db_pool_min > self.db_pool_max:
            raise ConfigError("VYAPAAR_DB_POOL_MIN must not exceed VYAPAAR_DB_POOL_MAX")

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        database_url = env_text(env, "VYAPAAR_DATABASE_URL")
        amqp_url = env_text(env, "VYAPAAR_AMQP_URL")
        missing = [
            name
            for name, value in (
                ("VYAPAAR_DATABASE_URL", database_url),
                ("VYAPAAR_AMQP_URL", amqp_url),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(f"missing required environment: {', '.join(missing)}")
        assert database_url is not None and amqp_url is not None
        delays_raw = env_text(env, "VYAPAAR_RETRY_DELAYS")
        delays = DEFAULT_RETRY_DELAYS
        if delays_raw is not None:
            try:
                delays = tuple(float(part) for part in delays_raw.split(","))
            except ValueError:
                raise ConfigError(
                    f"VYAPAAR_RETRY_DELAYS must be comma-separated seconds, got {delays_raw!r}"
                ) from None
            if any(d <= 0 for d in delays):
                raise ConfigError("VYAPAAR_RETRY_DELAYS must be positive")
        return cls(
            service=service,
            database_url=database_url,
            amqp_url=amqp_url,
            db_schema=env_text(env, "VYAPAAR_DB_SCHEMA") or service,
            db_pool_min=env_int(env, "VYAPAAR_DB_POOL_MIN", 1),
            db_pool_max=env_int(env, "VYAPAAR_DB_POOL_MAX", 10, minimum=1),
            amqp_prefix=env_text(env, "VYAPAAR_AMQP_PREFIX") or "",
            prefetch=env_int(env, "VYAPAAR_PREFETCH", 16, minimum=1),
            retry_delays=delays,
            redis_url=env_text(env, "VYAPAAR_REDIS_URL"),
            http_host=env_text(env, "VYAPAAR_HTTP_HOST") or "127.0.0.1",
            http_port=env_int(env, "VYAPAAR_HTTP_PORT", DEFAULT_HTTP_PORTS.get(service, 8080)),
            outbox_poll_interval=env_float(env, "VYAPAAR_OUTBOX_POLL_INTERVAL", 1.0, 0.01, 3600),
            retention_days=env_int(env, "VYAPAAR_RETENTION_DAYS", 7, minimum=1),
            fault_error_rate=env_float(env, "VYAPAAR_FAULT_ERROR_RATE", 0.0, 0.0, 1.0),
            fault_latency_ms=env_int(env, "VYAPAAR_FAULT_LATENCY_MS", 0),
            log_level=(env_text(env, "VYAPAAR_LOG_LEVEL") or "INFO").upper(),
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

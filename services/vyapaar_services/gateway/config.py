"""Gateway configuration from environment variables.

| variable | default | meaning |
| --- | --- | --- |
| ``VYAPAAR_REDIS_URL`` | (required) | idempotency keys and rate limits |
| ``VYAPAAR_GATEWAY_TOKENS_FILE`` | (required) | YAML file of tenants and their bearer tokens
  (a mounted Secret; re-read when it changes), see :mod:`.tenants` |
| ``VYAPAAR_GATEWAY_RATE_LIMIT`` | ``20/second`` | per token, in the ``limits`` notation
  (``"20/second;600/minute"`` for several) |
| ``VYAPAAR_GATEWAY_IDEMPOTENCY_TTL_SECONDS`` | 86400 | how long an ``Idempotency-Key`` is kept |
| ``VYAPAAR_GATEWAY_MAX_BODY_BYTES`` | 65536 | larger request bodies get 413 |
| ``VYAPAAR_GATEWAY_LINK_TTL_SECONDS`` | 604800 | validity of an order page's read-only link |
| ``VYAPAAR_GATEWAY_HEARTBEAT_SECONDS`` | 15 | SSE comment interval, so proxies keep a stream open |
| ``VYAPAAR_HTTP_HOST`` / ``VYAPAAR_HTTP_PORT`` | 127.0.0.1 / 8080 | listen address |
| ``VYAPAAR_LOG_LEVEL`` | INFO | log level |

The Kubernetes API is reached in-cluster (the pod's ServiceAccount) or through
``KUBECONFIG``, like kubectl.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from limits import parse_many

from vyapaar_services.common.config import (
    DEFAULT_HTTP_PORTS,
    ConfigError,
    env_float,
    env_int,
    env_text,
)

__all__ = ["GatewaySettings"]


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    redis_url: str
    tokens_file: Path
    rate_limit: str = "20/second"
    idempotency_ttl_seconds: int = 86400
    max_body_bytes: int = 65536
    link_ttl_seconds: int = 7 * 86400
    heartbeat_seconds: float = 15.0
    http_host: str = "127.0.0.1"
    http_port: int = DEFAULT_HTTP_PORTS["gateway"]
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("VYAPAAR_REDIS_URL must be a redis:// or rediss:// URL")
        try:
            parse_many(self.rate_limit)
        except ValueError:
            raise ConfigError(
                "VYAPAAR_GATEWAY_RATE_LIMIT must be like '20/second' or '20/second;600/minute', "
                f"got {self.rate_limit!r}"
            ) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewaySettings:
        env = os.environ if env is None else env
        redis_url = env_text(env, "VYAPAAR_REDIS_URL")
        tokens_file = env_text(env, "VYAPAAR_GATEWAY_TOKENS_FILE")
        missing = [name for name, value in (("VYAPAAR_REDIS_URL", redis_url),
                                            ("VYAPAAR_GATEWAY_TOKENS_FILE", tokens_file))
                   if value is None]
        if missing:
            raise ConfigError(f"missing required environment: {', '.join(missing)}")
        assert redis_url is not None and tokens_file is not None
        return cls(
            redis_url=redis_url,
            tokens_file=Path(tokens_file),
            rate_limit=env_text(env, "VYAPAAR_GATEWAY_RATE_LIMIT") or "20/second",
            idempotency_ttl_seconds=env_int(env, "VYAPAAR_GATEWAY_IDEMPOTENCY_TTL_SECONDS",
                                            86400, minimum=1),
            max_body_bytes=env_int(env, "VYAPAAR_GATEWAY_MAX_BODY_BYTES", 65536, minimum=1024),
            link_ttl_seconds=env_int(env, "VYAPAAR_GATEWAY_LINK_TTL_SECONDS", 7 * 86400,
                                     minimum=60),
            heartbeat_seconds=env_float(env, "VYAPAAR_GATEWAY_HEARTBEAT_SECONDS", 15.0, 0.1,
                                        3600),
            http_host=env_text(env, "VYAPAAR_HTTP_HOST") or "127.0.0.1",
            http_port=env_int(env, "VYAPAAR_HTTP_PORT", DEFAULT_HTTP_PORTS["gateway"]),
            log_level=(env_text(env, "VYAPAAR_LOG_LEVEL") or "INFO").upper(),
        )

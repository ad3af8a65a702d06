"""Every setting of the operator, read from the environment once at start.

| variable | default | meaning |
| --- | --- | --- |
| ``VYAPAAR_NAMESPACES`` | (empty: all) | comma-separated namespaces (globs allowed) to watch |
| ``VYAPAAR_AMQP_URL`` | ``amqp://guest:guest@127.0.0.1:5672/`` | RabbitMQ |
| ``VYAPAAR_STEP_TIMEOUT_SECONDS`` | 10 | how long a forward step waits for its reply |
| ``VYAPAAR_MAX_ATTEMPTS`` | 4 | sends of a forward step before its outcome counts as unknown |
| ``VYAPAAR_BACKOFF_BASE_SECONDS`` | 1 | first retry delay; doubles per attempt |
| ``VYAPAAR_BACKOFF_MAX_SECONDS`` | 60 | cap of the retry delay |
| ``VYAPAAR_COMPENSATION_TIMEOUT_SECONDS`` | 10 | how long a compensation waits |
| ``VYAPAAR_COMPENSATION_MAX_ATTEMPTS`` | 8 | compensation sends before CompensationFailed |
| ``VYAPAAR_COMPENSATION_BACKOFF_BASE_SECONDS`` | 5 | first compensation retry delay |
| ``VYAPAAR_COMPENSATION_BACKOFF_MAX_SECONDS`` | 600 | cap of the compensation retry delay |
| ``VYAPAAR_TIMELINE_LIMIT`` | 20 | entries kept in ``status.timeline`` |
| ``VYAPAAR_SAGA_VERSION`` | 1 | the flow new sagas start on (2: a fraud check before payment) |
| ``VYAPAAR_REPLY_PREFETCH`` | 32 | replies handled concurrently (RabbitMQ prefetch) |
| ``VYAPAAR_MAX_IN_FLIGHT`` | 16 | sagas running at once; more wait ``Queued`` (0: no limit) |
| ``VYAPAAR_REPLY_HOLD_MS`` | 1000 | a reply's wait for its sibling (one status write) |
| ``VYAPAAR_STATUS_WRITE_RETRIES`` | 10 | re-reads after a 409 Conflict before giving up |
| ``VYAPAAR_BREAKER_THRESHOLD`` | 5 | timeouts in a row that open a service's breaker (0: off) |
| ``VYAPAAR_BREAKER_COOLDOWN_SECONDS`` | 30 | how long an open breaker holds commands |
| ``VYAPAAR_BREAKER_PROBES`` | 3 | forward commands let through while half-open |
| ``VYAPAAR_HEALTH_PORT`` | 8080 | liveness endpoint ``/healthz`` (0 disables) |
| ``VYAPAAR_METRICS_PORT`` | 9100 | Prometheus ``/metrics`` (0 disables) |
| ``VYAPAAR_HOST`` | 127.0.0.1 | address the health and metrics endpoints bind |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta

from vyapaar_operator.breaker import BreakerConfig
from vyapaar_operator.saga import SagaConfig


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _namespaces() -> tuple[str, ...]:
    raw = os.environ.get("VYAPAAR_NAMESPACES", "")
    return tuple(ns.strip() for ns in raw.split(",") if ns.strip())


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = field(default_factory=_namespaces)
    amqp_url: str = field(
        default_factory=lambda: os.environ.get(
            "VYAPAAR_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"
        )
    )
    step_timeout: float = field(default_factory=lambda: _float("VYAPAAR_STEP_TIMEOUT_SECONDS", 10))
    max_attempts: int = field(default_factory=lambda: _int("VYAPAAR_MAX_ATTEMPTS", 4))
    backoff_base: float = field(default_factory=lambda: _float("VYAPAAR_BACKOFF_BASE_SECONDS", 1))
    backoff_max: float = field(default_factory=lambda: _float("VYAPAAR_BACKOFF_MAX_SECONDS", 60))
    compensation_timeout: float = field(
        default_factory=lambda: _float("VYAPAAR_COMPENSATION_TIMEOUT_SECONDS", 10)
    )
    compensation_max_attempts: int = field(
        default_factory=lambda: _int("VYAPAAR_COMPENSATION_MAX_ATTEMPTS", 8)
    )
    compensation_backoff_base: float = field(
        default_factory=lambda: _float("VYAPAAR_COMPENSATION_BACKOFF_BASE_SECONDS", 5)
    )
    compensation_backoff_max: float = field(
        default_factory=lambda: _float("VYAPAAR_COMPENSATION_BACKOFF_MAX_SECONDS", 600)
    )
    timeline_limit: int = field(default_factory=lambda: _int("VYAPAAR_TIMELINE_LIMIT", 20))
    saga_version: int = field(default_factory=lambda: _int("VYAPAAR_SAGA_VERSION", 1))
    reply_prefetch: int = field(default_factory=lambda: _int("VYAPAAR_REPLY_PREFETCH", 32))
    max_in_flight: int = field(default_factory=lambda: _int("VYAPAAR_MAX_IN_FLIGHT", 16))
    reply_hold: float = field(
        default_factory=lambda: _float("VYAPAAR_REPLY_HOLD_MS", 1000) / 1000
    )
    status_write_retries: int = field(
        default_factory=lambda: _int("VYAPAAR_STATUS_WRITE_RETRIES", 10)
    )
    breaker_threshold: int = field(default_factory=lambda: _int("VYAPAAR_BREAKER_THRESHOLD", 5))
    breaker_cooldown: float = field(
        default_factory=lambda: _float("VYAPAAR_BREAKER_COOLDOWN_SECONDS", 30)
    )
    breaker_probes: int = field(default_factory=lambda: _int("VYAPAAR_BREAKER_PROBES", 3))
    health_port: int = field(default_factory=lambda: _int("VYAPAAR_HEALTH_PORT", 8080))
    metrics_port: int = field(default_factory=lambda: _int("VYAPAAR_METRICS_PORT", 9100))
    host: str = field(default_factory=lambda: os.environ.get("VYAPAAR_HOST", "127.0.0.1"))

    def saga_config(self) -> SagaConfig:
        return SagaConfig(
            step_timeout=timedelta(seconds=self.step_timeout),
            max_attempts=self.max_attempts,
            backoff_base=timedelta(seconds=self.backoff_base),
            backoff_max=timedelta(seconds=self.backoff_max),
            compensation_timeout=timedelta(seconds=self.compensation_timeout),
            compensation_max_attempts=self.compensation_max_attempts,
            compensation_backoff_base=timedelta(seconds=self.compensation_backoff_base),
            compensation_backoff_max=timedelta(seconds=self.compensation_backoff_max),
            timeline_limit=self.timeline_limit,
            version=self.saga_version,
        )

    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(threshold=self.breaker_threshold,
                             cooldown=timedelta(seconds=self.breaker_cooldown),
                             probes=self.breaker_probes)

"""Configuration from the environment."""

from __future__ import annotations

import pytest
from vyapaar_services.common.config import ConfigError, Settings

BASE = {
    "VYAPAAR_DATABASE_URL": "postgresql://u@db:5432/vyapaar",
    "VYAPAAR_AMQP_URL": "amqp://guest:guest@mq:5672/",
}


def test_defaults_follow_the_service() -> None:
    s = Settings.from_env("payment", BASE)
    assert s.db_schema == "payment"
    assert s.http_host == "127.0.0.1"
    assert s.http_port == 8082
    assert s.prefetch == 16
    assert s.retry_delays == (1.0, 5.0, 30.0)
    assert s.redis_url is None
    assert s.fault_error_rate == 0.0


@pytest.mark.parametrize(("service", "port"), [
    ("inventory", 8081), ("payment", 8082), ("shipping", 8083), ("notification", 8084),
    ("analytics", 8085),
])
def test_each_service_has_its_own_default_port_and_schema(service: str, port: int) -> None:
    s = Settings.from_env(service, BASE)
    assert (s.http_port, s.db_schema) == (port, service)


def test_every_variable_is_read() -> None:
    s = Settings.from_env(
        "shipping",
        {
            **BASE,
            "VYAPAAR_DB_SCHEMA": "ship_eu",
            "VYAPAAR_HTTP_HOST": "0.0.0.0",
            "VYAPAAR_HTTP_PORT": "9000",
            "VYAPAAR_PREFETCH": "4",
            "VYAPAAR_RETRY_DELAYS": "0.5,2",
            "VYAPAAR_REDIS_URL": "redis://r:6379/1",
            "VYAPAAR_FAULT_ERROR_RATE": "0.25",
            "VYAPAAR_FAULT_LATENCY_MS": "40",
            "VYAPAAR_AMQP_PREFIX": "blue.",
        },
    )
    assert (s.db_schema, s.http_host, s.http_port, s.prefetch) == ("ship_eu", "0.0.0.0", 9000, 4)
    assert s.retry_delays == (0.5, 2.0)
    assert s.redis_url == "redis://r:6379/1"
    assert (s.fault_error_rate, s.fault_latency_ms) == (0.25, 40)
    assert s.amqp_prefix == "blue."


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({}, "VYAPAAR_DATABASE_URL, VYAPAAR_AMQP_URL"),
        ({**BASE, "VYAPAAR_PREFETCH": "0"}, "VYAPAAR_PREFETCH"),
        ({**BASE, "VYAPAAR_FAULT_ERROR_RATE": "1.5"}, "VYAPAAR_FAULT_ERROR_RATE"),
        ({**BASE, "VYAPAAR_DB_SCHEMA": "Robert'); DROP"}, "VYAPAAR_DB_SCHEMA"),
        ({**BASE, "VYAPAAR_RETRY_DELAYS": "1,soon"}, "VYAPAAR_RETRY_DELAYS"),
        ({**BASE, "VYAPAAR_DATABASE_URL": "mysql://x"}, "postgresql://"),
    ],
)
def test_bad_configuration_is_refused_with_the_variable_name(
    env: dict[str, str], error: str
) -> None:
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        Settings.from_env("inventory", env)

"""An outage is two log lines -- when it started, when it ended with the count -- not one
line per failed operation."""

from __future__ import annotations

import logging

import pytest
from vyapaar_messaging.outage import OutageLog


def test_an_outage_logs_its_start_and_its_end_with_the_count(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = OutageLog(logging.getLogger("t"), "publishing to RabbitMQ", clock=lambda: now[0])
    caplog.set_level(logging.INFO)
    outage.succeeded()  # nothing to report while all is well
    for i in range(500):
        outage.failed(f"connection refused #{i}")
    now[0] = 123.5
    outage.succeeded()
    outage.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "publishing to RabbitMQ failing: connection refused #0 (further failures are counted, "
        "not logged, until it recovers)",
        "publishing to RabbitMQ recovered after 23.5s; 500 operations failed meanwhile",
    ]
    assert not outage.ongoing


def test_the_next_outage_starts_afresh(caplog: pytest.LogCaptureFixture) -> None:
    outage = OutageLog(logging.getLogger("t"), "the relay", clock=lambda: 0.0)
    caplog.set_level(logging.WARNING)
    outage.failed("a")
    outage.succeeded()
    outage.failed("b")
    assert outage.ongoing and outage.failures == 1
    assert caplog.records[-1].getMessage().startswith("the relay failing: b")

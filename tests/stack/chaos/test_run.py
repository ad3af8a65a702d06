"""How a chaos run talks to the apiserver: an outage is waited out, a refusal is not.

A refusal retried as if it were an outage once hid every planned cancellation of a run
(a JSON-merge body sent as a JSON patch, refused with 400 for 90 s) behind a green verdict.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio.client.exceptions import ApiException
from vyapaar_stack import system
from vyapaar_stack.chaos import faults
from vyapaar_stack.chaos.plan import TARGETS
from vyapaar_stack.chaos.run import retrying


class Calls:
    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.count = 0

    async def __call__(self) -> Any:
        self.count += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


async def test_an_outage_is_tried_again_until_it_is_over() -> None:
    calls = Calls(aiohttp.ClientConnectionError(), ApiException(status=503),
                  ApiException(status=429))
    assert await retrying(calls, until=time.monotonic() + 30) == "done"
    assert calls.count == 4


@pytest.mark.parametrize("status", [400, 403, 404, 409, 415, 422])
async def test_a_refusal_is_raised_at_once(status: int) -> None:
    calls = Calls(ApiException(status=status))
    with pytest.raises(ApiException):
        await retrying(calls, until=time.monotonic() + 30)
    assert calls.count == 1


async def test_an_outage_longer_than_the_patience_gives_none() -> None:
    calls = Calls(*[aiohttp.ClientConnectionError()] * 100)
    assert await retrying(calls, until=time.monotonic() + 1) is None


def test_the_run_plays_and_checks_the_saga_services_only() -> None:
    """Command queues, outboxes of replies, poison: the saga's services have them; analytics
    (a read model of the order events, run by the stack beside them) has none."""
    assert "analytics" in system.SERVICES
    assert faults.SERVICES == system.SAGA_SERVICES
    assert "analytics" not in faults.SERVICES
    assert set(TARGETS["poison"]) <= set(system.SAGA_SERVICES)

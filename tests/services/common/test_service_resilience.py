"""A running service survives a broker connection loss: the robust connection comes back,
the consumer and the outbox relay resume, and no message is lost."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from typing import Any

import aiohttp
import pytest
from vyapaar_messaging import Envelope, Publisher, contracts
from vyapaar_services.inventory.app import create_app


async def close_connections(management_url: str, amqp_url: str, name_part: str) -> int:
    """Close (broker side, like a network failure or a broker restart would) every AMQP
    connection whose client-provided name contains ``name_part``."""
    parsed = urllib.parse.urlparse(amqp_url)
    auth = aiohttp.encode_basic_auth(parsed.username or "guest", parsed.password or "guest")
    base = management_url.rstrip("/")
    closed = 0
    async with aiohttp.ClientSession(headers={"Authorization": auth}) as http:
        for _ in range(50):  # the management API lists new connections with a short delay
            async with http.get(f"{base}/api/connections") as response:
                response.raise_for_status()
                connections = await response.json()
            targets = [
                c["name"]
                for c in connections
                if name_part in (c.get("client_properties") or {}).get("connection_name", "")
            ]
            if targets:
                break
            await asyncio.sleep(0.2)
        for name in targets:
            url = f"{base}/api/connections/{urllib.parse.quote(name, safe='')}"
            async with http.delete(url, headers={"X-Reason": "resilience test"}) as response:
                assert response.status in (204, 404)
                closed += 1
    return closed


@pytest.mark.slow
async def test_the_service_recovers_from_a_lost_broker_connection(
    service_runner: Any,
    publisher: Publisher,
    replies: Any,
    rabbitmq_management_url: str,
    amqp_url: str,
    wait_until: Any,
) -> None:
    inventory = await service_runner(create_app, "inventory")
    schema = inventory.runtime.settings.db_schema
    await inventory.client.put("/api/v1/stock/R-1", json={"available": 5})

    assert await close_connections(rabbitmq_management_url, amqp_url, schema) == 1

    async def ready_again() -> bool:
        response = await inventory.client.get("/readyz")
        return response.status == 200

    await wait_until(ready_again, within=30)
    uid = str(uuid.uuid4())
    await publisher.send_command(
        Envelope.create(
            contracts.ReserveStock(items=[contracts.Item(sku="R-1", quantity=2)]),
            correlation_id=uid,
            idempotency_key=f"{uid}:reserve",
        )
    )
    [reply] = await replies.wait(uid, within=30)
    assert reply.type == "StockReserved"

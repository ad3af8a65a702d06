"""The Redis lock is only an optimisation: with Redis unreachable, a hot SKU is still
never oversold (the conditional update and the CHECK constraint are the safety)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from vyapaar_messaging import Envelope, Publisher, contracts
from vyapaar_services.inventory.app import create_app


async def test_hot_sku_is_safe_when_redis_is_down(
    service_runner: Any, publisher: Publisher, replies: Any
) -> None:
    inventory = await service_runner(create_app, "inventory", redis_url="redis://127.0.0.1:1/0")
    hot = f"HOT-{uuid.uuid4().hex[:6]}"
    await inventory.client.put(f"/api/v1/stock/{hot}", json={"available": 7})
    orders = [str(uuid.uuid4()) for _ in range(30)]

    await asyncio.gather(
        *(
            publisher.send_command(
                Envelope.create(
                    contracts.ReserveStock(items=[contracts.Item(sku=hot, quantity=1)]),
                    correlation_id=uid,
                    idempotency_key=f"{uid}:reserve",
                )
            )
            for uid in orders
        )
    )

    outcomes = [(await replies.wait(uid, within=30))[0].type for uid in orders]
    assert outcomes.count("StockReserved") == 7
    level = await (await inventory.client.get(f"/api/v1/stock/{hot}")).json()
    assert (level["available"], level["held"], level["committed"]) == (0, 7, 0)

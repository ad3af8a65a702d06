"""The local infrastructure answers like the real services it is."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import aio_pika
import asyncpg
import redis.asyncio as redis


async def test_rabbitmq_publishes_with_confirms_to_a_quorum_queue_and_delivers(
    amqp_url: str,
) -> None:
    queue_name = f"test.{uuid.uuid4().hex}"
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            queue_name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        confirmation = await channel.default_exchange.publish(
            aio_pika.Message(b"hello", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=queue_name,
        )
        assert confirmation is not None  # a broker ack, not a fire-and-forget
        message = await queue.get(timeout=5)
        assert message is not None
        assert message.body == b"hello"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        await message.ack()
        await queue.delete(if_unused=False, if_empty=False)


async def test_postgresql_answers_a_query(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        assert (await conn.fetchval("SHOW server_version")).startswith("15")
    finally:
        await conn.close()


async def test_redis_round_trip(redis_url: str) -> None:
    r = redis.from_url(redis_url)
    key = f"test:{uuid.uuid4().hex}"
    await r.set(key, "value", ex=10)
    assert await r.get(key) == b"value"
    await r.aclose()


async def test_prometheus_is_ready(prometheus_url: str) -> None:
    def ready() -> int:
        with urllib.request.urlopen(f"{prometheus_url}/-/ready", timeout=5) as resp:
            return int(resp.status)

    assert await asyncio.to_thread(ready) == 200


async def test_rabbitmq_exports_prometheus_metrics(prometheus_url: str) -> None:
    """The rabbitmq_prometheus plugin is on and Prometheus scrapes it."""
    import json

    def query() -> dict[str, object]:
        url = f"{prometheus_url}/api/v1/query?query=up%7Bjob%3D%22rabbitmq%22%7D"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return dict(json.load(resp))

    for _ in range(60):
        result = (await asyncio.to_thread(query))["data"]["result"]  # type: ignore[index]
        if result and result[0]["value"][1] == "1":
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"Prometheus never scraped RabbitMQ: {result}")

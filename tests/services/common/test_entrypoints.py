"""``python -m vyapaar_services.<service>`` runs the service as a real process: it becomes
ready, answers its API, logs JSON lines to stderr and shuts down cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import uuid

import aiohttp
import pytest
from aio_pika.abc import AbstractRobustConnection
from vyapaar_messaging import Topology, delete_topology
from vyapaar_messaging.topology import DEFAULT_RETRY_DELAYS, dlq_name, retry_queue_name

SERVICES = {
    "inventory": "/api/v1/stock",
    "payment": "/api/v1/ledger",
    "shipping": "/api/v1/shipments",
    "notification": "/api/v1/notifications",
    "analytics": "/api/v1/analytics/steps",
}
#: queues a service declares beside the shared topology (delete_topology leaves them)
OWN_QUEUES = {"analytics": "analytics.order-events"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_the_service_runs_as_a_process(
    service: str,
    database_url: str,
    amqp_url: str,
    redis_url: str,
    amqp_connection: AbstractRobustConnection,
    schema: str,
) -> None:
    port = free_port()
    prefix = f"p{uuid.uuid4().hex[:10]}."
    env = {
        **os.environ,
        "VYAPAAR_DATABASE_URL": database_url,
        "VYAPAAR_AMQP_URL": amqp_url,
        "VYAPAAR_REDIS_URL": redis_url,
        "VYAPAAR_DB_SCHEMA": schema,
        "VYAPAAR_AMQP_PREFIX": prefix,
        "VYAPAAR_HTTP_PORT": str(port),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"vyapaar_services.{service}",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(150):
                try:
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"{service} did not become ready")
            async with http.get(f"{base}{SERVICES[service]}") as response:
                assert response.status == 200
            async with http.get(f"{base}/metrics") as response:
                assert "vyapaar_http_requests_total" in await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
        assert process.stderr is not None
        lines = [json.loads(line) for line in (await process.stderr.read()).splitlines()]
        assert any(line["message"].startswith(f"{service} ready") for line in lines)
        assert all(line["service"] == service and "time" in line for line in lines)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        channel = await amqp_connection.channel()
        await delete_topology(channel, Topology(prefix))
        if service in OWN_QUEUES:
            queue = f"{prefix}{OWN_QUEUES[service]}"
            for name in (queue, dlq_name(queue),
                         *(retry_queue_name(queue, d) for d in DEFAULT_RETRY_DELAYS)):
                await channel.queue_delete(name, if_unused=False, if_empty=False)
        await channel.close()

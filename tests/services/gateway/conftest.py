"""Fixtures of the gateway specs that run a gateway of their own, in-process."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web
from vyapaar_services.gateway.app import create_app
from vyapaar_services.gateway.config import GatewaySettings

Serve = Callable[[GatewaySettings], Awaitable[str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def serve_gateway() -> AsyncIterator[Serve]:
    """``await serve_gateway(settings)``: a gateway on a free loopback port, its base URL;
    stopped after the test."""
    runners: list[web.AppRunner] = []

    async def serve(settings: GatewaySettings) -> str:
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        runners.append(runner)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    yield serve
    for runner in runners:
        await runner.cleanup()

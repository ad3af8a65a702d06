"""Without Redis the gateway cannot count rate limits or claim idempotency keys: it says so
(503 with Retry-After, readiness down) instead of failing with a 500 or serving uncounted."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from vyapaar_services.gateway.config import GatewaySettings

TOKEN = "a-token-of-at-least-16"


@pytest.fixture
async def gateway_without_redis(tmp_path: Path, crds: Path, monkeypatch: pytest.MonkeyPatch,
                                serve_gateway: Any) -> str:
    monkeypatch.setenv("KUBECONFIG", str(crds))  # the cluster, with the Order CRD
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tenants": [
        {"name": "a", "namespace": "default", "token": TOKEN}]}))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nothing_listens = int(s.getsockname()[1])  # closed again: nothing listens there
    url: str = await serve_gateway(GatewaySettings(
        redis_url=f"redis://127.0.0.1:{nothing_listens}/0", tokens_file=tokens))
    return url


async def test_without_redis_requests_get_503_with_retry_after_and_readiness_is_down(
    gateway_without_redis: str,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway_without_redis}/api/v1/orders",
                            headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
            assert (await response.json())["type"].endswith("redis-unavailable")
        async with http.get(f"{gateway_without_redis}/readyz") as ready:
            assert ready.status == 503
            assert (await ready.json())["checks"] == {"redis": False, "kubernetes": True}

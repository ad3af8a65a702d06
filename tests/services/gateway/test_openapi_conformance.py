"""schemathesis against the live gateway's own OpenAPI document: whatever it is sent, the
gateway answers without a server error, with a status code, content type, headers and
body its document promises."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiohttp
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from vyapaar_stack.testing import GatewayTenant

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 60
PACE = 1 / 15
"""Below the stack's 20 requests/s per token, so the examples reach the handlers (a 429 is
a documented answer too, but it checks nothing else)."""


async def test_the_gateway_keeps_the_promises_of_its_openapi_document(
    gateway_tenant: GatewayTenant, http: aiohttp.ClientSession, seed_stock: Any,
    unique_sku: Callable[[str], str],
) -> None:
    sku = unique_sku("SKU-SCHEMA")
    await seed_stock({sku: 5})
    body = {"customer": {"id": "c", "email": "c@example.com"},
            "items": [{"sku": sku, "quantity": 1, "unitPrice": 100}], "currency": "JPY",
            "paymentToken": "tok_visa",
            "shippingAddress": {"name": "C", "line1": "1", "city": "Osaka", "postalCode": "530",
                                "country": "JP"}}
    async with http.post(f"{gateway_tenant.url}/api/v1/orders", json=body,
                         headers=gateway_tenant.headers) as created:
        real = (await created.json())["name"]  # an order that exists, for the reads
    schema = schemathesis.openapi.from_url(f"{gateway_tenant.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "POST /api/v1/orders", "GET /api/v1/orders", "GET /api/v1/orders/{name}",
        "POST /api/v1/orders/{name}/cancel", "GET /api/v1/orders/{name}/events"}

    def call(case: Any) -> None:
        time.sleep(PACE)
        case.call_and_validate(headers=gateway_tenant.headers, timeout=60, checks=CHECKS)

    for operation in operations:
        if "{name}" in operation.path:  # the real order too, not only names that 404
            call(operation.Case(path_parameters={"name": real}))

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def keeps_its_promises(case: Any) -> None:
            call(case)

        keeps_its_promises()

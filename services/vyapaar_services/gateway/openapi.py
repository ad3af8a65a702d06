"""The gateway's OpenAPI 3.0 document, served at ``/openapi.json``.

The Order's ``spec`` and ``status`` schemas are the CRD's (:mod:`.schema`), so the
document cannot drift from what the apiserver accepts; the rest — paths, the order view,
the list page, problems, the event stream — is written here, next to the handlers.
"""

from __future__ import annotations

import copy
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from vyapaar_services.gateway.schema import spec_schema, status_schema

__all__ = ["PHASES", "document"]

PHASES: Final = tuple(status_schema()["properties"]["phase"]["enum"])

_PROBLEM_RESPONSES: Final = {
    "400": "Malformed JSON or an invalid parameter or header",
    "401": "No bearer token, or not a valid one",
    "403": "A read-only order link used for anything but reading its order",
    "404": "No such order in the caller's namespace",
    "409": "The request conflicts with the order's state",
    "410": "The order an Idempotency-Key created was deleted since",
    "413": "The body is larger than the gateway accepts",
    "415": "The body is not application/json",
    "422": "The body is not a valid order (the problem names each field)",
    "429": "The token's rate limit is exhausted (see Retry-After)",
    "500": "An unexpected error",
    "503": "Kubernetes or Redis is unavailable; retry after Retry-After",
}


def _problem(code: str) -> dict[str, Any]:
    return {"description": _PROBLEM_RESPONSES[code],
            "content": {"application/problem+json": {
                "schema": {"$ref": "#/components/schemas/Problem"}}}}


def _problems(*codes: str) -> dict[str, Any]:
    return {code: _problem(code)
            for code in ("400", "401", "403", "429", "500", "503", *codes)}


_NAME: Final = {"name": "name", "in": "path", "required": True,
                "description": "The order's name (metadata.name).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 253,
                           "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}}
_RATE_HEADERS: Final = {
    "RateLimit-Limit": {"description": "Requests allowed in the window.",
                        "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Requests left in the window.",
                            "schema": {"type": "integer"}},
}


def _package_version() -> str:
    try:
        return version("vyapaar-nexus")
    except PackageNotFoundError:
        return "0.0.0"


@cache
def document() -> dict[str, Any]:
    order_ref = {"$ref": "#/components/schemas/Order"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Vyapaar Nexus gateway",
            "version": _package_version(),
            "description": "Place and follow orders without Kubernetes credentials. Each "
                           "order is an Order resource in the namespace of the caller's "
                           "token; its saga runs in the operator.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/orders": {
                "post": {
                    "operationId": "createOrder",
                    "summary": "Place an order",
                    "parameters": [{
                        "name": "Idempotency-Key", "in": "header", "required": False,
                        "description": "Makes retries safe: the same key and body return "
                                       "the same order (Idempotent-Replayed: true); the "
                                       "same key with another body is refused with 422.",
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                   "pattern": "^[\\x21-\\x7e]+$"}}],
                    "requestBody": {"required": True, "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/OrderSpec"}}}},
                    "responses": {
                        "201": {"description": "Created (or replayed for an Idempotency-Key)",
                                "headers": {
                                    "Location": {"schema": {"type": "string"}},
                                    "Idempotent-Replayed": {
                                        "description": "With an Idempotency-Key: whether "
                                                       "this is an earlier request's order.",
                                        "schema": {"type": "string",
                                                   "enum": ["true", "false"]}}},
                                "content": {"application/json": {"schema": order_ref}}},
                        **_problems("409", "410", "413", "415", "422"),
                    },
                },
                "get": {
                    "operationId": "listOrders",
                    "summary": "List the caller's orders, newest pages by continue token",
                    "parameters": [
                        {"name": "phase", "in": "query", "required": False,
                         "schema": {"type": "string", "enum": list(PHASES)}},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                    "default": 50}},
                        {"name": "continue", "in": "query", "required": False,
                         "description": "The continue token of the previous page.",
                         "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {"description": "A page of orders",
                                "headers": _RATE_HEADERS,
                                "content": {"application/json": {"schema": {
                                    "$ref": "#/components/schemas/OrderList"}}}},
                        **_problems(),
                    },
                },
            },
            "/api/v1/orders/{name}": {
                "get": {
                    "operationId": "getOrder",
                    "summary": "Read an order",
                    "parameters": [_NAME],
                    "responses": {
                        "200": {"description": "The order", "headers": _RATE_HEADERS,
                                "content": {"application/json": {"schema": order_ref}}},
                        **_problems("404"),
                    },
                },
            },
            "/api/v1/orders/{name}/cancel": {
                "post": {
                    "operationId": "cancelOrder",
                    "summary": "Ask for the order to be cancelled",
                    "description": "Accepted before the pivot (the shipment); the saga then "
                                   "rolls the order back and it ends Cancelled. While the "
                                   "shipment is being created, the shipment's outcome "
                                   "decides. Refused with 409 once past the pivot or when "
                                   "the order has already ended.",
                    "parameters": [_NAME],
                    "responses": {
                        "202": {"description": "Cancellation requested",
                                "content": {"application/json": {"schema": order_ref}}},
                        **_problems("404", "409"),
                    },
                },
            },
            "/api/v1/orders/{name}/events": {
                "get": {
                    "operationId": "streamOrderEvents",
                    "summary": "Follow an order's phase transitions (server-sent events)",
                    "description": "Events `transition` (id: sequence number, data: a "
                                   "Transition), then `end` when the order is terminal or "
                                   "`deleted`. Resume with Last-Event-ID.",
                    "parameters": [_NAME, {
                        "name": "Last-Event-ID", "in": "header", "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9]{0,9}$"}}],
                    "responses": {
                        "200": {"description": "The event stream",
                                "content": {"text/event-stream": {"schema": {
                                    "$ref": "#/components/schemas/ServerSentEvent"}}}},
                        **_problems("404"),
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "A token of the gateway's tokens "
                                                          "Secret; it picks the namespace."}},
            "schemas": {
                "OrderSpec": spec_schema(),
                "OrderStatus": copy.deepcopy(status_schema()),
                "Order": {
                    "type": "object",
                    "required": ["name", "namespace", "uid", "traceId", "resourceVersion",
                                 "createdAt", "spec", "status", "links"],
                    "properties": {
                        "name": {"type": "string"},
                        "namespace": {"type": "string"},
                        "uid": {"type": "string"},
                        "traceId": {"type": "string", "pattern": "^[0-9a-f]{32}$",
                                    "description": "The W3C trace id of the order's saga: "
                                                   "the caller's (a traceparent sent with "
                                                   "the create), else the uid's hex. Look "
                                                   "the trace up in the tracing backend, "
                                                   "e.g. `vyapaar order trace NAME`."},
                        "resourceVersion": {"type": "string"},
                        "createdAt": {"type": "string", "format": "date-time"},
                        "spec": {"$ref": "#/components/schemas/OrderSpec"},
                        "status": {"$ref": "#/components/schemas/OrderStatus"},
                        "links": {"type": "object", "properties": {
                            "self": {"type": "string"}, "events": {"type": "string"},
                            "page": {"type": "string",
                                     "description": "The order's page, with a read-only "
                                                    "token for this one order in the URL "
                                                    "fragment: a link to give the customer "
                                                    "(expires after a week by default)."}}},
                    },
                },
                "OrderList": {
                    "type": "object",
                    "required": ["items", "continue"],
                    "properties": {
                        "items": {"type": "array",
                                  "items": {"$ref": "#/components/schemas/Order"}},
                        "continue": {"type": "string", "nullable": True,
                                     "description": "Pass as ?continue= for the next page; "
                                                    "null on the last page."},
                    },
                },
                "Transition": {
                    "type": "object",
                    "required": ["seq", "phase", "time", "reason", "message", "order", "uid"],
                    "properties": {
                        "seq": {"type": "integer", "minimum": 1},
                        "phase": {"type": "string", "enum": list(PHASES)},
                        "time": {"type": "string", "format": "date-time"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "order": {"type": "string"},
                        "uid": {"type": "string"},
                    },
                },
                "ServerSentEvent": {
                    "type": "object",
                    "description": "One event of the stream: `transition` (data: a "
                                   "Transition as JSON, id: its seq), `end` or `deleted` "
                                   "(data: {order, phase}).",
                    "properties": {
                        "event": {"type": "string", "enum": ["transition", "end", "deleted"]},
                        "id": {"type": "string", "pattern": "^[0-9]+$"},
                        "data": {"type": "string"},
                        "retry": {"type": "integer", "minimum": 0},
                    },
                },
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "errors": {"type": "array", "items": {
                            "type": "object", "required": ["field", "message"],
                            "properties": {"field": {"type": "string"},
                                           "message": {"type": "string"}}}},
                    },
                },
            },
        },
    }

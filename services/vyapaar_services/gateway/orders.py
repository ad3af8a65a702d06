"""The Order resources, as the gateway reads and writes them (kubernetes-asyncio).

Only what the gateway's ServiceAccount may do: create, get, list, watch and patch Orders.
Kubernetes errors become problems here, so handlers never see an ``ApiException``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from vyapaar_messaging import tracing

from vyapaar_services.common.http import Problem

__all__ = ["FINALIZER", "AlreadyExists", "Gone", "Orders", "order_view"]

log = logging.getLogger(__name__)

GROUP: Final = "vyapaar.dev"
VERSION: Final = "v1alpha1"
PLURAL: Final = "orders"
FINALIZER: Final = "vyapaar.dev/saga"
"""The operator's finalizer, set at creation so the saga needs no write to add it."""
MERGE_PATCH: Final = "application/merge-patch+json"
USER_AGENT: Final = "vyapaar-gateway"


class AlreadyExists(Exception):
    """An Order of that name exists (the name derived from an Idempotency-Key)."""


class Gone(Exception):
    """A watch asked for a resourceVersion the apiserver no longer keeps (410)."""


@dataclass(frozen=True, slots=True)
class Page:
    items: list[dict[str, Any]]
    continue_token: str | None


def order_view(obj: Mapping[str, Any], link_token: str | None = None) -> dict[str, Any]:
    """An Order as the API shows it: identity, spec and status, no Kubernetes bookkeeping;
    ``links.page`` carries ``link_token``, a read-only token for this order (:mod:`.links`)."""
    meta = obj["metadata"]
    name = meta["name"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "uid": meta["uid"],
        "traceId": tracing.order_root_traceparent(meta).split("-")[1],
        "resourceVersion": meta["resourceVersion"],
        "createdAt": meta["creationTimestamp"],
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
        "links": {
            "self": f"/api/v1/orders/{name}",
            "events": f"/api/v1/orders/{name}/events",
            "page": f"/orders/{name}" + (f"#token={link_token}" if link_token else ""),
        },
    }


async def api_client() -> client.ApiClient:
    """In a pod its ServiceAccount; elsewhere ``KUBECONFIG``, like kubectl."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        # $KUBECONFIG as it is now (kubernetes-asyncio reads it once, at import)
        await config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                      client_configuration=configuration)
    api = client.ApiClient(configuration)
    api.user_agent = USER_AGENT  # the field manager and the audit log's user agent
    # As the operator does (handlers._api_client): kubernetes-asyncio's session trusts the
    # environment, so aiohttp looks up proxies and reads ~/.netrc in a thread on every
    # request; the apiserver is reached directly.
    rest = api.rest_client
    shared = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=shared.connector, trust_env=False,
                                              trace_configs=tracing.aiohttp_trace_configs())
    shared.detach()
    return api


def _problem(exc: ApiException, doing: str) -> Problem:
    """What the caller should hear when the apiserver refused ``doing``."""
    try:
        status = json.loads(exc.body or "{}")
    except ValueError:
        status = {}
    if exc.status == 422:
        causes = (status.get("details") or {}).get("causes") or []
        errors = [{"field": str(c.get("field") or "<body>").removeprefix("spec."),
                   "message": str(c.get("message") or c.get("reason") or "invalid")}
                  for c in causes]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or status.get(
            "message", "the order is invalid")
        return Problem(422, "Invalid order", detail, type_="validation-error",
                       errors=errors)
    if exc.status == 429 or exc.status >= 500:
        return Problem(503, "Service Unavailable",
                       f"Kubernetes is overloaded or unavailable while {doing}; retry shortly.",
                       type_="kubernetes-unavailable", headers={"Retry-After": "1"})
    log.error("Kubernetes refused %s: %s %s", doing, exc.status, status.get("message"))
    return Problem(500, "Internal Server Error",
                   f"The gateway could not complete {doing} (Kubernetes said {exc.status}).")


class Orders:
    """The Order objects of one namespace at a time (the caller's tenant)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._objects = client.CustomObjectsApi(api)

    async def create(self, namespace: str, spec: Mapping[str, Any], *, name: str | None,
                     annotations: Mapping[str, str]) -> dict[str, Any]:
        """Create an Order with the operator's finalizer already on it.

        ``name`` None lets the apiserver pick one (``order-xxxxx``).
        """
        metadata: dict[str, Any] = {"finalizers": [FINALIZER], "annotations": dict(annotations)}
        if name is None:
            metadata["generateName"] = "order-"
        else:
            metadata["name"] = name
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Order", "metadata": metadata,
                "spec": dict(spec)}
        try:
            created: dict[str, Any] = await self._objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body)
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExists(name) from None
            raise _problem(exc, "creating the order") from None
        return created

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._objects.get_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _problem(exc, "reading the order") from None
        return obj

    async def list(self, namespace: str, *, phase: str | None, limit: int,
                   continue_token: str | None) -> Page:
        """One page; ``phase`` filters on the server (the CRD's selectable ``status.phase``)."""
        kwargs: dict[str, Any] = {"limit": limit}
        if phase:
            kwargs["field_selector"] = f"status.phase={phase}"
        if continue_token:
            kwargs["_continue"] = continue_token
        try:
            listing = await self._objects.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, **kwargs)
        except ApiException as exc:
            if exc.status in (400, 410) and continue_token:
                raise Problem(400, "Invalid continue token",
                              "The continue token is malformed or expired; list from the "
                              "start again.", type_="invalid-continue-token") from None
            raise _problem(exc, "listing orders") from None
        return Page(list(listing.get("items") or []),
                    (listing.get("metadata") or {}).get("continue") or None)

    async def request_cancel(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Set ``spec.cancel``, if ``obj`` is still the current version (None: it changed)."""
        meta = obj["metadata"]
        patch = {"metadata": {"resourceVersion": meta["resourceVersion"]},
                 "spec": {"cancel": True}}
        try:
            patched: dict[str, Any] = await self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted via **kwargs
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            if exc.status == 404:
                raise Problem(404, "Not Found", f"Order {meta['name']!r} does not exist.",
                              type_="order-not-found") from None
            raise _problem(exc, "cancelling the order") from None
        return patched

    async def watch(self, namespace: str, name: str, resource_version: str,
                    timeout_seconds: int = 240) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``(event type, object)`` of one Order after ``resource_version``, until the
        apiserver ends the watch; raises :class:`Gone` when that version is too old."""
        stream = watch.Watch()
        try:
            async for event in stream.stream(
                self._objects.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                field_selector=f"metadata.name={name}", resource_version=resource_version,
                timeout_seconds=timeout_seconds, allow_watch_bookmarks=True,
            ):
                kind, obj = str(event["type"]), event["object"]
                if kind == "ERROR":
                    if isinstance(obj, Mapping) and obj.get("code") == 410:
                        raise Gone(resource_version)
                    raise Problem(503, "Service Unavailable", "The order's watch failed.",
                                  type_="kubernetes-unavailable")
                yield kind, obj
        except ApiException as exc:
            if exc.status == 410:
                raise Gone(resource_version) from None
            raise _problem(exc, "watching the order") from None
        finally:
            stream.stop()
            await stream.close()

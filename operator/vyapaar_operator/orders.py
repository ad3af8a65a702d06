"""Reading and writing Order objects, with optimistic concurrency.

Every write carries the resourceVersion it was computed from, so a write based
on a stale read is refused by the apiserver with 409 Conflict instead of
silently overwriting someone else's change; the caller re-reads and decides
again. Status is replaced whole (PUT on the status subresource): the saga owns
all of it, and a replace needs no merge-patch nulls to drop fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

GROUP = "vyapaar.dev"
VERSION = "v1alpha1"
PLURAL = "orders"
KIND = "Order"
FINALIZER = "vyapaar.dev/saga"
"""Held while the saga may still have to compensate, so a deletion waits for it."""

MERGE_PATCH = "application/merge-patch+json"


class Conflict(Exception):
    """The object changed since it was read (HTTP 409); re-read and decide again."""


class Gone(Exception):
    """The object no longer exists (HTTP 404): deleted since it was read, its saga over."""


def apiserver_unavailable(exc: BaseException) -> bool:
    """The apiserver could not be reached, or is overloaded or restarting (429, 5xx): the
    same request will do later."""
    if isinstance(exc, ApiException):
        return exc.status is not None and (exc.status == 429 or exc.status >= 500)
    return isinstance(exc, aiohttp.ClientError | OSError | TimeoutError)


@dataclass(frozen=True)
class OrderRef:
    namespace: str
    name: str

    @classmethod
    def parse(cls, subject: str) -> OrderRef:
        """From a message's ``subject`` (``namespace/name``)."""
        namespace, sep, name = subject.partition("/")
        if not sep or not namespace or not name:
            raise ValueError(f"not a namespace/name subject: {subject!r}")
        return cls(namespace, name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


class OrderStore:
    """The Order objects in the cluster, through kubernetes-asyncio."""

    def __init__(self, api: client.ApiClient) -> None:
        self._objects = client.CustomObjectsApi(api)

    async def get(self, ref: OrderRef) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await self._objects.get_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    async def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        """Write `status` if `obj` (with its resourceVersion) is still current."""
        meta = obj["metadata"]
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": obj.get("spec", {}),
            "status": status,
        }
        try:
            result: dict[str, Any] = await self._objects.replace_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            if exc.status == 404:
                raise Gone(str(ref_of(obj))) from exc
            raise
        return result

    async def set_finalizer(self, obj: dict[str, Any], present: bool) -> dict[str, Any]:
        """Add or remove our finalizer, conditional on the resourceVersion read."""
        meta = obj["metadata"]
        finalizers = [f for f in meta.get("finalizers") or [] if f != FINALIZER]
        if present:
            finalizers.append(FINALIZER)
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        try:
            result: dict[str, Any] = await self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted via **kwargs
            )
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(str(exc.reason)) from exc
            if exc.status == 404 and not present:
                return obj
            raise
        return result


    async def remove_annotation(self, ref: OrderRef, key: str) -> None:
        patch = {"metadata": {"annotations": {key: None}}}
        try:
            await self._objects.patch_namespaced_custom_object(
                GROUP, VERSION, ref.namespace, PLURAL, ref.name, patch,
                _content_type=MERGE_PATCH,  # type: ignore[call-arg]  # accepted via **kwargs
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def has_finalizer(obj: dict[str, Any]) -> bool:
    return FINALIZER in (obj["metadata"].get("finalizers") or [])


def ref_of(obj: dict[str, Any]) -> OrderRef:
    return OrderRef(obj["metadata"]["namespace"], obj["metadata"]["name"])

"""Shipping message handlers: CreateShipment, VoidShipment, and the simulated carrier.

Deterministic rejection: an address whose ``name`` or ``line1`` contains "UNDELIVERABLE"
(any case), or whose ``country`` is ``AQ``, is refused with UNDELIVERABLE_ADDRESS. Fault
injection adds latency and TRANSIENT errors to carrier calls (-> delayed retry).

* CreateShipment: a key with a tombstone -> ShipmentRejected(ALREADY_COMPENSATED);
  otherwise a shipment with a new tracking id (``VN`` + 12 hex digits) or a rejection.
* VoidShipment (compensation, same key): voids a created shipment (``noop=false``) — e.g.
  one whose reply was lost; no shipment -> tombstone (``noop=true``); rejected, voided or
  tombstoned -> ``noop=true``.
"""

from __future__ import annotations

import secrets

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope

from vyapaar_services.common import metrics
from vyapaar_services.common.faults import FaultInjector
from vyapaar_services.common.handling import CommandHandler
from vyapaar_services.shipping import store

__all__ = ["SimulatedCarrier", "build_handlers", "is_undeliverable"]

UNDELIVERABLE_COUNTRIES = frozenset({"AQ"})


def is_undeliverable(address: contracts.Address) -> bool:
    marker = "UNDELIVERABLE"
    return (
        marker in address.name.upper()
        or marker in address.line1.upper()
        or address.country in UNDELIVERABLE_COUNTRIES
    )


class SimulatedCarrier:
    def __init__(self, faults: FaultInjector) -> None:
        self.faults = faults

    async def book(self, address: contracts.Address) -> str | None:
        """A tracking id, or None when the address is undeliverable."""
        await self.faults.call("book")
        if is_undeliverable(address):
            metrics.PROCESSOR_CALLS.labels("shipping", "book", "rejected").inc()
            return None
        metrics.PROCESSOR_CALLS.labels("shipping", "book", "ok").inc()
        return "VN" + secrets.token_hex(6).upper()

    async def void(self, tracking_id: str) -> None:
        await self.faults.call("void")
        metrics.PROCESSOR_CALLS.labels("shipping", "void", "ok").inc()


def build_handlers(faults: FaultInjector) -> dict[str, CommandHandler]:
    carrier = SimulatedCarrier(faults)

    async def create_shipment(
        conn: asyncpg.Connection, envelope: Envelope, command: contracts.CreateShipment
    ) -> contracts.ShipmentCreated | contracts.ShipmentRejected:
        key = envelope.idempotency_key
        existing = await store.get_shipment_by_key(conn, key)
        if existing is not None:
            if existing["status"] in ("created", "voided"):
                return contracts.ShipmentCreated(
                    shipment_id=str(existing["id"]), tracking_id=existing["tracking_id"]
                )
            if existing["status"] == "rejected":
                return contracts.ShipmentRejected(reason="UNDELIVERABLE_ADDRESS")
            return contracts.ShipmentRejected(reason="ALREADY_COMPENSATED")

        tracking_id = await carrier.book(command.address)
        address = command.address.to_payload()
        items = [item.to_payload() for item in command.items]
        if tracking_id is None:
            await store.insert_shipment(
                conn,
                order_uid=envelope.correlation_id,
                key=key,
                status="rejected",
                reason="UNDELIVERABLE_ADDRESS",
                address=address,
                items=items,
            )
            return contracts.ShipmentRejected(reason="UNDELIVERABLE_ADDRESS")
        shipment_id = await store.insert_shipment(
            conn,
            order_uid=envelope.correlation_id,
            key=key,
            status="created",
            tracking_id=tracking_id,
            address=address,
            items=items,
        )
        return contracts.ShipmentCreated(shipment_id=str(shipment_id), tracking_id=tracking_id)

    async def void_shipment(
        conn: asyncpg.Connection, envelope: Envelope, _command: contracts.VoidShipment
    ) -> contracts.ShipmentVoided:
        key = envelope.idempotency_key
        shipment = await store.get_shipment_by_key(conn, key)
        if shipment is None:
            await store.insert_shipment(
                conn, order_uid=envelope.correlation_id, key=key, status="tombstone"
            )
            return contracts.ShipmentVoided(noop=True)
        if shipment["status"] == "created":
            await carrier.void(shipment["tracking_id"])
            await store.set_status(conn, shipment["id"], "voided")
            return contracts.ShipmentVoided(noop=False)
        return contracts.ShipmentVoided(noop=True)

    return {"CreateShipment": create_shipment, "VoidShipment": void_shipment}

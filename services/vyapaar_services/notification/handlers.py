"""Notification message handler: SendNotification -> NotificationSent.

Renders the template, records the message (recipient, subject, body) — the record IS the
sent message in this simulation — and replies with its id. Retries with the same key
return the original notification (no second message to the customer).
"""

from __future__ import annotations

from typing import Any

import asyncpg
from vyapaar_messaging import contracts
from vyapaar_messaging.envelope import Envelope

from vyapaar_services.common.handling import CommandHandler
from vyapaar_services.notification import store

__all__ = ["build_handlers", "render"]


def render(
    template: contracts.NotificationTemplate,
    customer: contracts.Customer,
    order: str,
    data: dict[str, Any],
) -> tuple[str, str]:
    """(subject, body) of a customer message."""
    greeting = f"Hello {customer.name}," if customer.name else "Hello,"
    if template is contracts.NotificationTemplate.ORDER_CONFIRMED:
        subject = f"Your order {order} is confirmed"
        text = "Thank you! Your order is confirmed and on its way."
        if data.get("trackingId"):
            text += f" Tracking number: {data['trackingId']}."
    elif template is contracts.NotificationTemplate.ORDER_FAILED:
        subject = f"We could not complete your order {order}"
        text = "Unfortunately we could not complete your order; you have not been charged."
        if data.get("reason"):
            text += f" Reason: {data['reason']}."
    else:
        subject = f"Your order {order} has been cancelled"
        text = "Your order has been cancelled as requested; any payment has been refunded."
    return subject, f"{greeting}\n\n{text}\n"


async def send_notification(
    conn: asyncpg.Connection, envelope: Envelope, command: contracts.SendNotification
) -> contracts.NotificationSent:
    key = envelope.idempotency_key
    existing = await store.get_by_key(conn, key)
    if existing is not None:
        return contracts.NotificationSent(notification_id=str(existing["id"]))
    order = envelope.subject.rpartition("/")[2] or envelope.correlation_id
    subject, body = render(command.template, command.customer, order, command.data)
    notification_id = await store.insert_notification(
        conn,
        order_uid=envelope.correlation_id,
        key=key,
        template=command.template.value,
        customer=command.customer.to_payload(),
        recipient=command.customer.email,
        subject=subject,
        body=body,
        data=command.data,
    )
    return contracts.NotificationSent(notification_id=str(notification_id))


def build_handlers() -> dict[str, CommandHandler]:
    return {"SendNotification": send_notification}

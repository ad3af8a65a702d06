"""Notification service, end to end: every notification sent is recorded and inspectable."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from vyapaar_messaging import Envelope, Publisher, contracts
from vyapaar_services.notification.app import create_app

CUSTOMER = contracts.Customer(id="cust-7", email="ravi@example.com", name="Ravi")


def notify(uid: str, template: str, step: str = "notify", **data: Any) -> Envelope:
    return Envelope.create(
        contracts.SendNotification(
            template=contracts.NotificationTemplate(template), customer=CUSTOMER, data=data
        ),
        correlation_id=uid,
        subject="shop/order-42",
        idempotency_key=contracts.idempotency_key(uid, step),
    )


@pytest.fixture(scope="module")
async def notification(service_runner: Any) -> Any:
    return await service_runner(create_app, "notification")


async def sent(notification: Any, uid: str) -> list[dict[str, Any]]:
    response = await notification.client.get("/api/v1/notifications", params={"order": uid})
    assert response.status == 200
    items: list[dict[str, Any]] = (await response.json())["items"]
    return items


async def test_a_notification_is_recorded_and_acknowledged(
    notification: Any, publisher: Publisher, replies: Any
) -> None:
    uid = str(uuid.uuid4())
    cmd = notify(uid, "order-confirmed", trackingId="VN123")
    await publisher.send_command(cmd)

    [reply] = await replies.wait(uid)
    assert reply.type == "NotificationSent"
    assert reply.causation_id == cmd.id
    [message] = await sent(notification, uid)
    assert message["id"] == reply.payload["notificationId"]
    assert message["template"] == "order-confirmed"
    assert message["recipient"] == "ravi@example.com"
    assert message["subject"] == "Your order order-42 is confirmed"
    assert "Hello Ravi," in message["body"]
    assert "VN123" in message["body"]
    assert message["data"] == {"trackingId": "VN123"}


async def test_a_retried_notification_is_sent_once(
    notification: Any, publisher: Publisher, replies: Any
) -> None:
    uid = str(uuid.uuid4())
    cmd = notify(uid, "order-failed", reason="OUT_OF_STOCK")
    await publisher.send_command(cmd)
    await replies.wait(uid, 1)
    await publisher.send_command(cmd)
    await publisher.send_command(cmd.model_copy(update={"id": str(uuid.uuid4())}))
    results = await replies.wait(uid, 3)
    assert len({r.id for r in results}) == 1
    assert len(await sent(notification, uid)) == 1


async def test_each_template_and_step_is_its_own_message(
    notification: Any, publisher: Publisher, replies: Any
) -> None:
    uid = str(uuid.uuid4())
    await publisher.send_command(notify(uid, "order-failed", step="notify-failed"))
    await publisher.send_command(notify(uid, "order-cancelled", step="notify-cancelled"))
    await replies.wait(uid, 2)
    messages = await sent(notification, uid)
    assert sorted(m["template"] for m in messages) == ["order-cancelled", "order-failed"]
    assert all(m["subject"] for m in messages)

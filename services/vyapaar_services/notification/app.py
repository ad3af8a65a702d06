"""Notification service: records every notification sent to customers.

Admin/read API:

* ``GET /api/v1/notifications?order=<uid>`` — messages sent (of one order, or the latest)
* ``/healthz``, ``/readyz``, ``/metrics``

Messages: consumes ``notification.commands`` (SendNotification), replies on
``vyapaar.events`` as ``notification.NotificationSent``. Env: see
:mod:`vyapaar_services.common.config`.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from vyapaar_services.common import db
from vyapaar_services.common.config import Settings
from vyapaar_services.common.http import json_response, query_param
from vyapaar_services.common.service import RUNTIME_KEY, ServiceRuntime, create_service_app
from vyapaar_services.notification import handlers, store

__all__ = ["SERVICE", "create_app"]

SERVICE: Final = "notification"


async def list_notifications(request: web.Request) -> web.Response:
    order = query_param(request, "order")
    pool = request.app[RUNTIME_KEY].require_pool()
    return json_response({"items": await store.list_notifications(pool, order)})


def create_app(settings: Settings | None = None) -> web.Application:
    settings = settings or Settings.from_env(SERVICE)
    runtime = ServiceRuntime(
        settings,
        migrations=db.load_migrations("vyapaar_services.notification.migrations", SERVICE),
        handlers=handlers.build_handlers(),
    )
    app = create_service_app(runtime)
    app.router.add_get("/api/v1/notifications", list_notifications)
    return app

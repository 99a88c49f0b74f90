"""Webhooks for admins: receivers, a test event, deliveries (dead letters) and redelivery."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request
from litestar.params import JSONBody, Parameter

from core.events import webhooks
from nexmdm_api.auth import admin_actor, admin_route
from nexmdm_api.db import DB
from nexmdm_api.errors import problems
from nexmdm_api.openapi import allow
from nexmdm_api.paging import Limit, keyset_page
from nexmdm_api.routes.base import delete, get, post
from nexmdm_api.schemas import convert
from nexmdm_api.schemas_admin import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
    WebhookTest,
)

ENDPOINT_ID_PATTERN = r"^whk_[0-9a-f]{12}$"
EndpointIdPath = Annotated[
    str, Parameter(description="the webhook's id", schema_extra={"pattern": ENDPOINT_ID_PATTERN})
]
DeliveryIdPath = Annotated[int, Parameter(description="the delivery's id", ge=1, le=2**62)]


class WebhookController(Controller):
    """Webhook receivers, their deliveries and redelivery."""

    path = "/v1/webhooks"
    tags = ["admin", "webhooks"]
    allowed = allow(path)  # GET and POST share the path

    @post(
        "/",
        summary="Add a webhook receiver",
        description="Without `secret` the server makes one and returns it, once. Targets are checked at delivery.",
        status_code=201,
        **admin_route("admin", body="json", action="webhook.create"),
        responses=problems(400, 401, 403, 413, 415, 422, 429),
    )
    def create_webhook(self, request: Request[Any, Any, Any], db: DB, data: JSONBody[WebhookIn]) -> WebhookCreated:
        secret, endpoint = webhooks.add_endpoint(
            db, url=data.url, events=list(data.events), secret=data.secret, actor=admin_actor(request)
        )
        return convert(endpoint | {"secret": secret if data.secret is None else None}, WebhookCreated)

    @get(
        "/",
        summary="List webhook receivers",
        description="Secrets are never listed. One page holds every receiver (`next_cursor` is always null).",
        **admin_route("admin", readonly=True),
        responses=problems(400, 401, 403, 422, 429),
    )
    def list_webhooks(self, db: DB) -> WebhookPage:
        return WebhookPage(items=[convert(e, WebhookOut) for e in webhooks.list_endpoints(db)], next_cursor=None)

    @delete(
        "/{endpoint_id:str}",
        summary="Remove a webhook receiver",
        description="Its undelivered events are dropped.",
        status_code=200,
        **admin_route("admin", action="webhook.remove"),
        responses=problems(400, 401, 403, 404, 429),
    )
    def remove_webhook(self, request: Request[Any, Any, Any], db: DB, endpoint_id: EndpointIdPath) -> WebhookOut:
        return convert(webhooks.remove_endpoint(db, endpoint_id, actor=admin_actor(request)), WebhookOut)

    @post(
        "/{endpoint_id:str}/test",
        summary="Queue a signed webhook.test event for one receiver",
        status_code=202,
        **admin_route("admin", action="webhook.test"),
        responses=problems(400, 401, 403, 404, 429),
    )
    def test_webhook(self, request: Request[Any, Any, Any], db: DB, endpoint_id: EndpointIdPath) -> WebhookTest:
        event_id = webhooks.send_test(db, endpoint_id, actor=admin_actor(request))
        return WebhookTest(endpoint_id=endpoint_id, event_id=event_id)

    @get(
        "/{endpoint_id:str}/deliveries",
        summary="A receiver's deliveries, newest first",
        description="`failed=true`: dead letters and deliveries that are failing (retrying).",
        **admin_route("admin", readonly=True),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def list_deliveries(
        self,
        db: DB,
        endpoint_id: EndpointIdPath,
        limit: Limit = 100,
        cursor: Annotated[
            str | None, Parameter(description="`next_cursor` of the previous page", pattern=r"^[0-9]{1,18}$")
        ] = None,
        failed: Annotated[bool, Parameter(description="only dead letters and failing deliveries")] = False,
    ) -> DeliveryPage:
        before_id = int(cursor) if cursor else None
        rows, next_cursor = keyset_page(
            lambda n: webhooks.list_deliveries(
                db, endpoint_id=endpoint_id, failed=failed, before_id=before_id, limit=n
            ),
            limit,
            "id",
        )
        return DeliveryPage(items=[convert(r, DeliveryOut) for r in rows], next_cursor=next_cursor)

    @post(
        "/deliveries/{delivery_id:int}/redeliver",
        summary="Send a delivery again",
        description="Same event id (`NexMDM-Delivery`) and body; attempts start over.",
        status_code=200,
        **admin_route("admin", action="webhook.redeliver"),
        responses=problems(400, 401, 403, 404, 422, 429),
    )
    def redeliver(self, request: Request[Any, Any, Any], db: DB, delivery_id: DeliveryIdPath) -> DeliveryOut:
        return convert(webhooks.redeliver(db, delivery_id, actor=admin_actor(request)), DeliveryOut)

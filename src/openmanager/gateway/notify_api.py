"""REST routes for the caller's own notifications, preferences and push subscriptions, and the
scheduled jobs, under `/api/v1`. Every route acts on the authenticated user only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from openmanager.core.bounds import MAX_EPOCH_MS
from openmanager.core.errors import NotFoundError
from openmanager.gateway.deps import JsonObject, JsonRoute, NotificationsDep
from openmanager.notify.service import new_id

router = APIRouter(prefix="/api/v1", tags=["notifications"], route_class=JsonRoute)

def _user(request: Request) -> str:
    return str(request.scope.get("user") or "")


@router.get("/me/preferences")
async def get_preferences(request: Request, notifications: NotificationsDep) -> dict[str, Any]:
    """The caller's notification settings (secrets shown as `<name>_set`)."""
    return notifications.service().preferences(_user(request)).to_api()


@router.put("/me/preferences")
async def put_preferences(request: Request, body: JsonObject, notifications: NotificationsDep) -> dict[str, Any]:
    """Change the caller's settings; fields left out keep their value (secrets too; "" clears one)."""
    return (await notifications.service().set_preferences(_user(request), body)).to_api()


@router.get("/notifications")
async def list_notifications(
    request: Request,
    notifications: NotificationsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=0, le=MAX_EPOCH_MS,
                                        description="Only those created before this epoch ms")] = None,
    unread: Annotated[bool, Query(description="Only unread ones")] = False,
    alert: Annotated[str | None, Query(max_length=64, description="Only those about this alert id")] = None,
) -> dict[str, Any]:
    """The caller's notifications, newest first, each with its per-channel delivery status (`sent`,
    `pending` (with attempts), `failed` with the error, `suppressed` or `queued` with the reason,
    `digested`), and the unread count. `alert=<id>`: only those about that alert (the alert timeline)."""
    service, user = notifications.service(), _user(request)
    await notifications.settle()  # transitions already published are in the history too
    items = await service.store.history(user, limit=limit, before=before, unread=unread, alert_id=alert)
    return {"notifications": items, "unread": await service.store.unread_count(user)}


@router.post("/notifications/{notification_id}/read")
async def mark_read(request: Request, notification_id: str, notifications: NotificationsDep) -> dict[str, Any]:
    service, user = notifications.service(), _user(request)
    if not await service.store.mark_read(user, notification_id, service.clock()):
        raise NotFoundError(f"no notification {notification_id!r}")
    return {"id": notification_id, "read": True, "unread": await service.store.unread_count(user)}


@router.post("/me/test-notification", status_code=202)
async def test_notification(request: Request, notifications: NotificationsDep) -> dict[str, Any]:
    """Send a test through each of the caller's enabled channels; see the result in the history."""
    return await notifications.service().test_notification(_user(request))


@router.post("/me/test-notification/{channel}")
async def test_channel(request: Request, channel: str, notifications: NotificationsDep) -> dict[str, Any]:
    """Send a test through one of the caller's channels now and answer with what its provider said:
    `{"channel", "ok", "detail"}` (200 whether or not it was accepted; 404 for an unknown channel, 429
    `rate_limited` within 5 s of the last test of that channel)."""
    return await notifications.service().test_channel(_user(request), channel)


@router.get("/push/vapid-public-key")
async def vapid_public_key(request: Request, notifications: NotificationsDep) -> dict[str, str]:
    """The `applicationServerKey` for `PushManager.subscribe()` (base64url)."""
    return {"public_key": notifications.vapid_public_key}


@router.post("/push/subscriptions", status_code=201)
async def add_push_subscription(request: Request, body: JsonObject, notifications: NotificationsDep) -> dict[str, Any]:
    """Register this device's PushSubscription (`subscription.toJSON()`: endpoint and keys), bare or
    wrapped as `{"subscription": {...}}`. 400 `invalid_subscription` unless the endpoint is https://
    (http:// only for an address `outbound_allow` names) on a host the outbound guard does not refuse,
    `p256dh` a 65-byte P-256 point and `auth` 16 bytes, both base64url."""
    from openmanager.notify.channels.webpush import PushSubscription

    service = notifications.service()
    if set(body) == {"subscription"}:
        body = body["subscription"]
    subscription = PushSubscription.parse(body, service.outbound.policy)  # raises ValidationError (400)
    sub_id = new_id()
    await service.store.add_push_subscription(sub_id, _user(request), subscription.to_json(), service.clock())
    return {"id": sub_id, "endpoint": subscription.endpoint}


@router.get("/push/subscriptions")
async def list_push_subscriptions(request: Request, notifications: NotificationsDep) -> dict[str, Any]:
    subs = await notifications.service().store.push_subscriptions(_user(request))
    return {"subscriptions": [{"id": s["id"], "endpoint": s["subscription"]["endpoint"],
                               "created_at": s["created_at"]} for s in subs]}


@router.delete("/push/subscriptions/{sub_id}", status_code=204, response_class=Response)
async def remove_push_subscription(request: Request, sub_id: str, notifications: NotificationsDep) -> Response:
    if not await notifications.service().store.remove_push_subscription(_user(request), sub_id):
        raise NotFoundError(f"no push subscription {sub_id!r}")
    return Response(status_code=204)


@router.get("/jobs", tags=["jobs"])
async def list_jobs(request: Request, notifications: NotificationsDep) -> dict[str, Any]:
    """Every scheduled job (roll-ups, retention, digests, maintenance windows) with its trigger and next
    run time (epoch ms, null when paused)."""
    return {"jobs": notifications.jobs()}

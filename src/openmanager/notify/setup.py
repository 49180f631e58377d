"""Building the notification channels from the settings (the hub's wiring for `notify/`)."""

from __future__ import annotations

import logging

from openmanager.config import Settings
from openmanager.notify.message import Channel
from openmanager.notify.vapid import generate_vapid_keys, public_key_from_private
from openmanager.store.notifications import NotificationStore

log = logging.getLogger(__name__)

VAPID_KEY = "vapid_private_pem"


async def vapid_keys(store: NotificationStore) -> tuple[str, str]:
    """The hub's VAPID key pair (private PEM, public base64url), generated once and kept in the store:
    browsers bind each push subscription to the public key, so it must not change."""
    pem = await store.secret(VAPID_KEY)
    if pem is None:
        pem = await store.set_secret_once(VAPID_KEY, generate_vapid_keys().private_pem)
    return pem, public_key_from_private(pem)


async def build_channels(settings: Settings, store: NotificationStore) -> tuple[dict[str, Channel], str]:
    """The delivery channels this hub can use, and the VAPID public key. Email is on only with an SMTP
    host; a channel that cannot be built is logged and left out (deliveries on it fail with a reason)."""
    from openmanager.notify.channels.webhook import WebhookChannel

    channels: dict[str, Channel] = {"webhook": WebhookChannel()}
    pem, public_key = await vapid_keys(store)
    try:
        from openmanager.notify.channels.webpush import WebPushChannel

        channels["webpush"] = WebPushChannel(pem, settings.vapid_subject)
    except Exception:
        log.exception("the Web Push channel could not be set up; it is off")
    if settings.smtp_host:
        from openmanager.notify.channels.email import EmailChannel

        channels["email"] = EmailChannel(settings.smtp_settings())
    return channels, public_key

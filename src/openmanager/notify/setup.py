"""Building the notification channels from the settings (the hub's wiring for `notify/`)."""

from __future__ import annotations

import logging

from openmanager.config import Settings
from openmanager.core.netguard import OutboundPolicy
from openmanager.notify.message import Channel
from openmanager.notify.outbound import OutboundGuard
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


def outbound_guard(settings: Settings) -> OutboundGuard:
    """The guard every HTTP channel sends through, allowing the `outbound_allow` blocks (already
    validated by `Settings.validate`)."""
    return OutboundGuard(OutboundPolicy.from_strings(settings.outbound_allow))


async def build_channels(settings: Settings, store: NotificationStore,
                         guard: OutboundGuard | None = None) -> tuple[dict[str, Channel], str]:
    """The delivery channels this hub can use, and the VAPID public key. Email is on only with an SMTP
    host; a channel that cannot be built is logged and left out (deliveries on it fail with a reason).
    The HTTP channels (webhook, Web Push, Apprise) send through `guard` (default: `outbound_guard(settings)`);
    email goes to the operator's own SMTP host and is not guarded."""
    from openmanager.notify.channels.webhook import WebhookChannel

    guard = guard or outbound_guard(settings)
    channels: dict[str, Channel] = {"webhook": WebhookChannel(guard)}
    pem, public_key = await vapid_keys(store)
    try:
        from openmanager.notify.channels.webpush import WebPushChannel

        channels["webpush"] = WebPushChannel(pem, settings.vapid_subject, guard=guard)
    except Exception:
        log.exception("the Web Push channel could not be set up; it is off")
    try:
        from openmanager.notify.channels.apprise import AppriseChannel

        channels["apprise"] = AppriseChannel(guard)
    except Exception:
        log.exception("the Apprise channel could not be set up; it is off")
    if settings.smtp_host:
        from openmanager.notify.channels.email import EmailChannel

        channels["email"] = EmailChannel(settings.smtp_settings())
    return channels, public_key

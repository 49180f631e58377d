"""The Python client of the hub: subscriptions that survive disconnects.

    async with HubClient("http://127.0.0.1:8000", token=token) as client:
        sub = await client.subscribe("logs", filter={"level": "WARN"}, on_event=print)
        ...

`HubClient` keeps one WebSocket connection, reconnects with exponential backoff and full jitter, and
resumes every subscription from the last cursor it delivered, so events arrive once and in order.
`MetricsStream` and `LogStream` are conveniences on top of it; `SmartNotifier` manages alert rules over
REST and delivers alert transitions over the same machinery. docs/protocol.md ("Python client")
describes the contract.
"""

from openmanager.client._backoff import backoff_delay
from openmanager.client._errors import AuthError, ClientClosedError, ClientError, ConnectError, HubError
from openmanager.client._hub import HubClient, Subscription, ws_url
from openmanager.client._notifier import AlertFeed, SmartNotifier, http_url
from openmanager.client._streams import LogRecord, LogStream, MetricsStream, MetricsView, ServerUpdate
from openmanager.client._types import ClientStats, ConnectionState, Event, Reset, Snapshot, StateName

__all__ = [
    "AlertFeed",
    "AuthError",
    "ClientClosedError",
    "ClientError",
    "ClientStats",
    "ConnectError",
    "ConnectionState",
    "Event",
    "HubClient",
    "HubError",
    "LogRecord",
    "LogStream",
    "MetricsStream",
    "MetricsView",
    "Reset",
    "ServerUpdate",
    "SmartNotifier",
    "Snapshot",
    "StateName",
    "Subscription",
    "backoff_delay",
    "http_url",
    "ws_url",
]

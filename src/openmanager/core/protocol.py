"""The protocol vocabulary shared by the hub's gateways, the Python client and the agent (pure).

One place for the names both ends of a connection must agree on: the WebSocket close codes (the
standard ones the hub sends or reports, and its own 4xxx codes), the `/ws` subprotocols, and the kinds
of topics (which ones get a snapshot, which are state and which are ordered). The wire contract itself
is docs/protocol.md; this module only names its values.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ORDERED_TOPICS",
    "SNAPSHOT_TOPICS",
    "STATE_TOPICS",
    "SUBPROTOCOLS",
    "SUBPROTOCOL_JSON",
    "SUBPROTOCOL_MSGPACK",
    "TOPICS",
    "CloseCode",
]


class CloseCode(IntEnum):
    """Every WebSocket close code the hub sends, or records for a session, or that a client must tell
    apart. Members are ints: they go on the wire, into sets and dict keys as plain numbers."""

    NORMAL = 1000
    """The peer is done (the client's `close()`, the agent stopping)."""
    GOING_AWAY = 1001
    """The hub is going away (sent by the server library)."""
    CONNECTION_LOST = 1006
    """Never sent: recorded for a session whose peer vanished without a close frame."""
    MESSAGE_TOO_BIG = 1009
    """A frame over the server's size limit (sent by the server library)."""
    INTERNAL_ERROR = 1011
    """A heartbeat timeout, or the hub cannot check a credential or record progress now; retry."""
    SERVICE_RESTART = 1012
    """The hub is restarting or shutting down: every client stream is closed with it; clients retry quickly."""
    TRY_AGAIN_LATER = 1013
    """A connection limit, or a hub still starting: retry later."""
    SLOW_CONSUMER = 4008
    """An ordered topic's queue overflowed for a client that is behind; it resumes from its cursor."""
    INVALID_MESSAGE = 4400
    """Agent ingest: not JSON, wrong shape, hello missing or late, unsupported protocol version."""
    UNAUTHORIZED = 4401
    """No valid token, or its credential was revoked: never retried."""
    FORBIDDEN = 4403
    """`/ws`: an Origin that is not allowed; agent ingest: the hello names another agent than the token."""
    REPLACED = 4409
    """Agent ingest: a newer connection of the same agent took over."""
    TOO_LARGE = 4413
    """Agent ingest: a batch with more items than `max_batch_items`."""


SUBPROTOCOL_JSON = "openmanager.v1.json"
SUBPROTOCOL_MSGPACK = "openmanager.v1.msgpack"
SUBPROTOCOLS: tuple[str, ...] = (SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK)
"""The `/ws` subprotocols the hub speaks; the client's order of preference picks one."""

TOPICS: tuple[str, ...] = ("metrics", "fleet", "logs", "alerts", "notifications", "system")
"""Every topic of the protocol."""
STATE_TOPICS = frozenset({"metrics", "fleet", "system"})
"""State topics: conflated for a client that is behind (the latest value per subscription, not a backlog)."""
ORDERED_TOPICS = frozenset(TOPICS) - STATE_TOPICS
"""Ordered topics: queued to the session's limit, then the connection closes with `SLOW_CONSUMER`."""
SNAPSHOT_TOPICS = frozenset({"metrics", "fleet", "alerts", "system"})
"""Topics whose subscription starts with a snapshot of the current state (when it does not resume)."""

"""What the stream endpoints (`/ws`, `/sse`, `/socket.io/`) share: the services they receive.

The composition root puts two objects on the application: the `Streams` service
(`pipeline.subscriptions`: subscribe, resume, snapshot, the session registry) and this `StreamGate`
(who may open a stream: the authenticator, the connection caps, the allowed origins). The endpoints
take them as dependencies (`/ws` and `/socket.io/` from `StreamFront`); none sees the hub. The Origin
rule is `gateway.auth.origin_allowed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from openmanager.gateway.deps import app_service
from openmanager.pipeline.subscriptions import Streams

if TYPE_CHECKING:
    from openmanager.services.auth import Authenticator
    from openmanager.services.connections import ConnectionLimits

__all__ = ["StreamGate", "gate_of", "streams_of"]


@dataclass(frozen=True, slots=True)
class StreamGate:
    """Admission to a stream: `auth` authenticates the connection and binds its session to the credential
    (revoking it closes the session); `limits` caps connections per address, user and in all;
    `allowed_origins` are the foreign browser origins `/ws` accepts besides its own."""

    auth: Authenticator
    limits: ConnectionLimits
    allowed_origins: frozenset[str] = frozenset()


streams_of = app_service("streams", Streams)
"""The `Streams` service the root put on the application (a FastAPI dependency)."""
gate_of = app_service("stream_gate", StreamGate)
"""The `StreamGate` the root put on the application (a FastAPI dependency)."""

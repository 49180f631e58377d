"""The agent ingest protocol, version 1: constants and pure helpers shared by the agent and the hub.

No I/O here. The wire format is documented in docs/protocol.md ("Agent ingest"):

    agent → hub  {"type": "hello", "protocol": 1, "agent": {...server info...}, "first_seq": F, "last_seq": L}
    hub → agent  {"type": "welcome", "protocol": 1, "server": "<id>", "acked": A, "max_batch_items": N,
                  "max_frame_bytes": B, "server_time": <ms>}
    agent → hub  {"type": "batch", "seq": S, "samples": [{"seq", "ts", "values"}],
                  "logs": [{"seq", "ts", "level", ...}]}
    hub → agent  {"type": "ack", "seq": S}             (+ "duplicate": true when S <= A: not applied again)
    hub → agent  {"type": "error", "code": "...", "message": "..."}, then a close with one of the codes below
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

from openmanager.core.protocol import CloseCode

PROTOCOL_VERSION = 1
INGEST_PATH = "/api/v1/agents/ingest"

# Close codes: `core.protocol.CloseCode` (the hub sends an `error` message with the same meaning just before):
# INVALID_MESSAGE 4400 (not JSON, wrong shape, hello missing, unsupported protocol), UNAUTHORIZED 4401 (unknown
# or revoked agent token), FORBIDDEN 4403 (name_mismatch: the hello names another agent than the token's),
# REPLACED 4409 (a newer connection of the same agent took over), TOO_LARGE 4413 (batch_too_large: more items
# than max_batch_items). A frame over max_frame_bytes is closed by the server's frame limit with 1009.

FATAL_CLOSE_CODES = frozenset({CloseCode.UNAUTHORIZED, CloseCode.FORBIDDEN})  # an agent must not retry these

MAX_BATCH_ITEMS = 1000  # samples + log records per batch the hub accepts
MAX_MESSAGE_CHARS = 8192  # the pipeline cuts longer log messages; the agent cuts them before sending


def ingest_url(hub: str) -> str:
    """The ingest WebSocket URL for a hub given as `http(s)://host:port[/prefix]` or `ws(s)://...`.
    A URL whose path already ends with the ingest path is kept. Raises ValueError for anything else."""
    parts = urlsplit(hub.strip())
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s):// or ws(s):// URL: {hub!r}")
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def batch_frame(seq: int, samples: Sequence[bytes], logs: Sequence[bytes]) -> bytes:
    """A `batch` message from items that are already JSON-encoded (each item is encoded once, when it is
    buffered, and spliced here)."""
    return b"".join(
        (
            b'{"type":"batch","seq":',
            str(int(seq)).encode(),
            b',"samples":[',
            b",".join(samples),
            b'],"logs":[',
            b",".join(logs),
            b"]}",
        )
    )


BATCH_OVERHEAD_BYTES = len(batch_frame(2**63 - 1, [], []))


def item_with_seq(seq: int, body: bytes) -> bytes:
    """A buffered item's JSON object with its buffer seq as the first key (`{"seq":S,...}`), so the hub can
    tell items it has applied or stored already whatever batch they come in. A body that is not a
    non-empty JSON object is returned as it is."""
    if len(body) < 3 or body[:1] != b"{" or body[-1:] != b"}":
        return body
    return b'{"seq":' + str(int(seq)).encode() + b"," + body[1:]


ITEM_SEQ_BYTES = len(b'"seq":,') + len(str(2**63 - 1))
"""The most `item_with_seq` adds to an item."""


def batch_size(n_samples: int, sample_bytes: int, n_logs: int, log_bytes: int) -> int:
    """An upper bound of the length of `batch_frame` for items of these counts and total lengths (exact but
    for the digits of `seq`, counted at their maximum)."""
    return BATCH_OVERHEAD_BYTES + sample_bytes + max(0, n_samples - 1) + log_bytes + max(0, n_logs - 1)

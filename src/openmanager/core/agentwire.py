"""The agent ingest protocol, version 1: constants, the agent's encoding and the hub's parsing of what
agents send, shared by the agent (`agent.runner`) and the hub (`gateway.ingest`, `sources.agent`).

Pure: no I/O. The wire format is documented in docs/protocol.md ("Agent ingest"):

    agent → hub  {"type": "hello", "protocol": 1, "agent": {...server info...}, "first_seq": F, "last_seq": L}
    hub → agent  {"type": "welcome", "protocol": 1, "server": "<id>", "acked": A, "max_batch_items": N,
                  "max_frame_bytes": B, "server_time": <ms>}
    agent → hub  {"type": "batch", "seq": S, "samples": [{"seq", "ts", "values"}],
                  "logs": [{"seq", "ts", "level", ...}]}
    hub → agent  {"type": "ack", "seq": S}             (+ "duplicate": true when S <= A: not applied again)
    hub → agent  {"type": "error", "code": "...", "message": "..."}, then a close with one of the codes below
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from openmanager.core.errors import OpenManagerError
from openmanager.core.logorigin import OriginLogRecord
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
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
MAX_FUTURE_MS = 60_000  # samples further ahead of the hub's clock are skipped (a skewed agent clock)
MAX_TAGS = 32
_SHORT = 64
_LONG = 255


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


# -- the hub's side: parsing what an agent sends ------------------------------------------------------


class IngestError(OpenManagerError):
    """A protocol violation: the hub answers `error` with `code` and closes with `close_code`."""

    def __init__(self, message: str, *, code: str = "invalid_message",
                 close_code: int = CloseCode.INVALID_MESSAGE) -> None:
        super().__init__(message, code=code)
        self.close_code = close_code


def _text(raw: Mapping[str, Any], key: str, default: str, limit: int) -> str:
    value = raw.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise IngestError(f"agent.{key} must be a non-empty string of at most {limit} characters")
    return value.strip()


def _int(value: Any, what: str, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise IngestError(f"{what} must be an integer >= {minimum}")
    return value


def parse_hello(msg: Mapping[str, Any], agent: str) -> tuple[ServerInfo, str, int, int]:
    """The server the agent named `agent` (its token's) reports as, its buffer id, first and last seq.
    Raises IngestError."""
    if msg.get("type") != "hello":
        raise IngestError("the first message must be a hello", code="hello_expected")
    if msg.get("protocol") != PROTOCOL_VERSION:
        raise IngestError(
            f"unsupported protocol {msg.get('protocol')!r} (this hub speaks {PROTOCOL_VERSION})",
            code="unsupported_protocol",
        )
    raw = msg.get("agent")
    if not isinstance(raw, dict):
        raise IngestError("hello.agent must be an object")
    name = raw.get("name")
    if name is not None and name != agent:
        raise IngestError(f"this token belongs to agent {agent!r}, not {name!r}", code="name_mismatch",
                          close_code=CloseCode.FORBIDDEN)
    tags = raw.get("tags") or {}
    if (
        not isinstance(tags, dict)
        or len(tags) > MAX_TAGS
        or not all(
            isinstance(k, str) and isinstance(v, str) and 0 < len(k) <= _SHORT and len(v) <= _LONG
            for k, v in tags.items()
        )
    ):
        raise IngestError(f"agent.tags must map at most {MAX_TAGS} names to strings")
    info = ServerInfo(
        id=agent,
        hostname=_text(raw, "hostname", agent, _LONG),
        role=_text(raw, "role", "unknown", _SHORT),
        environment=_text(raw, "environment", "unknown", _SHORT),
        location=_text(raw, "location", "unknown", _LONG),
        source="agent",
        tags=dict(tags),
    )
    buffer_id = msg.get("buffer")
    if not isinstance(buffer_id, str) or not 0 < len(buffer_id) <= _SHORT:
        raise IngestError("hello.buffer must be the agent buffer's id")
    first_seq = _int(msg.get("first_seq", 0), "hello.first_seq")
    last_seq = _int(msg.get("last_seq", 0), "hello.last_seq")
    if first_seq > last_seq:
        raise IngestError("hello.first_seq must not be above hello.last_seq")
    return info, buffer_id, first_seq, last_seq


def parse_batch(msg: Mapping[str, Any]) -> tuple[int, list[Any], list[Any]]:
    """seq, raw samples, raw log records of a batch message. Raises IngestError."""
    if msg.get("type") != "batch":
        raise IngestError(f"unknown message type {msg.get('type')!r} (expected batch)", code="unknown_type")
    seq = _int(msg.get("seq"), "batch.seq", minimum=1)
    samples = msg.get("samples", [])
    logs = msg.get("logs", [])
    if not isinstance(samples, list) or not isinstance(logs, list):
        raise IngestError("batch.samples and batch.logs must be lists")
    if len(samples) + len(logs) > MAX_BATCH_ITEMS:
        raise IngestError(
            f"a batch holds at most {MAX_BATCH_ITEMS} items, got {len(samples) + len(logs)}",
            code="batch_too_large",
            close_code=CloseCode.TOO_LARGE,
        )
    return seq, samples, logs


def parse_sample(raw: Any, server: str, latest_ms: int) -> Sample | None:
    """One item of `batch.samples` as a sample of `server` (whatever it says), or None when it is not
    `{"ts": <int ms, at most latest_ms>, "values": {...}, "series"?: {...}}`. Not cleaned: the pipeline
    cleans each sample once (labelled series by the state's series policy)."""
    if not isinstance(raw, dict):
        return None
    ts, values, series = raw.get("ts"), raw.get("values"), raw.get("series", {})
    if not isinstance(ts, int) or isinstance(ts, bool) or ts > latest_ms or not isinstance(values, dict):
        return None
    return Sample(server, ts, values, series if isinstance(series, dict) else {})


def item_seen(raw: Any, after: int) -> bool:
    """Whether a batch item carries its buffer seq and it is at most `after` (applied already)."""
    seq = raw.get("seq") if isinstance(raw, dict) else None
    return isinstance(seq, int) and not isinstance(seq, bool) and 0 < seq <= after


def parse_record(raw: Any, server: str, origin: int = 0) -> LogRecord | None:
    """One item of `batch.logs` as a log record of `server`, or None when its shape or level is invalid.
    With an `origin` (`core.logorigin.log_origin`) and an item `seq`, an `OriginLogRecord` the store keeps
    once."""
    if not isinstance(raw, dict):
        return None
    ts, level, message = raw.get("ts"), raw.get("level"), raw.get("message")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts <= 0 or not isinstance(message, str):
        return None
    try:
        parsed = LogLevel.parse(level) if isinstance(level, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        return None
    service = raw.get("service")
    fields = raw.get("fields")
    seq = raw.get("seq")
    args = (ts, server, parsed, service if isinstance(service, str) and service else "agent", message,
            dict(fields) if isinstance(fields, dict) else {})
    if origin and isinstance(seq, int) and not isinstance(seq, bool) and seq > 0:  # stored once (core.logorigin)
        return OriginLogRecord(*args, origin=origin, seq=seq)
    return LogRecord(*args)

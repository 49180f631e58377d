"""The agent: runs on a monitored host and streams its metrics and log files to a hub.

- `agent.runner`: `Agent` and `AgentConfig` (collect → disk buffer → WebSocket to the hub, reconnecting).
- `agent.buffer`: `DiskBuffer`, the bounded on-disk queue that holds what the hub has not acknowledged.
The ingest protocol's constants and pure helpers, shared with the hub, are in `core.agentwire`.

Nothing is imported here.
"""

"""The agent: runs on a monitored host and streams its metrics and log files to a hub.

- `agent.runner`: `Agent` and `AgentConfig` (collect → disk buffer → WebSocket to the hub, reconnecting).
- `agent.buffer`: `DiskBuffer`, the bounded on-disk queue that holds what the hub has not acknowledged.
- `agent.protocol`: the ingest protocol's constants and pure helpers, shared with the hub's endpoint.

Nothing is imported here, so the hub can use `agent.protocol` without loading the agent's dependencies.
"""

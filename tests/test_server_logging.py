"""Per-connection WebSocket lines are not logged below DEBUG (`server.QuietConnections`)."""

from __future__ import annotations

import logging

from openmanager.server import QuietConnections


def _record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("uvicorn.error", level, __file__, 1, msg, args or None, None)


def test_per_connection_lines_are_dropped_and_the_rest_kept() -> None:
    quiet = QuietConnections()
    for msg, args in (('%s - "WebSocket %s" [accepted]', ("127.0.0.1:5", "/ws")), ("connection open", ()),
                      ("connection closed", ())):
        assert not quiet.filter(_record(msg, *args))
    assert quiet.filter(_record('%s - "WebSocket %s" 403', "127.0.0.1:5", "/ws"))  # a refusal is kept
    assert quiet.filter(_record("Started server process [%d]", 1))
    assert quiet.filter(_record("connection open", level=logging.WARNING))  # only the INFO lines go

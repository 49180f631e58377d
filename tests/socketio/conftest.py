from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="package")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the Socket.IO tests: a fast tick (0.1 s, so that twenty cuts take seconds), a fast
    Engine.IO heartbeat (0.3 s, 0.4 s timeout) and small caps (2 subscriptions per connection, 3
    connections per user) for the tests of the limits."""
    proc = HubProcess(Path(tmp_path_factory.mktemp("hub")), "--servers", "4", "--seed", "7", "--tick", "0.1",
                      "--no-local", "--subscriptions-per-connection", "2", "--max-connections-per-user", "3",
                      "--socketio-ping-interval-ms", "300", "--socketio-ping-timeout-ms", "400")
    proc.start()
    yield proc
    proc.stop()

"""Socket.IO recovery across hub processes: two real hubs on Redis (and a PostgreSQL store of their own),
the real `socket.io-client`; a client cut from one process resumes on the other from its offset."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubproc import HubProcess
from tests.services import delete_prefix, redis_url, throwaway_database
from tests.socketio.test_socketio_client import _node, run


@pytest.fixture
def two_hubs(tmp_path: Path) -> Iterator[tuple[HubProcess, HubProcess]]:
    _node()
    url = redis_url()
    prefix = f"omtest-{uuid.uuid4().hex[:10]}"
    with throwaway_database("sio") as db:
        hubs = [HubProcess(tmp_path / name, "--db", db, "--broker", url, "--broker-prefix", prefix, "--servers", "4",
                           "--seed", "3", "--tick", "0.1", "--no-local", "--node-id", name) for name in ("a", "b")]
        try:
            for hub in hubs:  # one after the other: the first creates the schema
                hub.start()
            yield hubs[0], hubs[1]
        finally:
            try:
                for hub in hubs:
                    if hub.proc is not None and hub.proc.poll() is None:
                        hub.stop()
            finally:
                delete_prefix(url, prefix)


def test_a_client_cut_from_one_process_resumes_on_another(two_hubs: tuple[HubProcess, HubProcess]) -> None:
    a, b = two_hubs
    out = run(a, "cross", b.base)
    assert out["recovered"] is True  # the pid came back: the offset was accepted
    assert out["ack"]["recovered"] is True
    got = out["before"] + out["after"]
    observed = out["observed"]
    start, end = observed.index(got[0]), observed.index(got[-1])
    assert got == observed[start:end + 1]  # every event once, in order, across the two processes
    assert len(out["after"]) >= 12

"""A real hub (uvicorn, real sockets) inside the test's event loop, so tests can also look at its state."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from openmanager.config import Settings
from openmanager.core.agentwire import INGEST_PATH, PROTOCOL_VERSION
from openmanager.hub import Hub
from openmanager.root import Root
from openmanager.server import uvicorn_config
from openmanager.sources.agent import AgentSource
from openmanager.store.agents import AgentStore
from tests.integration.hubproc import free_port

ADMIN = "in-process-admin-token"


class LiveHub:
    def __init__(self, data_dir: Path, port: int | None = None, **settings: Any) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = settings
        self.hub: Hub | None = None
        self.ingest: AgentSource | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{INGEST_PATH}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> LiveHub:
        settings = Settings.load({"data_dir": str(self.data_dir), "port": self.port, "simulator": False,
                                  "local": False, "tick": 0.1, "log_level": "warning", **self.extra}, env={})
        root = Root.build(settings, admin_token=ADMIN)
        self.hub = root.hub
        self.ingest = root.services.ingest
        self._server = uvicorn.Server(uvicorn_config(settings, root))
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # leave pytest's
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(15):
            while not self._server.started:
                if self._task.done():
                    self._task.result()
                await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None

    def hub_app_state_ingest(self) -> AgentSource:
        """The agents' source the ingest endpoint drives (its counters, its log writer)."""
        assert self.ingest is not None
        return self.ingest

    def server_connections(self) -> list[Any]:
        """uvicorn's protocol objects of the open connections."""
        assert self._server is not None
        return list(self._server.server_state.connections)

    @property
    def agents(self) -> AgentStore:
        assert self.hub is not None and self.hub.store is not None
        return AgentStore(self.hub.store)

    async def connect(self, token: str | None, **kw: Any) -> ClientConnection:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return await connect(self.url, additional_headers=headers, open_timeout=5, **kw)


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[LiveHub]:
    hub = await LiveHub(tmp_path / "data").start()
    try:
        yield hub
    finally:
        await hub.stop()


def hello(buffer: str = "00000000000000aa", first: int = 0, last: int = 0, **agent: Any) -> bytes:
    info: dict[str, Any] = {"hostname": "box.example", "role": "web", "tags": {"env": "test"}}
    info.update(agent)
    return orjson.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "agent": info, "buffer": buffer,
                         "first_seq": first, "last_seq": last})


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        msg: dict[str, Any] = orjson.loads(await ws.recv())
    return msg

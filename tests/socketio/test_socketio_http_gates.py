"""Socket.IO's long-polling requests are HTTP requests like any other, against a real hub: each one is
written to the access log, a body over Engine.IO's `maxPayload` is refused by the body limit before it
is read, and over the connection cap the capacity gate answers 503 (only health checks and admins get
in). Its WebSockets keep their own admission (the tests of test_socketio_wire.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.hubproc import HubProcess


def wait_for_log(hub: HubProcess, text: str, timeout: float = 10.0) -> str:
    """The hub's output once it contains `text` (the access log is written as each request ends)."""
    deadline = time.monotonic() + timeout
    while text not in (log := hub.log()):
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{log[-3000:]}"
        time.sleep(0.05)
    return log


def test_polling_requests_are_access_logged_and_body_limited(hub: HubProcess) -> None:
    with httpx.Client(base_url=hub.base, timeout=5) as http:
        opened = http.get("/socket.io/?EIO=4&transport=polling")
        assert opened.status_code == 200 and opened.text[0] == "0"
        sid = orjson.loads(opened.text[1:])["sid"]
        wait_for_log(hub, '"GET /socket.io/" 200 ')
        # over max_frame_bytes (65536, the announced maxPayload): the body limit's 413, in our error shape,
        # answered on the declared length before anything reads the body
        too_big = http.post(f"/socket.io/?EIO=4&transport=polling&sid={sid}", content="4" + "x" * 70_000)
        assert too_big.status_code == 413, too_big.text
        assert too_big.json()["error"]["code"] == "payload_too_large"


async def test_over_the_connection_cap_polling_is_refused_503(tmp_path: Path) -> None:
    cap = 6
    hub = HubProcess(tmp_path, "--servers", "2", "--no-local", "--tick", "0.25", "--max-connections", str(cap))
    await asyncio.to_thread(hub.start)
    held: list[ClientConnection] = []
    try:
        async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
            assert (await http.get("/socket.io/?EIO=4&transport=polling")).status_code == 200  # under the cap
        for _ in range(cap):  # admins' streams are admitted at the cap and keep it full
            ws = await connect(f"{hub.ws_url}?token={hub.token}", open_timeout=10)
            assert orjson.loads(await ws.recv())["type"] == "welcome"
            held.append(ws)
        async with httpx.AsyncClient(base_url=hub.base, timeout=10) as http:
            refused = await http.get("/socket.io/?EIO=4&transport=polling")
            assert refused.status_code == 503 and refused.headers["retry-after"].isdigit(), refused.text
            assert refused.json()["error"]["code"] == "unavailable"
            assert (await http.get("/healthz")).status_code == 200
        await asyncio.to_thread(wait_for_log, hub, '"GET /socket.io/" 503 ')
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await ws.close()
        await asyncio.to_thread(hub.stop)

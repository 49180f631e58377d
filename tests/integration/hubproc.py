"""A real hub in a subprocess on a free port, and a small protocol-aware WebSocket client."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.services import free_port

TOKEN = "integration-test-token"


class HubProcess:
    """`openmanager serve` as a child process. `start()` returns once /readyz answers 200."""

    def __init__(self, data_dir: Path, *args: str, port: int | None = None, token: str = TOKEN,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.data_dir = data_dir
        self.preexec_fn = preexec_fn  # run in the child before it starts (e.g. resource limits)
        self.args = args
        self.port = port or free_port()
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"hub-{self.port}.log"
        self.scheme = "http"  # "https" for a hub started with --tls-cert/--tls-key
        self.verify: ssl.SSLContext | bool = True  # what httpx trusts (a test CA's context, for https)

    @property
    def base(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 30.0) -> HubProcess:
        env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN=self.token)
        env.setdefault("OPENMANAGER_NOTIFY_GROUP_WAIT", "0s")  # one message per transition unless a test groups
        cmd = [sys.executable, "-m", "openmanager", "serve", "--port", str(self.port),
               "--data-dir", str(self.data_dir), *self.args]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/readyz", timeout=1, verify=self.verify).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        # Not ready: end the process started here (callers that only stop in a `finally` after a successful
        # start would otherwise leave it running).
        self.proc.kill()
        self.proc.wait()
        raise TimeoutError(f"hub not ready in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        """Graceful stop (SIGINT, like Ctrl-C); kills only if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = kw.pop("headers", {"Authorization": f"Bearer {self.token}"})
        return httpx.get(self.base + path, headers=headers, timeout=10, verify=self.verify, **kw)


class Client:
    """A WebSocket client that speaks the protocol and records what it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(cls, hub: HubProcess, *, token: str | None = None, **kw: Any) -> Client:
        url = f"{hub.ws_url}?token={token or hub.token}"
        kw.setdefault("open_timeout", 10)
        ws = await connect(url, subprotocols=["openmanager.v1.json"], **kw)  # type: ignore[list-item]
        client = cls(ws)
        client.welcome = await client.recv()
        assert client.welcome["type"] == "welcome"
        return client

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        if isinstance(message, dict):
            await self.ws.send(orjson.dumps(message).decode())
        else:
            await self.ws.send(message)

    async def recv_raw(self, timeout: float = 5.0) -> str | bytes:
        return await asyncio.wait_for(self.ws.recv(), timeout)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        msg: dict[str, Any] = orjson.loads(await self.recv_raw(timeout))
        return msg

    async def recv_until(self, pred: Any, timeout: float = 5.0) -> dict[str, Any]:
        """The first message satisfying `pred`, skipping others; TimeoutError if none comes."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no matching message")
            msg = await self.recv(left)
            if pred(msg):
                return msg

    async def subscribe(self, topic: str, filter: dict[str, Any] | None = None, *, rid: str = "s",
                        timeout: float = 5.0, **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": "subscribe", "id": rid, "topic": topic, **extra}
        if filter is not None:
            msg["filter"] = filter
        await self.send(msg)
        return await self.recv_until(lambda m: m.get("id") == rid and m["type"] in ("subscribed", "error"), timeout)

    async def events(self, sub: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < n:
            left = deadline - asyncio.get_running_loop().time()
            msg = await self.recv_until(lambda m: m["type"] == "event" and m["sub"] == sub, max(left, 0.001))
            out.append(msg)
        return out

    async def close(self) -> None:
        try:
            await self.ws.close()
        finally:  # the socket is released even when the closing handshake is cut short (a timeout, a dead hub)
            self.ws.transport.abort()


def by_cursor(events: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["cursor"]: e for e in events}

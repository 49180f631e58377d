"""Drive a headless Chromium over the DevTools protocol (CDP): just enough for the browser tests.

No Playwright, no npm: `Chromium` runs the browser as a child process with its own throw-away profile
and ends it by PID; `Page` talks CDP to one tab over a `websockets` client (navigate, evaluate
JavaScript with promises awaited, poll a condition with a deadline) and records the page's uncaught
exceptions and console errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


class CDPError(Exception):
    """A CDP command failed, or the browser went away."""


class JSError(Exception):
    """JavaScript evaluated in the page threw; the message is the exception's description."""


class Chromium:
    """Headless Chromium with a profile in `profile_dir`. `start()` returns once DevTools answers;
    `stop()` ends the browser by its PID (then its process group, which only it belongs to)."""

    def __init__(self, executable: str, profile_dir: Path) -> None:
        self.executable = executable
        self.profile_dir = profile_dir
        self.log_path = profile_dir.parent / f"{profile_dir.name}-chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Chromium:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        # Port 0: Chromium picks a free port and writes it to DevToolsActivePort, so no race with
        # another process grabbing a port we chose.
        cmd = [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile_dir}",
               "--remote-debugging-port=0", "about:blank"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CDPError(f"chromium exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError, ValueError, IndexError, httpx.HTTPError):
                self.port = int(port_file.read_text().split()[0])
                if httpx.get(self.http + "/json/version", timeout=2).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise CDPError(f"chromium's DevTools did not answer within {timeout}s:\n{self.log()}")

    def targets(self) -> list[dict[str, Any]]:
        """The browser's targets as `/json` lists them (each page with its `webSocketDebuggerUrl`)."""
        result: list[dict[str, Any]] = httpx.get(self.http + "/json", timeout=5).json()
        return result

    def new_page(self) -> dict[str, Any]:
        """Open a new tab on about:blank; returns its `/json` entry."""
        r = httpx.put(self.http + "/json/new?about:blank", timeout=5)
        r.raise_for_status()
        target: dict[str, Any] = r.json()
        return target

    def close_page(self, target_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{self.http}/json/close/{target_id}", timeout=5)

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        # Renderer and utility processes are in the session `start_new_session` made for the browser
        # (its id is the browser's PID); end any that outlived it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


class Page:
    """One tab over CDP. Use `await Page.connect(target["webSocketDebuggerUrl"])`, then `close()`."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.exceptions: list[str] = []
        self.console_errors: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._loaded = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="cdp-reader")

    @classmethod
    async def connect(cls, ws_url: str) -> Page:
        ws = await connect(ws_url, max_size=None, open_timeout=10, ping_interval=None)
        page = cls(ws)
        for domain in ("Page", "Runtime", "Log"):
            await page.send(f"{domain}.enable")
        return page

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Run one CDP command; its `result`. Raises CDPError when the command fails."""
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        try:
            await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(msg_id, None)

    async def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Open `url` (following redirects) and wait for its load event."""
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), timeout)

    async def evaluate(self, expression: str, timeout: float = 15.0) -> Any:
        """The value of a JavaScript expression (a promise is awaited), as JSON. Raises JSError."""
        result = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True},
            timeout + 1,
        )
        details = result.get("exceptionDetails")
        if details:
            raise JSError(_describe(details))
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll `expression` until it is truthy and return that value; TimeoutError with the last
        value when the deadline passes first."""
        deadline = asyncio.get_running_loop().time() + timeout
        value: Any = None
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if asyncio.get_running_loop().time() >= deadline:
                raise TimeoutError(f"not true within {timeout}s: {expression}\nlast value: {value!r}")
            await asyncio.sleep(interval)

    async def _read(self) -> None:
        error: BaseException = CDPError("the DevTools connection closed")
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    future = self._pending.get(msg["id"])
                    if future is None or future.done():
                        continue
                    if "error" in msg:
                        future.set_exception(CDPError(f"{msg['error'].get('message')}: {msg['error']}"))
                    else:
                        future.set_result(msg.get("result", {}))
                else:
                    self._on_event(msg.get("method", ""), msg.get("params", {}))
        except ConnectionClosed as exc:
            error = CDPError(f"the DevTools connection closed: {exc}")
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(_describe(params["exceptionDetails"]))
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            args = params.get("args", [])
            self.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in args))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.console_errors.append(f"{entry.get('source')}: {entry.get('text')} ({entry.get('url', '')})")


def _describe(details: dict[str, Any]) -> str:
    exc = details.get("exception") or {}
    where = f" at {details.get('url', '')}:{details.get('lineNumber', '?')}" if details.get("url") else ""
    return f"{exc.get('description') or details.get('text', 'exception')}{where}"

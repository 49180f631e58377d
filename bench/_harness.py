"""What the benchmarks share: child processes and their JSON lines, ports, percentiles, limits.

Every benchmark drives load-generator workers (subprocesses that print JSON lines), stops every child
it started by PID, and has a hard time bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any


class HardTimeout(Exception):
    """The whole run took longer than its bound."""


def emit(obj: dict[str, Any]) -> None:
    """One JSON line to the harness (a worker's only output channel)."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def run_on_uvloop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run `main` to completion on uvloop when it is installed (as the hub runs), else on asyncio's loop."""
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def raise_nofile_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank


class LineReader:
    """A child's stdout as JSON messages, read by a thread so the harness can wait with a timeout.
    A message of kind `give_up` means the worker reached its own deadline."""

    def __init__(self, proc: subprocess.Popen[str], *, give_up: str = "timeout") -> None:
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.proc = proc
        self.give_up = give_up
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.q.put(json.loads(line))
        self.q.put(None)

    def get(self, kind: str, timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            try:
                msg = self.q.get(timeout=max(0.01, end - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"worker {self.proc.pid}: no {kind!r} in {timeout:.0f}s") from None
            if msg is None:
                raise RuntimeError(f"worker {self.proc.pid} exited ({self.proc.wait()}) before {kind!r}")
            if msg.get("kind") == kind:
                return msg
            if msg.get("kind") == self.give_up:
                raise RuntimeError(f"worker {self.proc.pid} reached its deadline before {kind!r}")


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, *, name: str = "hub",
               timeout: float = 60) -> None:
    """Wait until the server `proc` (`name` in errors) answers 200 on http://127.0.0.1:`port`/readyz.
    Raises RuntimeError if it exits first and TimeoutError after `timeout` s, both with the end of its
    log file `log`; stopping it is the caller's job."""
    import httpx

    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return
        if time.monotonic() > end:
            raise TimeoutError(f"{name} not ready in {timeout:.0f}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def stop_proc(proc: subprocess.Popen[Any], sig: int, timeout: float) -> None:
    """Signal one child by PID, wait, and kill it if it does not exit in time."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

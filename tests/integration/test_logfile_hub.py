"""`--log-file` end to end: a real hub follows a file and a line appended to it arrives on the `logs` topic."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from tests.integration.hubproc import Client, HubProcess


def _saved_offset(state: Path, log_path: Path) -> int | None:
    try:
        files = orjson.loads(state.read_bytes())["files"]
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = files.get(str(log_path))
    return entry["offset"] if entry else None


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def test_appended_line_arrives_on_the_logs_topic(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    log_path.write_text("old line, before the hub started\n")
    hub = HubProcess(tmp_path / "hub", "--no-simulator", "--no-local", "--log-file", f"{log_path}=edge-1")
    hub.start()
    try:
        # the file is followed from its end once the first poll has saved its position
        state = tmp_path / "hub" / "logfile-offsets.json"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while _saved_offset(state, log_path) != log_path.stat().st_size:
            assert loop.time() < deadline, f"log file never followed:\n{hub.log()}"
            await asyncio.sleep(0.02)

        c = await Client.open(hub)
        sub = await c.subscribe("logs", {"servers": ["edge-1"]})
        assert sub["type"] == "subscribed", sub
        _append(log_path, '{"level": "error", "msg": "payment failed", "order": 42}\n')
        _append(log_path, "Nov 26 14:05:06 edge-1 nginx[7]: upstream timed out\n")

        records: list[dict[str, Any]] = []
        while len(records) < 2:
            event = await c.recv_until(lambda m: m["type"] == "event" and m["sub"] == sub["sub"], timeout=10)
            records.extend(event["data"]["records"])
        await c.close()
    finally:
        assert hub.stop() == 0

    first, second = records
    assert (first["server"], first["level"], first["message"], first["service"]) == (
        "edge-1", "ERROR", "payment failed", "app")
    assert first["order"] == 42
    assert (second["server"], second["level"], second["service"], second["message"]) == (
        "edge-1", "INFO", "nginx", "upstream timed out")
    assert second["host"] == "edge-1" and second["pid"] == "7"
    assert all("old line" not in r["message"] for r in records)
    # the delivered position survives the stop
    assert _saved_offset(state, log_path) == log_path.stat().st_size


def test_bad_log_file_entry_stops_the_hub_with_a_config_error(tmp_path: Path) -> None:
    env = dict(os.environ, OPENMANAGER_ADMIN_TOKEN="integration-test-token")
    cmd = [sys.executable, "-m", "openmanager", "serve", "--port", "0", "--data-dir", str(tmp_path),
           "--no-simulator", "--no-local", "--log-file", f"{tmp_path / 'a.log'}="]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert b"empty server" in proc.stderr

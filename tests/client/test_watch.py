"""`openmanager watch` as a subprocess against a real hub."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from tests.integration.hubproc import HubProcess


async def _start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "openmanager", "watch", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def _lines(stream: asyncio.StreamReader, n: int, timeout: float = 20) -> list[str]:
    out = []
    for _ in range(n):
        line = await asyncio.wait_for(stream.readline(), timeout)
        assert line, "the stream ended"
        out.append(line.decode().rstrip("\n"))
    return out


async def _interrupt(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Ctrl-C, then the exit status and stderr; killed by PID if it does not exit within 10 s."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_watch_metrics_for_one_server(hub: HubProcess) -> None:
    proc = await _start("metrics", "--servers", "web-01", "--url", hub.base, "--token", hub.token)
    try:
        assert proc.stdout is not None
        lines = await _lines(proc.stdout, 4)
    finally:
        code, err = await _interrupt(proc)
    assert all("web-01" in line and "cpu" in line for line in lines), lines
    assert not any(other in line for line in lines for other in ("web-02", "api-01", "db-01"))
    assert code == 0, err
    assert "[open]" in err and "[closed] closed by the client" in err
    assert "Traceback" not in err


async def test_watch_logs_with_token_from_env_and_file(hub: HubProcess, tmp_path: Path) -> None:
    env = dict(os.environ, OPENMANAGER_TOKEN=hub.token)
    proc = await _start("logs", "--level", "DEBUG", "--url", hub.base, env=env)
    try:
        assert proc.stdout is not None
        lines = await _lines(proc.stdout, 2)
    finally:
        code, err = await _interrupt(proc)
    assert code == 0, err
    assert all(any(level in line for level in ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")) for line in lines)

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "admin_token").write_text(hub.token + "\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENMANAGER_TOKEN"}
    proc = await _start("fleet", "--url", hub.base, env=env, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        lines = await _lines(proc.stdout, 2)
    finally:
        code, err = await _interrupt(proc)
    assert code == 0, err
    assert all("8 servers" in line and "healthy" in line for line in lines), lines


async def _exit_status(*args: str) -> tuple[int, str]:
    """Run `watch` to its end (it should stop by itself); killed by PID if it does not within 20 s."""
    proc = await _start(*args)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_watch_reports_a_bad_token_and_a_bad_filter(hub: HubProcess) -> None:
    code, err = await _exit_status("metrics", "--url", hub.base, "--token", "wrong-token-123")
    assert code == 1 and "4401" in err and "Traceback" not in err

    code, err = await _exit_status("metrics", "--where", "cpu >", "--url", hub.base, "--token", hub.token)
    assert code == 2 and "invalid_expression" in err

    code, err = await _exit_status("logs", "--where", "cpu > 1", "--url", hub.base, "--token", hub.token)
    assert code == 2 and "--where does not apply to logs" in err


async def test_watch_alerts_prints_transitions(hub: HubProcess) -> None:
    import httpx

    proc = await _start("alerts", "--servers", "web-01", "--level", "warning", "--url", hub.base, "--token", hub.token)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        await asyncio.wait_for(proc.stderr.readline(), 20)  # "[open] ...": subscribed from here on
        async with httpx.AsyncClient(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"}) as http:
            r = await http.post("/api/v1/rules", json={"id": "watch-me", "name": "watched", "severity": "warning",
                                                       "condition": 'server.id == "web-01" OR server.id == "db-01"'})
            assert r.status_code == 201, r.text
        line = ""
        while "watch-me" not in line:
            (line,) = await _lines(proc.stdout, 1)
    finally:
        code, err = await _interrupt(proc)
    assert "FIRING" in line and "warning" in line and "web-01" in line and "notified" in line, line
    assert code == 0, err


async def test_watch_fleet_and_system_print_readable_lines_and_json_on_request(hub: HubProcess) -> None:
    import json

    for args, check in (
        (("fleet",), lambda line: "servers" in line and "healthy" in line and "{" not in line),
        (("system",), lambda line: "msg/s" in line and "compression x" in line and "{" not in line),
        (("fleet", "--json"), lambda line: json.loads(line)["topic"] == "fleet"
         and "healthy" in json.loads(line)["data"]),
    ):
        proc = await _start(*args, "--url", hub.base, "--token", hub.token)
        try:
            assert proc.stdout is not None
            lines = await _lines(proc.stdout, 2)
        finally:
            code, err = await _interrupt(proc)
        assert all(check(line) for line in lines), (args, lines)
        assert code == 0 and "Traceback" not in err, err

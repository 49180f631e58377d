"""`openmanager agent`: the agent on a monitored host, sending its samples and logs to a hub."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openmanager.cli._common import app
from openmanager.config import ENV_PREFIX
from openmanager.core.errors import ConfigError
from openmanager.store.files import use_private_umask


def _agent_env(name: str) -> str:
    return f"{ENV_PREFIX}AGENT_{name.upper()}"


def _agent_opt(name: str, help: str) -> Any:
    return typer.Option(f"--{name.replace('_', '-')}", envvar=_agent_env(name), show_envvar=True, help=help)


def _split(values: list[str] | None) -> list[str]:
    return [part.strip() for value in values or () for part in value.split(",") if part.strip()]


def _seconds(text: str) -> float:
    from openmanager.core.errors import RuleSyntaxError
    from openmanager.core.rules import parse_duration

    try:
        return float(text)
    except ValueError:
        pass
    try:
        return parse_duration(text) / 1000
    except RuleSyntaxError:
        raise typer.BadParameter(f"{text!r} is not a duration like 1s, 0.5s or 2m") from None


@app.command()
def agent(
    hub: Annotated[str, _agent_opt("hub", "The hub: http(s)://host:port (or its ingest ws(s):// URL).")],
    token: Annotated[str | None, _agent_opt("token", "The agent token (from `openmanager agents create`). "
                                                     "Prefer --token-file or the variable: flags show in ps.")] = None,
    token_file: Annotated[Path | None, _agent_opt("token_file", "A file holding the agent token.")] = None,
    name: Annotated[str | None, _agent_opt("name", "Expected agent name (the token's); the hub refuses a "
                                                   "mismatch. Default: whatever the token names.")] = None,
    role: Annotated[str, _agent_opt("role", "The server's role (web, database, ...).")] = "host",
    environment: Annotated[str, _agent_opt("environment", "The server's environment.")] = "unknown",
    location: Annotated[str, _agent_opt("location", "The server's location.")] = "unknown",
    tag: Annotated[list[str] | None, _agent_opt("tag", "A tag KEY=VALUE (repeatable; environment: "
                                                       "comma-separated).")] = None,
    log_file: Annotated[list[str] | None, _agent_opt("log_file", "Follow a log file like tail -F (repeatable; "
                                                                 "environment: comma-separated).")] = None,
    interval: Annotated[str, _agent_opt("interval", "Seconds between samples (1s, 0.5s, 5s; keep it under 10s "
                                                    "or the hub shows the server offline between samples).")] = "1s",
    buffer_dir: Annotated[Path, _agent_opt("buffer_dir", "Where the disk buffer and log offsets live.")] = Path(
        "./agent-data"),
    buffer_max_bytes: Annotated[int, _agent_opt("buffer_max_bytes", "Buffer bound in bytes; when full the oldest "
                                                "items are dropped (counted, logged).")] = 64 * 1024 * 1024,
    backoff_max: Annotated[str, _agent_opt("backoff_max", "Longest wait between reconnection attempts.")] = "30s",
    log_level: Annotated[str, _agent_opt("log_level", "debug, info, warning, error.")] = "info",
) -> None:
    """Watch this host for a hub: psutil metrics every interval plus log files, streamed over a WebSocket.

    What the hub has not acknowledged waits in a bounded on-disk buffer, so a hub restart or a network cut
    loses nothing: on reconnect the backlog is sent in order, then live data. Stops cleanly on
    SIGINT/SIGTERM (exit 0); exits 1 when the hub refuses the token, 2 on bad options."""
    from openmanager.agent.runner import Agent, AgentConfig
    from openmanager.sources.logfile import parse_log_file_spec

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    use_private_umask()  # the disk buffer holds what the host sends: this user's only
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            typer.echo(f"error: cannot read the token file: {exc}", err=True)
            raise typer.Exit(2) from None
    if not token:
        typer.echo("error: no token: pass --token-file, set OPENMANAGER_AGENT_TOKEN, or pass --token", err=True)
        raise typer.Exit(2)
    tags: dict[str, str] = {}
    for item in _split(tag):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            typer.echo(f"error: tag {item!r}: use KEY=VALUE", err=True)
            raise typer.Exit(2)
        tags[key.strip()] = value.strip()
    try:
        specs = [parse_log_file_spec(text) for text in _split(log_file)]
        cfg = AgentConfig(
            hub=hub, token=token, name=name, role=role, environment=environment, location=location, tags=tags,
            log_files=specs, interval_s=_seconds(interval), buffer_dir=buffer_dir,
            buffer_max_bytes=buffer_max_bytes, backoff_max_s=_seconds(backoff_max),
        )
    except (ConfigError, ValueError) as exc:
        typer.echo(f"error: {getattr(exc, 'message', exc)}", err=True)
        raise typer.Exit(2) from None
    foreign = [s for s in specs if s.server is not None and s.server != name]
    if foreign:
        typer.echo(f"error: {foreign[0].path}={foreign[0].server}: an agent sends log lines as its own server "
                   "only (leave out =SERVER)", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        runner = Agent(cfg)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop)
        return await runner.run()

    try:
        code = asyncio.run(run())
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 2
    sys.exit(code)

"""The `openmanager` command."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openmanager import __version__
from openmanager.config import ENV_PREFIX, Settings, help_for
from openmanager.core.errors import ConfigError

app = typer.Typer(
    help="OpenManager Vibe: a self-hosted, real-time server-fleet monitoring hub.",
    no_args_is_help=True,
    add_completion=False,
)


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _opt(name: str, flag: str | None = None, *extra: str) -> Any:
    return typer.Option(flag or f"--{name.replace('_', '-')}", *extra, envvar=_env(name), help=help_for(name),
                        show_envvar=True)


def _bool_opt(name: str) -> Any:
    flag = name.replace("_", "-")
    return typer.Option(f"--{flag}/--no-{flag}", envvar=_env(name), help=help_for(name), show_envvar=True)


@app.command()
def serve(
    host: Annotated[str | None, _opt("host")] = None,
    port: Annotated[int | None, _opt("port")] = None,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    servers: Annotated[int | None, _opt("servers")] = None,
    seed: Annotated[int | None, _opt("seed")] = None,
    tick: Annotated[float | None, _opt("tick")] = None,
    simulator: Annotated[bool | None, _bool_opt("simulator")] = None,
    local: Annotated[bool | None, _bool_opt("local")] = None,
    heartbeat_ms: Annotated[int | None, _opt("heartbeat_ms")] = None,
    max_frame_bytes: Annotated[int | None, _opt("max_frame_bytes")] = None,
    history_max_age: Annotated[str | None, _opt("history_max_age")] = None,
    history_max_events: Annotated[int | None, _opt("history_max_events")] = None,
    history_max_bytes: Annotated[int | None, _opt("history_max_bytes")] = None,
    queue_max_messages: Annotated[int | None, _opt("queue_max_messages")] = None,
    queue_max_bytes: Annotated[int | None, _opt("queue_max_bytes")] = None,
    rollup_minute_days: Annotated[int | None, _opt("rollup_minute_days")] = None,
    rollup_hour_days: Annotated[int | None, _opt("rollup_hour_days")] = None,
    memory_history: Annotated[str | None, _opt("memory_history")] = None,
    thresholds: Annotated[str | None, _opt("thresholds")] = None,
    allowed_origins: Annotated[str | None, _opt("allowed_origins")] = None,
    log_level: Annotated[str | None, _opt("log_level")] = None,
    log_file: Annotated[list[str] | None, _opt("log_file")] = None,
    log_max_age: Annotated[str | None, _opt("log_max_age")] = None,
    log_max_bytes: Annotated[int | None, _opt("log_max_bytes")] = None,
    scrape: Annotated[list[str] | None, _opt("scrape")] = None,
    flap_transitions: Annotated[int | None, _opt("flap_transitions")] = None,
    flap_window: Annotated[str | None, _opt("flap_window")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="OPENMANAGER_CONFIG", show_envvar=True,
                     help="TOML file with any of these settings (flags and environment win over it)."),
    ] = None,
) -> None:
    """Run the hub: sources, pipeline, store, WebSocket/SSE/REST gateway. Prints the dashboard link.

    The admin token comes from OPENMANAGER_ADMIN_TOKEN, or is generated at first start and kept
    (mode 0600) in the data directory."""
    flags = {k: (v or None) if isinstance(v, list) else v for k, v in locals().items() if k != "config"}
    try:
        settings = Settings.load(flags, config_file=config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    from openmanager.server import run

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: that is a clean exit.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        code = asyncio.run(run(settings))
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def watch(
    topic: Annotated[str, typer.Argument(help="metrics, logs, fleet or system.")],
    where: Annotated[str | None, typer.Option(help='metrics: a condition, e.g. "cpu > 90".')] = None,
    servers: Annotated[str | None, typer.Option(help="metrics, logs: server ids or globs, comma-separated.")] = None,
    level: Annotated[str | None, typer.Option(help="logs: minimum level (DEBUG, INFO, WARN, ERROR, CRITICAL).")] = None,
    contains: Annotated[str | None, typer.Option(help="logs: text the message contains.")] = None,
    url: Annotated[str, typer.Option(envvar="OPENMANAGER_URL", show_envvar=True, help="The hub.")] = (
        "http://127.0.0.1:8000"),
    token: Annotated[str | None, typer.Option(envvar="OPENMANAGER_TOKEN", show_envvar=True,
                                              help="Defaults to ./data/admin_token.")] = None,
) -> None:
    """Stream a topic live in the terminal: one line per server update or log record; connection
    state changes on stderr. The connection comes back by itself after a drop. Ctrl-C to stop."""
    from openmanager.client import ws_url
    from openmanager.client._watch import WATCH_TOPICS, resolve_token, run_watch

    if topic not in WATCH_TOPICS:
        typer.echo(f"error: unknown topic {topic!r} (one of {', '.join(WATCH_TOPICS)})", err=True)
        raise typer.Exit(2)
    misplaced = [flag for flag, value, topics in (("--where", where, ("metrics",)),
                                                  ("--servers", servers, ("metrics", "logs")),
                                                  ("--level", level, ("logs",)),
                                                  ("--contains", contains, ("logs",)))
                 if value is not None and topic not in topics]
    if misplaced:
        typer.echo(f"error: {', '.join(misplaced)} does not apply to {topic}", err=True)
        raise typer.Exit(2)
    try:
        ws_url(url)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    resolved = resolve_token(token)
    if resolved is None:
        typer.echo("error: no token: pass --token, set OPENMANAGER_TOKEN, or run where data/admin_token is",
                   err=True)
        raise typer.Exit(2)
    try:
        code = asyncio.run(run_watch(topic, url=url, token=resolved, where=where, servers=servers, level=level,
                                     contains=contains))
    except KeyboardInterrupt:  # a second Ctrl-C while closing
        code = 0
    sys.exit(code)


def main() -> None:
    logging.captureWarnings(True)
    app()


if __name__ == "__main__":
    main()

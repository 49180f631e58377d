"""`openmanager serve` (the hub), `version`, and `watch` (a topic live in the terminal)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from openmanager import __version__
from openmanager.cli._common import app, bool_opt, opt
from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.store.files import use_private_umask


@app.command()
def serve(
    host: Annotated[str | None, opt("host")] = None,
    port: Annotated[int | None, opt("port")] = None,
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    servers: Annotated[int | None, opt("servers")] = None,
    seed: Annotated[int | None, opt("seed")] = None,
    tick: Annotated[float | None, opt("tick")] = None,
    simulator: Annotated[bool | None, bool_opt("simulator")] = None,
    local: Annotated[bool | None, bool_opt("local")] = None,
    heartbeat_ms: Annotated[int | None, opt("heartbeat_ms")] = None,
    max_frame_bytes: Annotated[int | None, opt("max_frame_bytes")] = None,
    socketio_ping_interval_ms: Annotated[int | None, opt("socketio_ping_interval_ms")] = None,
    socketio_ping_timeout_ms: Annotated[int | None, opt("socketio_ping_timeout_ms")] = None,
    history_max_age: Annotated[str | None, opt("history_max_age")] = None,
    history_max_events: Annotated[int | None, opt("history_max_events")] = None,
    history_max_bytes: Annotated[int | None, opt("history_max_bytes")] = None,
    queue_max_messages: Annotated[int | None, opt("queue_max_messages")] = None,
    queue_max_bytes: Annotated[int | None, opt("queue_max_bytes")] = None,
    rollup_minute_days: Annotated[int | None, opt("rollup_minute_days")] = None,
    rollup_hour_days: Annotated[int | None, opt("rollup_hour_days")] = None,
    memory_history: Annotated[str | None, opt("memory_history")] = None,
    thresholds: Annotated[str | None, opt("thresholds")] = None,
    allowed_origins: Annotated[str | None, opt("allowed_origins")] = None,
    tls_cert: Annotated[str | None, opt("tls_cert")] = None,
    tls_key: Annotated[str | None, opt("tls_key")] = None,
    log_level: Annotated[str | None, opt("log_level")] = None,
    log_file: Annotated[list[str] | None, opt("log_file")] = None,
    log_max_age: Annotated[str | None, opt("log_max_age")] = None,
    log_max_bytes: Annotated[int | None, opt("log_max_bytes")] = None,
    scrape: Annotated[list[str] | None, opt("scrape")] = None,
    flap_transitions: Annotated[int | None, opt("flap_transitions")] = None,
    flap_window: Annotated[str | None, opt("flap_window")] = None,
    public_url: Annotated[str | None, opt("public_url")] = None,
    smtp_host: Annotated[str | None, opt("smtp_host")] = None,
    smtp_port: Annotated[int | None, opt("smtp_port")] = None,
    smtp_security: Annotated[str | None, opt("smtp_security")] = None,
    smtp_username: Annotated[str | None, opt("smtp_username")] = None,
    smtp_password: Annotated[str | None, opt("smtp_password")] = None,
    smtp_from: Annotated[str | None, opt("smtp_from")] = None,
    vapid_subject: Annotated[str | None, opt("vapid_subject")] = None,
    notify_retry_limit: Annotated[int | None, opt("notify_retry_limit")] = None,
    notify_retry_base: Annotated[str | None, opt("notify_retry_base")] = None,
    notify_group_wait: Annotated[str | None, opt("notify_group_wait")] = None,
    notify_group_interval: Annotated[str | None, opt("notify_group_interval")] = None,
    notify_group_items_max: Annotated[int | None, opt("notify_group_items_max")] = None,
    escalation_critical: Annotated[str | None, opt("escalation_critical")] = None,
    escalation_warning: Annotated[str | None, opt("escalation_warning")] = None,
    escalation_info: Annotated[str | None, opt("escalation_info")] = None,
    broker: Annotated[str | None, opt("broker")] = None,
    broker_prefix: Annotated[str | None, opt("broker_prefix")] = None,
    leader_lock: Annotated[str | None, opt("leader_lock")] = None,
    leader_lease: Annotated[str | None, opt("leader_lease")] = None,
    node_id: Annotated[str | None, opt("node_id")] = None,
    outbound_allow: Annotated[list[str] | None, opt("outbound_allow")] = None,
    allowed_hosts: Annotated[str | None, opt("allowed_hosts")] = None,
    backtest_concurrency_per_user: Annotated[int | None, opt("backtest_concurrency_per_user")] = None,
    backtest_concurrency: Annotated[int | None, opt("backtest_concurrency")] = None,
    expensive_timeout: Annotated[str | None, opt("expensive_timeout")] = None,
    loop_stall_trace_ms: Annotated[int | None, opt("loop_stall_trace_ms")] = None,
    # connection limits
    max_body_bytes: Annotated[int | None, opt("max_body_bytes")] = None,
    max_login_body_bytes: Annotated[int | None, opt("max_login_body_bytes")] = None,
    header_timeout: Annotated[str | None, opt("header_timeout")] = None,
    keep_alive_timeout: Annotated[str | None, opt("keep_alive_timeout")] = None,
    max_connections: Annotated[int | None, opt("max_connections")] = None,
    max_connections_per_address: Annotated[int | None, opt("max_connections_per_address")] = None,
    max_connections_per_user: Annotated[int | None, opt("max_connections_per_user")] = None,
    fd_reserve: Annotated[int | None, opt("fd_reserve")] = None,
    forwarded_allow_ips: Annotated[str | None, opt("forwarded_allow_ips")] = None,
    # syslog and OTLP receivers
    syslog: Annotated[list[str] | None, opt("syslog")] = None,
    syslog_allow: Annotated[list[str] | None, opt("syslog_allow")] = None,
    syslog_tls_cert: Annotated[str | None, opt("syslog_tls_cert")] = None,
    syslog_tls_key: Annotated[str | None, opt("syslog_tls_key")] = None,
    syslog_max_connections: Annotated[int | None, opt("syslog_max_connections")] = None,
    syslog_idle_timeout: Annotated[str | None, opt("syslog_idle_timeout")] = None,
    syslog_max_message_bytes: Annotated[int | None, opt("syslog_max_message_bytes")] = None,
    otlp_max_body_bytes: Annotated[int | None, opt("otlp_max_body_bytes")] = None,
    otlp_max_decompressed_bytes: Annotated[int | None, opt("otlp_max_decompressed_bytes")] = None,
    otlp_token_requests_per_s: Annotated[float | None, opt("otlp_token_requests_per_s")] = None,
    otlp_token_request_burst: Annotated[int | None, opt("otlp_token_request_burst")] = None,
    otlp_token_items_per_s: Annotated[float | None, opt("otlp_token_items_per_s")] = None,
    otlp_token_item_burst: Annotated[int | None, opt("otlp_token_item_burst")] = None,
    # Expression and subscription limits
    where_max_length: Annotated[int | None, opt("where_max_length")] = None,
    expression_max_cost: Annotated[int | None, opt("expression_max_cost")] = None,
    subscription_cost_budget: Annotated[int | None, opt("subscription_cost_budget")] = None,
    subscriptions_per_connection: Annotated[int | None, opt("subscriptions_per_connection")] = None,
    # labelled series
    max_series: Annotated[int | None, opt("max_series")] = None,
    series_exclude_mounts: Annotated[list[str] | None, opt("series_exclude_mounts")] = None,
    series_exclude_interfaces: Annotated[list[str] | None, opt("series_exclude_interfaces")] = None,
    series_exclude_fstypes: Annotated[list[str] | None, opt("series_exclude_fstypes")] = None,
    series_exclude_devices: Annotated[list[str] | None, opt("series_exclude_devices")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="OPENMANAGER_CONFIG", show_envvar=True,
                     help="TOML file with any of these settings (flags and environment win over it)."),
    ] = None,
) -> None:
    """Run the hub: sources, pipeline, store, WebSocket/SSE/REST gateway. Prints the dashboard link.

    The admin token comes from OPENMANAGER_ADMIN_TOKEN, or is generated at first start and kept
    (mode 0600) in the data directory. The data directory is made private (0700, files 0600) at start."""
    flags = {k: (v or None) if isinstance(v, list) else v for k, v in locals().items() if k != "config"}
    use_private_umask()  # the data directory and everything the hub writes: the hub's user only
    try:
        settings = Settings.load(flags, config_file=config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    from openmanager.server import event_loop_factory, run

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: that is a clean exit.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:  # uvloop when installed
            code = runner.run(run(settings))
    except KeyboardInterrupt:
        code = 0
    except ConfigError as exc:  # found while wiring the hub (e.g. a bad --scrape target), before serving
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    sys.exit(code)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def watch(
    topic: Annotated[str, typer.Argument(help="metrics, logs, alerts, fleet or system.")],
    where: Annotated[str | None, typer.Option(help='metrics: a condition, e.g. "cpu > 90".')] = None,
    servers: Annotated[str | None, typer.Option(
        help="metrics, logs, alerts: server ids or globs, comma-separated.")] = None,
    level: Annotated[str | None, typer.Option(help="logs: minimum level (DEBUG, INFO, WARN, ERROR, CRITICAL); "
                                                   "alerts: minimum severity (info, warning, critical).")] = None,
    contains: Annotated[str | None, typer.Option(help="logs: text the message contains.")] = None,
    url: Annotated[str, typer.Option(envvar="OPENMANAGER_URL", show_envvar=True, help="The hub.")] = (
        "http://127.0.0.1:8000"),
    token: Annotated[str | None, typer.Option(envvar="OPENMANAGER_TOKEN", show_envvar=True,
                                              help="Defaults to ./data/admin_token.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per snapshot or event: "
                                                         '{"topic", "type", "data"}.')] = False,
) -> None:
    """Stream a topic live in the terminal: one readable line per server update, log record, alert
    transition, fleet summary or hub statistic (JSON with --json); connection state changes on stderr.
    The connection comes back by itself after a drop. Ctrl-C to stop."""
    from openmanager.client import ws_url
    from openmanager.client._watch import WATCH_TOPICS, resolve_token, run_watch

    if topic not in WATCH_TOPICS:
        typer.echo(f"error: unknown topic {topic!r} (one of {', '.join(WATCH_TOPICS)})", err=True)
        raise typer.Exit(2)
    misplaced = [flag for flag, value, topics in (("--where", where, ("metrics",)),
                                                  ("--servers", servers, ("metrics", "logs", "alerts")),
                                                  ("--level", level, ("logs", "alerts")),
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
                                     contains=contains, as_json=as_json))
    except KeyboardInterrupt:  # a second Ctrl-C while closing
        code = 0
    sys.exit(code)

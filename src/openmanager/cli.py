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
from openmanager.store.files import use_private_umask

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
    socketio_ping_interval_ms: Annotated[int | None, _opt("socketio_ping_interval_ms")] = None,
    socketio_ping_timeout_ms: Annotated[int | None, _opt("socketio_ping_timeout_ms")] = None,
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
    tls_cert: Annotated[str | None, _opt("tls_cert")] = None,
    tls_key: Annotated[str | None, _opt("tls_key")] = None,
    log_level: Annotated[str | None, _opt("log_level")] = None,
    log_file: Annotated[list[str] | None, _opt("log_file")] = None,
    log_max_age: Annotated[str | None, _opt("log_max_age")] = None,
    log_max_bytes: Annotated[int | None, _opt("log_max_bytes")] = None,
    scrape: Annotated[list[str] | None, _opt("scrape")] = None,
    flap_transitions: Annotated[int | None, _opt("flap_transitions")] = None,
    flap_window: Annotated[str | None, _opt("flap_window")] = None,
    public_url: Annotated[str | None, _opt("public_url")] = None,
    smtp_host: Annotated[str | None, _opt("smtp_host")] = None,
    smtp_port: Annotated[int | None, _opt("smtp_port")] = None,
    smtp_security: Annotated[str | None, _opt("smtp_security")] = None,
    smtp_username: Annotated[str | None, _opt("smtp_username")] = None,
    smtp_password: Annotated[str | None, _opt("smtp_password")] = None,
    smtp_from: Annotated[str | None, _opt("smtp_from")] = None,
    vapid_subject: Annotated[str | None, _opt("vapid_subject")] = None,
    notify_retry_limit: Annotated[int | None, _opt("notify_retry_limit")] = None,
    notify_retry_base: Annotated[str | None, _opt("notify_retry_base")] = None,
    notify_group_wait: Annotated[str | None, _opt("notify_group_wait")] = None,
    notify_group_interval: Annotated[str | None, _opt("notify_group_interval")] = None,
    notify_group_items_max: Annotated[int | None, _opt("notify_group_items_max")] = None,
    escalation_critical: Annotated[str | None, _opt("escalation_critical")] = None,
    escalation_warning: Annotated[str | None, _opt("escalation_warning")] = None,
    escalation_info: Annotated[str | None, _opt("escalation_info")] = None,
    broker: Annotated[str | None, _opt("broker")] = None,
    broker_prefix: Annotated[str | None, _opt("broker_prefix")] = None,
    leader_lock: Annotated[str | None, _opt("leader_lock")] = None,
    leader_lease: Annotated[str | None, _opt("leader_lease")] = None,
    node_id: Annotated[str | None, _opt("node_id")] = None,
    outbound_allow: Annotated[list[str] | None, _opt("outbound_allow")] = None,
    allowed_hosts: Annotated[str | None, _opt("allowed_hosts")] = None,
    backtest_concurrency_per_user: Annotated[int | None, _opt("backtest_concurrency_per_user")] = None,
    backtest_concurrency: Annotated[int | None, _opt("backtest_concurrency")] = None,
    expensive_timeout: Annotated[str | None, _opt("expensive_timeout")] = None,
    # connection limits
    max_body_bytes: Annotated[int | None, _opt("max_body_bytes")] = None,
    max_login_body_bytes: Annotated[int | None, _opt("max_login_body_bytes")] = None,
    header_timeout: Annotated[str | None, _opt("header_timeout")] = None,
    keep_alive_timeout: Annotated[str | None, _opt("keep_alive_timeout")] = None,
    max_connections: Annotated[int | None, _opt("max_connections")] = None,
    max_connections_per_address: Annotated[int | None, _opt("max_connections_per_address")] = None,
    max_connections_per_user: Annotated[int | None, _opt("max_connections_per_user")] = None,
    fd_reserve: Annotated[int | None, _opt("fd_reserve")] = None,
    forwarded_allow_ips: Annotated[str | None, _opt("forwarded_allow_ips")] = None,
    # syslog and OTLP receivers
    syslog: Annotated[list[str] | None, _opt("syslog")] = None,
    syslog_allow: Annotated[list[str] | None, _opt("syslog_allow")] = None,
    syslog_tls_cert: Annotated[str | None, _opt("syslog_tls_cert")] = None,
    syslog_tls_key: Annotated[str | None, _opt("syslog_tls_key")] = None,
    syslog_max_connections: Annotated[int | None, _opt("syslog_max_connections")] = None,
    syslog_idle_timeout: Annotated[str | None, _opt("syslog_idle_timeout")] = None,
    syslog_max_message_bytes: Annotated[int | None, _opt("syslog_max_message_bytes")] = None,
    otlp_max_body_bytes: Annotated[int | None, _opt("otlp_max_body_bytes")] = None,
    otlp_max_decompressed_bytes: Annotated[int | None, _opt("otlp_max_decompressed_bytes")] = None,
    otlp_token_requests_per_s: Annotated[float | None, _opt("otlp_token_requests_per_s")] = None,
    otlp_token_request_burst: Annotated[int | None, _opt("otlp_token_request_burst")] = None,
    otlp_token_items_per_s: Annotated[float | None, _opt("otlp_token_items_per_s")] = None,
    otlp_token_item_burst: Annotated[int | None, _opt("otlp_token_item_burst")] = None,
    # Expression and subscription limits
    where_max_length: Annotated[int | None, _opt("where_max_length")] = None,
    expression_max_cost: Annotated[int | None, _opt("expression_max_cost")] = None,
    subscription_cost_budget: Annotated[int | None, _opt("subscription_cost_budget")] = None,
    subscriptions_per_connection: Annotated[int | None, _opt("subscriptions_per_connection")] = None,
    # labelled series
    max_series: Annotated[int | None, _opt("max_series")] = None,
    series_exclude_mounts: Annotated[list[str] | None, _opt("series_exclude_mounts")] = None,
    series_exclude_interfaces: Annotated[list[str] | None, _opt("series_exclude_interfaces")] = None,
    series_exclude_fstypes: Annotated[list[str] | None, _opt("series_exclude_fstypes")] = None,
    series_exclude_devices: Annotated[list[str] | None, _opt("series_exclude_devices")] = None,
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


# -- agents (on the hub's machine) and the agent (on a monitored host) ----------------------------------

agents_app = typer.Typer(
    help="Agent tokens of this hub: create, list, revoke. Run on the hub's machine (it opens the hub's store).",
    no_args_is_help=True,
)
app.add_typer(agents_app, name="agents")

_ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="OPENMANAGER_CONFIG", show_envvar=True, help="The hub's TOML config file."),
]


def _with_agents(data_dir: str | None, db: str | None, config: Path | None, action: Any) -> Any:
    """Run `await action(AgentStore)` against the hub's configured store; config errors exit with 2."""
    from openmanager.store.agents import AgentStore
    from openmanager.store.db import Store

    use_private_umask()  # a store this creates is the hub's user's only
    try:
        settings = Settings.load({"data_dir": data_dir, "db": db}, config_file=config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None

    async def run() -> Any:
        store = await Store.open(settings.db_url)
        try:
            return await action(AgentStore(store))
        finally:
            await store.close()

    return asyncio.run(run())


@agents_app.command("create")
def agents_create(
    name: Annotated[str, typer.Argument(help="The agent's name: its server id on the hub (e.g. web-07).")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Create an agent and print its token (on stdout, once: it is stored only hashed)."""
    from openmanager.core.errors import OpenManagerError

    try:
        token = _with_agents(data_dir, db, config, lambda agents: agents.create(name))
    except OpenManagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(token)
    hub_url, note = agent_hub_address(Settings.load({"data_dir": data_dir, "db": db}, config_file=config))
    typer.echo(f"agent {name!r} created; the token above is shown only this once. On the host to watch:\n"
               f"  openmanager agent --hub {hub_url} --token-file <file holding the token>" + (f"\n{note}" if note
                                                                                             else ""), err=True)


def agent_hub_address(settings: Settings) -> tuple[str, str]:
    """The address an agent on another machine should use for this hub, from its settings: `public_url`
    when set, else the scheme, host and port it serves (this machine's name for a wildcard bind); plus a
    note when that address is loopback, which only an agent on this machine can reach."""
    import socket

    if settings.public_url:
        return settings.public_url.rstrip("/"), ""
    scheme = "https" if settings.tls_cert else "http"
    host = settings.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    shown = f"[{host}]" if ":" in host else host
    note = ""
    if host in ("127.0.0.1", "::1", "localhost"):
        note = ("(the hub listens on loopback only: for an agent on another machine, serve with --host 0.0.0.0 "
                "behind TLS, or set public_url to the address it is reached at)")
    return f"{scheme}://{shown}:{settings.port}", note


@agents_app.command("list")
def agents_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """List agents: name, status, created, last seen, last acknowledged batch. Never shows tokens."""
    import json
    import time as _time

    records = _with_agents(data_dir, db, config, lambda agents: agents.list())

    def when(ms: int | None) -> str:
        return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ms / 1000)) if ms else "-"

    if as_json:
        for r in records:
            typer.echo(json.dumps({"name": r.name, "status": "active" if r.active else "revoked",
                                   "created_at": r.created_at, "revoked_at": r.revoked_at,
                                   "last_seen": r.last_seen, "last_seq": r.last_seq}))
        return
    typer.echo(f"{'NAME':<24} {'STATUS':<8} {'CREATED':<19} {'LAST SEEN':<19} {'LAST SEQ':>9}")
    for r in records:
        typer.echo(f"{r.name:<24} {'active' if r.active else 'revoked':<8} {when(r.created_at):<19} "
                   f"{when(r.last_seen):<19} {r.last_seq:>9}")


@agents_app.command("revoke")
def agents_revoke(
    name: Annotated[str, typer.Argument(help="The agent to revoke.")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Revoke an agent's token: the hub refuses it from now on (an open connection is closed with 4401 at its
    next batch). Its server and history stay until `DELETE /api/v1/servers/{id}`."""
    from openmanager.core.errors import OpenManagerError

    try:
        _with_agents(data_dir, db, config, lambda agents: agents.revoke(name))
    except OpenManagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"agent {name!r} revoked")


# -- ingest tokens: OTLP/HTTP senders (on the hub's machine) --------------------------------------------

ingest_tokens_app = typer.Typer(
    help="Ingest tokens of this hub (OTLP/HTTP senders such as an OpenTelemetry Collector): create, list, revoke. "
         "Run on the hub's machine (it opens the hub's store).",
    no_args_is_help=True,
)
app.add_typer(ingest_tokens_app, name="ingest-tokens")


def _with_ingest_tokens(data_dir: str | None, db: str | None, config: Path | None, action: Any) -> Any:
    """Run `await action(IngestTokenStore)` against the hub's configured store; config errors exit with 2,
    store errors (a bad name, a duplicate) with 1."""
    from openmanager.core.errors import OpenManagerError
    from openmanager.store.ingest_tokens import IngestTokenStore

    try:
        return _with_agents(data_dir, db, config, lambda agents: action(IngestTokenStore(agents.store)))
    except OpenManagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@ingest_tokens_app.command("create")
def ingest_tokens_create(
    name: Annotated[str, typer.Argument(help="Who sends with it (e.g. collector-eu).")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Create an ingest token and print it (on stdout, alone, once: it is stored only hashed)."""
    token = _with_ingest_tokens(data_dir, db, config, lambda tokens: tokens.create(name))
    typer.echo(token)
    hub_url, note = agent_hub_address(Settings.load({"data_dir": data_dir, "db": db}, config_file=config))
    typer.echo(f"ingest token {name!r} created; the token above is shown only this once. OTLP/HTTP senders use\n"
               f"  endpoint {hub_url} (paths /v1/metrics and /v1/logs), header Authorization: Bearer <token>"
               + (f"\n{note}" if note else ""), err=True)


@ingest_tokens_app.command("list")
def ingest_tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """List ingest tokens: name, status, created, last used. Never shows tokens."""
    import json
    import time as _time

    records = _with_ingest_tokens(data_dir, db, config, lambda tokens: tokens.list())

    def when(ms: int | None) -> str:
        return _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(ms / 1000)) if ms else "-"

    if as_json:
        for r in records:
            typer.echo(json.dumps(r.to_api()))
        return
    typer.echo(f"{'NAME':<24} {'STATUS':<8} {'CREATED':<19} {'LAST USED':<19}")
    for r in records:
        typer.echo(f"{r.name:<24} {'active' if r.active else 'revoked':<8} {when(r.created_at):<19} "
                   f"{when(r.last_used_at):<19}")


@ingest_tokens_app.command("revoke")
def ingest_tokens_revoke(
    name: Annotated[str, typer.Argument(help="The ingest token to revoke.")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Revoke an ingest token: the hub refuses it (401) from its next request on. What it sent stays."""
    _with_ingest_tokens(data_dir, db, config, lambda tokens: tokens.revoke(name))
    typer.echo(f"ingest token {name!r} revoked")


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


# -- users (on the hub's machine) ---------------------------------------------------------------------------

users_app = typer.Typer(
    help="User accounts of this hub: add, list, tokens, passwords. Run on the hub's machine (it opens the hub's "
         "store); a running hub applies changes within 30 s.",
    no_args_is_help=True,
)
app.add_typer(users_app, name="users")


def _with_users(data_dir: str | None, db: str | None, config: Path | None, action: Any) -> Any:
    """Run `await action(UserStore)` against the hub's configured store. Config errors exit with 2, refused
    changes (a taken name, a short password, an unknown user) with 1."""
    from openmanager.core.errors import OpenManagerError
    from openmanager.store.db import Store
    from openmanager.store.users import UserStore

    use_private_umask()  # a store this creates is the hub's user's only
    try:
        settings = Settings.load({"data_dir": data_dir, "db": db}, config_file=config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None

    async def run() -> Any:
        store = await Store.open(settings.db_url)
        try:
            return await action(UserStore(store))
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except OpenManagerError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _read_password(from_stdin: bool) -> str:
    """One line of stdin (`--password-stdin`, for scripts), else a hidden prompt, twice."""
    from openmanager.core.access import MIN_PASSWORD_LENGTH

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        typer.echo(f"error: a password has at least {MIN_PASSWORD_LENGTH} characters", err=True)
        raise typer.Exit(1)
    return password


def _builtin_admin(name: str, what: str) -> None:
    from openmanager.gateway.auth import ADMIN_USER

    if name.strip().lower() == ADMIN_USER:
        typer.echo(f"error: {ADMIN_USER!r} is the built-in admin (the admin token); it cannot be {what}", err=True)
        raise typer.Exit(1)


_PasswordStdin = Annotated[bool, typer.Option("--password-stdin", help="Read the password from the first line of "
                                                                       "stdin instead of prompting.")]


@users_app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="The user name (letters, digits, . _ @ -; stored in lower case).")],
    role: Annotated[str, typer.Option("--role", help="viewer (read), operator (+ rules, ack, silences) or admin.")],
    password_stdin: _PasswordStdin = False,
    no_password: Annotated[bool, typer.Option("--no-password", help="No password: the account can use API "
                                                                    "tokens only (`users token`).")] = False,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Add a user. Prompts for the password twice (hidden) unless --password-stdin or --no-password."""
    from openmanager.core.access import ROLES

    _builtin_admin(name, "added (set its password with `users passwd admin`)")
    if role not in ROLES:
        typer.echo(f"error: --role must be one of {', '.join(ROLES)}", err=True)
        raise typer.Exit(2)
    password = None if no_password else _read_password(password_stdin)
    user = _with_users(data_dir, db, config, lambda users: users.create(name, role, password))
    typer.echo(f"user {user.name!r} added with role {user.role}")


@users_app.command("list")
def users_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """List users: name, role, status, whether a password is set, created. Never shows hashes or tokens."""
    import json
    import time as _time

    records = _with_users(data_dir, db, config, lambda users: users.list())
    if as_json:
        for r in records:
            typer.echo(json.dumps(r.to_api()))
        return
    typer.echo(f"{'NAME':<24} {'ROLE':<9} {'STATUS':<9} {'PASSWORD':<9} {'CREATED':<19}")
    for r in records:
        created = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(r.created_at / 1000))
        typer.echo(f"{r.name:<24} {r.role:<9} {'disabled' if r.disabled else 'active':<9} "
                   f"{'set' if r.has_password else '-':<9} {created:<19}")


@users_app.command("token")
def users_token(
    name: Annotated[str, typer.Argument(help="The user the token acts as.")],
    token_name: Annotated[str, typer.Option("--token-name", help="A label to recognise it by.")] = "cli",
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Create an API token for a user and print it (on stdout, once: it is stored only hashed)."""

    async def create(users: Any) -> tuple[Any, str]:
        result: tuple[Any, str] = await users.create_token(name, token_name)
        return result

    record, token = _with_users(data_dir, db, config, create)
    typer.echo(token)
    typer.echo(f"token {record.id} ({record.name!r}) for {record.user!r}; shown only this once. Use it as "
               "`Authorization: Bearer <token>`; revoke it with DELETE /api/v1/me/tokens/<id>.", err=True)


@users_app.command("passwd")
def users_passwd(
    name: Annotated[str, typer.Argument(help="The user whose password to set.")],
    password_stdin: _PasswordStdin = False,
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Set a user's password (the built-in admin's too). Ends the user's login sessions."""
    password = _read_password(password_stdin)
    user = _with_users(data_dir, db, config, lambda users: users.update(name, password=password))
    typer.echo(f"password of {user.name!r} changed")


def _set_disabled(name: str, disabled: bool, data_dir: str | None, db: str | None, config: Path | None) -> None:
    user = _with_users(data_dir, db, config, lambda users: users.update(name, disabled=disabled))
    typer.echo(f"user {user.name!r} {'disabled' if disabled else 'enabled'}")


@users_app.command("disable")
def users_disable(
    name: Annotated[str, typer.Argument(help="The user to disable.")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Disable a user: their password, sessions and API tokens are refused (kept, for `users enable`)."""
    _builtin_admin(name, "disabled")
    _set_disabled(name, True, data_dir, db, config)


@users_app.command("enable")
def users_enable(
    name: Annotated[str, typer.Argument(help="The user to enable again.")],
    data_dir: Annotated[str | None, _opt("data_dir")] = None,
    db: Annotated[str | None, _opt("db")] = None,
    config: _ConfigOpt = None,
) -> None:
    """Enable a disabled user again (their API tokens work again; they sign in anew)."""
    _set_disabled(name, False, data_dir, db, config)


def reflow_help(doc: str) -> str:
    """A docstring as help text that the terminal wraps at words: the lines of each paragraph joined
    (Typer keeps the single line breaks of every paragraph after the first, which then break
    mid-sentence at any other width)."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _reflow_commands(typer_app: typer.Typer) -> None:
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow_help(info.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_commands(group.typer_instance)


_reflow_commands(app)


def main() -> None:
    logging.captureWarnings(True)
    app()


if __name__ == "__main__":
    main()

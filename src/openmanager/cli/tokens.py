"""`openmanager agents` and `openmanager ingest-tokens`: the tokens of this hub's agents and OTLP senders,
run on the hub's machine against its store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from openmanager.cli._common import ConfigOpt, app, opt, with_store
from openmanager.config import Settings

agents_app = typer.Typer(
    help="Agent tokens of this hub: create, list, revoke. Run on the hub's machine (it opens the hub's store).",
    no_args_is_help=True,
)
app.add_typer(agents_app, name="agents")

def _with_agents(data_dir: str | None, db: str | None, config: Path | None, action: Any) -> Any:
    """Run `await action(AgentStore)` against the hub's configured store; config errors exit with 2."""
    from openmanager.store.agents import AgentStore

    return with_store(data_dir, db, config, lambda store: action(AgentStore(store)))


@agents_app.command("create")
def agents_create(
    name: Annotated[str, typer.Argument(help="The agent's name: its server id on the hub (e.g. web-07).")],
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke an ingest token: the hub refuses it (401) from its next request on. What it sent stays."""
    _with_ingest_tokens(data_dir, db, config, lambda tokens: tokens.revoke(name))
    typer.echo(f"ingest token {name!r} revoked")

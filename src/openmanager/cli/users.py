"""`openmanager users`: the hub's user accounts, run on the hub's machine against its store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from openmanager.cli._common import ConfigOpt, app, opt, with_store

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
    from openmanager.store.users import UserStore

    try:
        return with_store(data_dir, db, config, lambda store: action(UserStore(store)))
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
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
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
) -> None:
    """Disable a user: their password, sessions and API tokens are refused (kept, for `users enable`)."""
    _builtin_admin(name, "disabled")
    _set_disabled(name, True, data_dir, db, config)


@users_app.command("enable")
def users_enable(
    name: Annotated[str, typer.Argument(help="The user to enable again.")],
    data_dir: Annotated[str | None, opt("data_dir")] = None,
    db: Annotated[str | None, opt("db")] = None,
    config: ConfigOpt = None,
) -> None:
    """Enable a disabled user again (their API tokens work again; they sign in anew)."""
    _set_disabled(name, False, data_dir, db, config)

"""What the `openmanager` command's modules share: the Typer application, the options named after the
settings (flag, environment variable and help from `config`), the hub's `--config` option, and the help
text reflowed so the terminal wraps it at words."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from openmanager.config import ENV_PREFIX, Settings, help_for
from openmanager.core.errors import ConfigError
from openmanager.store.files import use_private_umask

if TYPE_CHECKING:
    from openmanager.store.db import Store

T = TypeVar("T")

app = typer.Typer(
    help="OpenManager Vibe: a self-hosted, real-time server-fleet monitoring hub.",
    no_args_is_help=True,
    add_completion=False,
)


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def opt(name: str, flag: str | None = None, *extra: str) -> Any:
    """The option of setting `name`: its flag, environment variable and help."""
    return typer.Option(flag or f"--{name.replace('_', '-')}", *extra, envvar=env_name(name), help=help_for(name),
                        show_envvar=True)


def bool_opt(name: str) -> Any:
    """The `--name/--no-name` option of boolean setting `name`."""
    flag = name.replace("_", "-")
    return typer.Option(f"--{flag}/--no-{flag}", envvar=env_name(name), help=help_for(name), show_envvar=True)


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="OPENMANAGER_CONFIG", show_envvar=True, help="The hub's TOML config file."),
]


def with_store(data_dir: str | None, db: str | None, config: Path | None,
               action: Callable[[Store], Awaitable[T]]) -> T:
    """Run `await action(store)` against the hub's configured store, opened and closed here (a store this
    creates is the hub's user's only). Config errors exit with 2; the action's errors propagate."""
    from openmanager.store.db import Store

    use_private_umask()
    try:
        settings = Settings.load({"data_dir": data_dir, "db": db}, config_file=config)
    except ConfigError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None

    async def run() -> T:
        store = await Store.open(settings.db_url)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def reflow_help(doc: str) -> str:
    """A docstring as help text that the terminal wraps at words: the lines of each paragraph joined
    (Typer keeps the single line breaks of every paragraph after the first, which then break
    mid-sentence at any other width)."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def reflow_commands(typer_app: typer.Typer) -> None:
    """`reflow_help` on the help of every command of `typer_app` and its groups that has none of its own."""
    for info in typer_app.registered_commands:
        if info.help is None and info.callback is not None and info.callback.__doc__:
            info.help = reflow_help(info.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            reflow_commands(group.typer_instance)

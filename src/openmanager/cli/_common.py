"""What the `openmanager` command's modules share: the Typer application, the options named after the
settings (flag, environment variable and help from `config`), the hub's `--config` option, and the help
text reflowed so the terminal wraps it at words."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any

import typer

from openmanager.config import ENV_PREFIX, help_for

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

"""The `openmanager` command: one module per group of subcommands (`serve`: serve, version, watch;
`tokens`: agents, ingest-tokens; `agent`; `users`), registered on one Typer application in that order."""

from __future__ import annotations

import logging

# Each module registers its commands on import: this order is the order `--help` lists them in.
# isort: off
from openmanager.cli import serve  # noqa: F401
from openmanager.cli import agent  # noqa: F401
from openmanager.cli import tokens  # noqa: F401
from openmanager.cli import users  # noqa: F401
# isort: on
from openmanager.cli._common import app, reflow_commands, reflow_help
from openmanager.cli.tokens import agent_hub_address

__all__ = ["agent_hub_address", "app", "main", "reflow_help"]

reflow_commands(app)


def main() -> None:
    logging.captureWarnings(True)
    app()

"""Alembic environment for the store; works with async engines.

Two ways in:
- `Store.open()` runs `alembic upgrade head` inside `AsyncConnection.run_sync` and passes the
  synchronous connection in `config.attributes["connection"]`; migrations run on it, in the
  caller's transaction.
- The `alembic` command line (with a config whose `sqlalchemy.url` is set) gets an async engine
  built here and the same migrations run through `run_sync`.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from openmanager.store.schema import include_object, metadata

config = context.config
target_metadata = metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=include_object,
        # SQLite cannot ALTER most things; batch mode lets later migrations work on it.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def _run_on(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from openmanager.store.db import normalize_url

    section = dict(config.get_section(config.config_ini_section, {}))
    section["sqlalchemy.url"] = normalize_url(section.get("sqlalchemy.url", ""))
    engine = async_engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_on)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

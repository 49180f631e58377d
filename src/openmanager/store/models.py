"""Declarative models of the store. Column types are portable between SQLite and PostgreSQL.

Timestamps are integer milliseconds since the epoch (BIGINT), like everywhere else in the hub.
The schema itself is created and evolved only by the Alembic migrations in `migrations/`; these
models describe it for queries (and for `alembic revision --autogenerate`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class ServerRow(Base):
    """A server the hub has seen (what it is, not what it measures)."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(64))
    environment: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(64))
    tags: Mapped[dict[str, str]] = mapped_column(JSONType)
    first_seen: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger)


class RollupRow(Base):
    """One roll-up bucket: `stats` is `{metric: [min, max, sum, n, sumsq]}` (`sumsq` absent from rows written
    before migration 0007_rollup_moments; see `core.rollup`).

    The primary key (server_id, resolution_s, start_ms) serves per-server time-range reads;
    `ix_rollups_resolution_start` serves retention pruning and fleet-wide coarsening.
    No foreign key to `servers`: roll-ups may exist for servers never announced with metadata.
    """

    __tablename__ = "rollups"

    server_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSONType)

    __table_args__ = (Index("ix_rollups_resolution_start", "resolution_s", "start_ms"),)

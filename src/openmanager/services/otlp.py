"""`Otlp`: what the OTLP/HTTP receiver and the ingest-token routes (`gateway.otlp`) need: the mapper onto
the pipeline (`sources.otlp.OtlpReceiver`, its counters registered on `/metrics` by the root), the
ingest tokens (`store.ingest_tokens`, 503 until the store is open), the decompressed-body cap, and the
backpressure the receiver answers 503 `busy` for."""

from __future__ import annotations

from collections.abc import Callable

from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.services import need
from openmanager.sources.otlp import OtlpReceiver
from openmanager.store.db import Store
from openmanager.store.ingest_tokens import IngestToken, IngestTokenStore


class Otlp:
    def __init__(self, pipeline: Pipeline, log_writer: LogWriter, *, store: Callable[[], Store | None],
                 max_decompressed_bytes: int) -> None:
        self.receiver = OtlpReceiver(pipeline)
        self.max_decompressed_bytes = max_decompressed_bytes
        self._pipeline = pipeline
        self._log_writer = log_writer
        self._store = store
        self._tokens: IngestTokenStore | None = None

    def _token_store(self) -> IngestTokenStore:
        if self._tokens is None:
            self._tokens = IngestTokenStore(need(self._store(), "the hub"))
        return self._tokens

    # backpressure: the exporter retries after Retry-After
    def metrics_busy(self) -> bool:
        """Half the pipeline's publish queue is waiting."""
        return self._pipeline.backlogged

    def logs_busy(self) -> bool:
        """The log writer (the store) is behind, or half the publish queue is waiting."""
        return self._log_writer.behind() or self._pipeline.backlogged

    async def logs_stored(self) -> bool:
        """Wait until the log records delivered before this call are published and written; False when
        some could not be stored."""
        await self._pipeline.barrier()
        return await self._log_writer.barrier()

    # ingest tokens
    async def authenticate(self, token: str | None) -> IngestToken | None:
        return await self._token_store().authenticate(token)

    async def list_tokens(self) -> list[IngestToken]:
        return await self._token_store().list()

    async def create_token(self, name: str) -> tuple[IngestToken, str]:
        """A new token named `name`: its record and the token itself (shown once)."""
        tokens = self._token_store()
        token = await tokens.create(name)
        record = next(t for t in await tokens.list() if t.name == name)
        return record, token

    async def revoke_token(self, name: str) -> IngestToken:
        return await self._token_store().revoke(name)


__all__ = ["Otlp"]

"""`Otlp`: what the OTLP/HTTP receiver and the ingest-token routes (`gateway.otlp`) need: the mapper onto
the pipeline (`sources.otlp.OtlpReceiver`), the ingest tokens (`store.ingest_tokens`, 503 until the store
is open), each token's rate limits (`core.quota.SenderLimits`: requests, and data points and log records),
the decompressed-body cap, and the backpressure the receiver answers 503 `busy` for. A Prometheus
collector (registered on `/metrics` by the root): the receiver's counters and the requests refused by
the rate limits."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from openmanager.core.quota import Quota, Refusal, SenderLimits
from openmanager.core.series import SeriesPolicy
from openmanager.pipeline.logwriter import LogWriter
from openmanager.pipeline.pipeline import Pipeline
from openmanager.services import need
from openmanager.sources.otlp import OtlpReceiver
from openmanager.store.db import Store
from openmanager.store.ingest_tokens import IngestToken, IngestTokenStore

Signal = Literal["metrics", "logs"]
NO_LIMIT = Quota(0, 0)


class Otlp(Collector):
    def __init__(self, pipeline: Pipeline, log_writer: LogWriter, *, store: Callable[[], Store | None],
                 max_decompressed_bytes: int, requests: Quota = NO_LIMIT, items: Quota = NO_LIMIT,
                 series_policy: SeriesPolicy | None = None,
                 clock_ms: Callable[[], float] = lambda: time.monotonic() * 1000) -> None:
        self.receiver = OtlpReceiver(pipeline, policy=series_policy)
        self.max_decompressed_bytes = max_decompressed_bytes
        self.limits: SenderLimits[int] = SenderLimits(requests, items)
        self.throttled: dict[tuple[Signal, str, str], int] = {}  # (signal, limit, token name) -> refused
        self._clock_ms = clock_ms
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

    # rate limits per ingest token
    def admit(self, token: IngestToken, signal: Signal) -> Refusal | None:
        """None when `token` may send a request now (one request is counted), else the limit it is over
        and how long to wait; refusals are counted on /metrics."""
        refusal = self.limits.admit(token.id, self._clock_ms())
        if refusal is not None:
            key = (signal, refusal.limit, token.name)
            self.throttled[key] = self.throttled.get(key, 0) + 1
        return refusal

    def charge(self, token: IngestToken, items: int) -> None:
        """Charge the data points or log records an admitted request carried."""
        self.limits.charge(token.id, items, self._clock_ms())

    def collect(self) -> Iterator[Any]:
        yield from self.receiver.collect()
        throttled = CounterMetricFamily("openmanager_otlp_throttled", "OTLP/HTTP requests refused (429) by an "
                                        "ingest token's rate limits", labels=["signal", "limit", "token"])
        for (signal, limit, name), n in sorted(self.throttled.items()):
            throttled.add_metric([signal, limit, name], n)
        yield throttled

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


__all__ = ["IngestToken", "Otlp", "Signal"]

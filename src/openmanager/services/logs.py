"""`Logs`: the stored log records the log search reads."""

from __future__ import annotations

from collections.abc import Callable

from openmanager.store.db import StoreError
from openmanager.store.logs import LogStore


class Logs:
    def __init__(self, store: Callable[[], LogStore | None]) -> None:
        self._store = store

    def store(self) -> LogStore | None:
        """The log store, or None until the hub has opened it (the search answers 503 `not_ready`)."""
        return self._store()


__all__ = ["Logs", "StoreError"]

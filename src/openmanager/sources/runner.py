"""Running one source: `run_source` runs it, runs it again with backoff after a transient error, and
disables it (while the others run) after any other error, keeping its status in a shared mapping that
readiness reads (`running`, `retrying: ...`, `failed: ...`, `stopped`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping

from openmanager.core.backoff import EQUAL_JITTER, Backoff
from openmanager.sources.base import Source, SourceSink

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
"""A source that fails with a transient error (OSError: EMFILE, a refused connection ...; a timeout) is
run again after RETRY_FIRST_S, doubled per failure in a row up to RETRY_MAX_S, with jitter; a run that
lasted longer than RETRY_MAX_S starts the count again."""


async def run_source(source: Source, sink: SourceSink, status: MutableMapping[str, str]) -> None:
    """Run `source` into `sink`; after a transient error (an OSError, a timeout) run it again with backoff
    (its status `retrying: ...` meanwhile); any other error disables it while the others run."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            await source.run(sink)
            status[source.name] = "stopped"
            return
        except asyncio.CancelledError:
            raise
        except (OSError, TimeoutError) as exc:
            failures = 1 if time.monotonic() - started > RETRY_MAX_S else failures + 1
            delay = Backoff(RETRY_FIRST_S, RETRY_MAX_S, EQUAL_JITTER).delay(failures - 1)
            reason = str(exc) or type(exc).__name__
            status[source.name] = f"retrying: {reason} ({failures} failures in a row, next attempt in {delay:.1f}s)"
            log.warning("source %s failed (%s); trying again in %.1fs", source.name, exc, delay,
                        exc_info=failures == 1)
            await asyncio.sleep(delay)
            status[source.name] = "running"
        except Exception as exc:
            status[source.name] = f"failed: {exc}"
            log.exception("source %s failed; disabled while the others run", source.name)
            return

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubproc import HubProcess

TICK = "0.25"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for a module's read-only tests: 8 simulated servers, no local host, a fast tick."""
    proc = HubProcess(Path(tmp_path_factory.mktemp("hub")), "--servers", "8", "--seed", "7", "--tick", TICK,
                      "--no-local")
    proc.start()
    yield proc
    proc.stop()

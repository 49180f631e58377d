from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.hubproc import HubProcess


@pytest.fixture(scope="package")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    """One hub for the tests that neither restart nor overload it: 8 simulated servers, 0.25 s tick."""
    proc = HubProcess(Path(tmp_path_factory.mktemp("hub")), "--servers", "8", "--seed", "7", "--tick", "0.25",
                      "--no-local")
    proc.start()
    yield proc
    proc.stop()

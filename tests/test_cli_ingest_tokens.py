"""`openmanager ingest-tokens create|list|revoke` as a user runs them (subprocesses on a data directory)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openmanager", "ingest-tokens", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_create_prints_the_token_alone_then_list_and_revoke(tmp_path: Path) -> None:
    data = str(tmp_path)
    created = _run("create", "collector-1", "--data-dir", data)
    assert created.returncode == 0, created.stderr
    assert created.stdout.count("\n") == 1 and created.stdout.startswith("omi_")  # the token alone
    assert "shown only this once" in created.stderr and "/v1/metrics" in created.stderr
    again = _run("create", "collector-1", "--data-dir", data)
    assert again.returncode == 1 and "exists" in again.stderr and again.stdout == ""
    listed = _run("list", "--json", "--data-dir", data)
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["name"] == "collector-1" and row["status"] == "active"
    assert created.stdout.strip() not in listed.stdout
    revoked = _run("revoke", "collector-1", "--data-dir", data)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert "revoked" in _run("list", "--data-dir", data).stdout
    missing = _run("revoke", "nobody", "--data-dir", data)
    assert missing.returncode == 1 and "no ingest token" in missing.stderr

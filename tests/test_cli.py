"""The `openmanager` command's hints and help text, as a user sees them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from openmanager.cli import agent_hub_address, reflow_help
from openmanager.config import Settings


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "openmanager", *args], capture_output=True, text=True, timeout=60,
                          env=env, check=True)


def test_agents_create_prints_the_hubs_real_address(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMANAGER_")}
    out = _run("agents", "create", "web-07", "--data-dir", str(tmp_path), env=env | {"OPENMANAGER_PORT": "8123"})
    assert out.stdout.strip() and "--hub http://127.0.0.1:8123 " in out.stderr, out.stderr
    assert "<this hub>" not in out.stderr and "loopback only" in out.stderr
    out = _run("agents", "create", "web-08", "--data-dir", str(tmp_path),
               env=env | {"OPENMANAGER_PUBLIC_URL": "https://hub.example.com/"})
    assert "--hub https://hub.example.com " in out.stderr and "loopback" not in out.stderr, out.stderr


def test_wildcard_bind_names_this_machine() -> None:
    import socket

    url, note = agent_hub_address(Settings.load({"host": "0.0.0.0", "port": 9000}))
    assert url == f"http://{socket.gethostname()}:9000" and note == ""


def test_help_text_wraps_at_words() -> None:
    assert reflow_help("""First line
    goes on.

    Second paragraph, which
    breaks here.""") == "First line goes on.\n\nSecond paragraph, which breaks here."
    env = dict(os.environ, COLUMNS="200")
    out = _run("agent", "--help", env=env).stdout
    # the second paragraph of `agent`'s docstring is one line at this width, not broken where the source is
    assert "so a hub restart or a network cut loses nothing" in out, out

"""Every shell and Python example in README.md and docs/*.md, run as pasted against a real hub, so the
docs cannot drift from what the hub does.

The rules (docs/architecture.md, "Documented examples are tested"):

- A fenced block whose info string is `sh`, `bash` or `python` is an example and runs. One written
  ```` ```sh no-test ```` (or `python no-test`) does not: that marker is for what cannot run in a test —
  building or starting a hub (`make`, `serve`), an agent on another machine, system administration
  (systemd, useradd, backups), password prompts, addresses off this machine. Other fences (json, toml,
  output) are not examples. docs/benchmarks.md is not run at all: its commands are the benchmarks
  themselves (minutes each; `make bench`).
- One hub (a simulated fleet) serves every example, in document order; each runs in a directory whose
  `data/` is the hub's data directory, so `TOKEN=$(cat data/admin_token)` and `openmanager agents ...`
  find the hub as they would beside `make run`. `127.0.0.1:8000` is replaced by the hub's port; `$TOKEN`
  and `$PASSWORD` are set.
- Shell: `bash -euo pipefail`; `curl` fails on an HTTP error status (`--fail-with-body`); a streaming
  command (`curl -N`, `openmanager watch`) runs for a few seconds and is then stopped.
- Python: run as a script; it passes when it exits with status 0, or when it has printed its first line
  and is then stopped by PID (examples that stream until interrupted).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.hubproc import HubProcess

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = {"benchmarks.md": "its commands are the benchmarks themselves (minutes each; make bench)"}
RUNNABLE = {"sh", "bash", "python"}
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```", re.S | re.M)
SHELL_TIMEOUT_S = 30
PYTHON_TIMEOUT_S = 40
PASSWORD = "correct horse battery staple"

PRELUDE = r"""
TOKEN=$(cat data/admin_token)
PASSWORD=$OM_PASSWORD
openmanager() {
  if [ "${1:-}" = watch ]; then  # a live stream: its first lines, then Ctrl-C
    set +o pipefail
    timeout -s INT 5 "$OM_PY" -m openmanager "$@" | head -n 3
    local status=${PIPESTATUS[0]}
    set -o pipefail
    case "$status" in 0|124|141) ;; *) echo "openmanager watch exited with $status" >&2; return 1 ;; esac
  else
    "$OM_PY" -m openmanager "$@"
  fi
}
curl() {
  local arg
  for arg in "$@"; do
    if [ "$arg" = -N ]; then  # a stream: a few seconds of it
      local status=0
      command curl -sS --fail-with-body --max-time 3 "$@" | head -c 2000 || status=$?
      case "$status" in 0|28) echo; return 0 ;; *) return "$status" ;; esac
    fi
  done
  command curl -sS --fail-with-body "$@"
  echo
}
"""


def examples() -> Iterator[tuple[str, str, str]]:
    """(id "file:line", language, code) for every runnable example, in document order."""
    for path in DOCS:
        if path.name in NOT_RUN:
            continue
        text = path.read_text()
        for match in FENCE.finditer(text):
            words = match.group(1).split()
            if not words or words[0] not in RUNNABLE or "no-test" in words[1:]:
                continue
            line = text.count("\n", 0, match.start()) + 1
            yield f"{path.relative_to(ROOT)}:{line}", words[0], match.group(2)


EXAMPLES = list(examples())


@pytest.fixture(scope="module")
def docs_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, Path]]:
    workdir = tmp_path_factory.mktemp("docs")
    hub = HubProcess(workdir / "data", "--servers", "20", "--seed", "3", "--tick", "0.5", "--no-local")
    hub.start()
    token_file = workdir / "data" / "admin_token"
    if not token_file.exists() or token_file.read_text().strip() != hub.token:
        token_file.write_text(hub.token + "\n")
    yield hub, workdir
    hub.stop()


def _env(hub: HubProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENMANAGER_")}
    src = str(ROOT / "src")
    env.update(PYTHONPATH=src + os.pathsep + env.get("PYTHONPATH", ""), OM_PY=sys.executable,
               OM_PASSWORD=PASSWORD, OPENMANAGER_URL=hub.base,
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    return env


def _localise(code: str, hub: HubProcess) -> str:
    return code.replace("127.0.0.1:8000", f"127.0.0.1:{hub.port}")


def _run_shell(code: str, hub: HubProcess, workdir: Path) -> None:
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", PRELUDE + _localise(code, hub)], cwd=workdir,
                          env=_env(hub), capture_output=True, text=True, timeout=SHELL_TIMEOUT_S)
    assert proc.returncode == 0, (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                                  f"stderr:\n{proc.stderr[-3000:]}")
    assert "Traceback" not in proc.stderr, proc.stderr


def _run_python(code: str, hub: HubProcess, workdir: Path, name: str) -> None:
    script = workdir / f"example_{re.sub(r'[^A-Za-z0-9]+', '_', name)}.py"
    script.write_text(_localise(code, hub))
    out_path = script.with_suffix(".out")
    with out_path.open("w") as out:
        proc = subprocess.Popen([sys.executable, str(script)], cwd=workdir, env=_env(hub), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + PYTHON_TIMEOUT_S
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if out_path.read_text().strip():  # it runs and speaks: enough for an example that streams
                break
            time.sleep(0.1)
        if proc.poll() is None:
            assert out_path.read_text().strip(), f"no output within {PYTHON_TIMEOUT_S}s"
        output = out_path.read_text()
        assert "Traceback" not in output, output
        if proc.poll() is not None:
            assert proc.returncode == 0, f"exit {proc.returncode}:\n{output}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize(("where", "language", "code"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_documented_example_runs_as_pasted(docs_hub: tuple[HubProcess, Path], where: str, language: str,
                                           code: str) -> None:
    hub, workdir = docs_hub
    if language == "python":
        _run_python(code, hub, workdir, where)
    else:
        _run_shell(code, hub, workdir)


def test_the_examples_are_found_and_the_skips_are_few() -> None:
    ids = [e[0] for e in EXAMPLES]
    assert any(i.startswith("README.md") for i in ids) and any(i.startswith("docs/") for i in ids)
    assert sum(1 for _, language, _ in EXAMPLES if language == "python") >= 4
    skipped = sum(len(re.findall(r"^```\w+ no-test", p.read_text(), re.M)) for p in DOCS if p.name not in NOT_RUN)
    assert skipped <= 20, f"{skipped} examples marked no-test: keep the skip list small"


def test_a_json_body_needs_its_content_type(docs_hub: tuple[HubProcess, Path]) -> None:
    hub, _ = docs_hub
    auth = {"Authorization": f"Bearer {hub.token}"}
    body = b'{"condition": "cpu > 90"}'
    for headers in ({}, {"Content-Type": "application/x-www-form-urlencoded"}, {"Content-Type": "text/plain"}):
        r = httpx.post(hub.base + "/api/v1/rules/validate", content=body, headers=auth | headers, timeout=10)
        assert r.status_code == 415, r.text
        error = r.json()["error"]
        assert error["code"] == "unsupported_media_type" and "Content-Type: application/json" in error["message"]
    for content_type in ("application/json", "application/json; charset=utf-8"):
        r = httpx.post(hub.base + "/api/v1/rules/validate", content=body,
                       headers=auth | {"Content-Type": content_type}, timeout=10)
        assert r.status_code == 200 and r.json()["valid"] is True, r.text

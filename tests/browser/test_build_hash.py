"""The committed dashboard build (`src/openmanager/web/static/`) matches its sources in `web/`.

`make web` (web/build.mjs) writes `build-hash.txt`: a hash of the sources and one of each built file. This
recomputes both in Python, so no Node.js is needed: a source edited without rebuilding, or a built file
edited by hand, fails here. Fix it with `make web` and commit the result.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
STATIC = ROOT / "src" / "openmanager" / "web" / "static"
# What web/build.mjs reads (its SOURCES); a folder means every file under it.
SOURCES = ("build.mjs", "package.json", "package-lock.json", "tsconfig.json", "tsconfig.sw.json", "src")
OUTPUTS = ("app.css", "app.js", "index.html", "sw.js")


def source_files() -> list[str]:
    out: list[str] = []
    for name in SOURCES:
        path = WEB / name
        if path.is_dir():
            out.extend(p.relative_to(WEB).as_posix() for p in path.rglob("*") if p.is_file())
        else:
            out.append(name)
    return sorted(out)


def source_hash() -> str:
    """sha256 over "<path>\\n<sha256 of the file>\\n" for each source, sorted by path (as build.mjs does)."""
    h = hashlib.sha256()
    for rel in source_files():
        h.update(f"{rel}\n{hashlib.sha256((WEB / rel).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def recorded() -> dict[str, str]:
    lines = (STATIC / "build-hash.txt").read_text().splitlines()
    return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#"))


def test_the_committed_build_was_made_from_the_current_sources() -> None:
    assert recorded()["sources"] == source_hash(), (
        "web/ changed since the dashboard was built: run `make web` and commit src/openmanager/web/static/")


def test_the_built_files_are_the_ones_the_build_wrote() -> None:
    rec = recorded()
    assert sorted(k for k in rec if k != "sources") == sorted(OUTPUTS)
    for name in OUTPUTS:
        digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()
        assert rec[name] == digest, f"{name} differs from what `make web` wrote: rebuild it, do not edit it"


def test_the_page_loads_this_build_and_keeps_the_browser_client() -> None:
    html = (STATIC / "index.html").read_text()
    tag = source_hash()[:12]
    assert f"/static/app.js?v={tag}" in html and f"/static/app.css?v={tag}" in html
    # The dashboard imports the browser client as a separate module, which stays hand-written.
    assert 'from"/static/openmanager.js"' in (STATIC / "app.js").read_text().replace(" ", "")
    assert (STATIC / "openmanager.js").is_file()

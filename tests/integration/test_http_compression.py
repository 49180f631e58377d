"""HTTP compression: brotli or gzip for REST and static files, never for `/sse`."""

from __future__ import annotations

import gzip

import brotli
import httpx
import pytest

from openmanager.gateway.compression import accepted_encoding
from tests.integration.hubproc import HubProcess


def test_accepted_encoding_follows_q_values() -> None:
    assert accepted_encoding("gzip, deflate, br") == "br"
    assert accepted_encoding("gzip;q=1.0, br;q=0.5") == "gzip"
    assert accepted_encoding("br;q=0, gzip") == "gzip"
    assert accepted_encoding("identity") is None
    assert accepted_encoding("") is None


@pytest.mark.parametrize(("accept", "expected"), [("br", "br"), ("gzip", "gzip"), ("identity", None)])
def test_rest_responses_are_compressed(hub: HubProcess, accept: str, expected: str | None) -> None:
    headers = {"Authorization": f"Bearer {hub.token}", "Accept-Encoding": accept}
    with httpx.Client(base_url=hub.base, timeout=10) as http:
        r = http.get("/api/v1/servers", headers=headers)
        assert r.status_code == 200
        assert r.headers.get("content-encoding") == expected
        raw = r.read() if expected is None else None
        assert raw is None or len(r.json()["servers"]) == 8
        assert len(r.json()["servers"]) == 8  # httpx decodes br and gzip
        with http.stream("GET", "/api/v1/servers", headers=headers) as s:
            body = b"".join(s.iter_raw())
        plain = {"br": brotli.decompress, "gzip": gzip.decompress}.get(expected or "", lambda b: b)(body)
        assert len(plain) > len(body) or expected is None
        assert "accept-encoding" in r.headers.get("vary", "").lower() or expected is None


def test_static_files_are_compressed(hub: HubProcess) -> None:
    r = httpx.get(f"{hub.base}/", headers={"Accept-Encoding": "br"}, timeout=10)
    assert r.status_code == 200 and r.headers["content-encoding"] == "br"


def test_sse_is_never_compressed(hub: HubProcess) -> None:
    headers = {"Authorization": f"Bearer {hub.token}", "Accept-Encoding": "gzip, br"}
    with httpx.stream("GET", f"{hub.base}/sse?topics=metrics", headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert "content-encoding" not in r.headers
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():  # readable as it comes, uncompressed
            if line.startswith("event: metrics"):
                break

"""The OpenAPI document is truthful: Schemathesis fuzzes every operation of a real hub over HTTP, as
admin, operator and viewer, and finds no server error and no answer the document does not declare
(status code, content type, response body schema, headers).

Left out, because they are not JSON request/response operations: `/sse` (an endless event stream, tested
in test_sse.py), and, absent from the document anyway, `/ws` (WebSocket: test_ws_fuzz.py), `/` and
`/static/` (files). Examples per operation are bounded (`MAX_EXAMPLES`) so the whole run stays short."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.hubproc import HubProcess
from tests.integration.test_users import add_user, token_for

MAX_EXAMPLES = 5
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
NOT_JSON = ("/sse",)
ACCESS_STATUS = re.compile(r'" (\d+) [0-9.]+ms$')


@pytest.fixture(scope="module")
def fuzzed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HubProcess, dict[str, str]]]:
    """One hub for the module, and a token for each role."""
    hub = HubProcess(Path(tmp_path_factory.mktemp("openapi")), "--servers", "3", "--seed", "3", "--tick", "0.5",
                     "--no-local").start()

    async def tokens() -> dict[str, str]:
        async with httpx.AsyncClient(base_url=hub.base, headers={"Authorization": f"Bearer {hub.token}"},
                                     timeout=10) as admin:
            await add_user(admin, "fuzz-operator", "operator")
            await add_user(admin, "fuzz-viewer", "viewer")
        return {"admin": hub.token, "operator": (await token_for(hub, "fuzz-operator"))[0],
                "viewer": (await token_for(hub, "fuzz-viewer"))[0]}

    try:
        yield hub, asyncio.run(tokens())
    finally:
        hub.stop()
    assert "Traceback" not in hub.log(), hub.log()[-4000:]


def test_every_operation_conforms(fuzzed_hub: tuple[HubProcess, dict[str, str]]) -> None:
    """Each generated request (valid ones, and ones that break the schema) is sent as a viewer, an
    operator and the admin, in that order, so that a change the admin makes cannot hide what the others
    would have been answered. Every failure of every operation is collected, then reported together."""
    hub, tokens = fuzzed_hub
    config = schemathesis.Config.from_dict({"base-url": hub.base, "request-timeout": 10})
    schema = schemathesis.openapi.from_url(f"{hub.base}/openapi.json", config=config,
                                           headers={"Authorization": f"Bearer {tokens['admin']}"})
    failures: list[str] = []
    operations = 0
    session = requests.Session()  # one keep-alive connection for the whole run
    for result in schema.exclude(path=list(NOT_JSON)).get_all_operations():
        operation = result.ok()
        operations += 1
        # a request with neither query nor body has nothing to break (any path segment is a string)
        breakable = len(operation.query) + len(operation.body) > 0
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if breakable else (GenerationMode.POSITIVE,):

            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                for role in ("viewer", "operator", "admin"):
                    case.call_and_validate(headers={"Authorization": f"Bearer {tokens[role]}"}, checks=CHECKS,
                                           session=session)

            try:
                send()
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a group: collected, reported below
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    assert operations >= 40, f"only {operations} operations in the document"
    assert not failures, "\n\n".join(failures)
    _assert_access_log_has_real_statuses(hub, at_least=100)  # the fuzzing sent hundreds of requests


def _assert_access_log_has_real_statuses(hub: HubProcess, *, at_least: int) -> None:
    """Every `/api/` line of the hub's access log so far carries a real status: no 0 (an answer the log
    missed) and no 5xx; and there are more than `at_least` of them."""
    lines = hub.log().splitlines()
    access = [ACCESS_STATUS.search(line) for line in lines if "openmanager.access" in line and "/api/" in line]
    statuses = [m.group(1) for m in access if m]
    assert len(statuses) == len(access) > at_least
    assert not [s for s in statuses if s == "0" or s.startswith("5")], statuses


HUGE = "9" * 5000
BAD_QUERIES = [  # issue 19's reproducers: each once answered 500 (or a wrong record)
    ("/api/v1/logs", {"since": "4\u00b3"}),
    ("/api/v1/logs", {"until": "\u00b2"}),
    ("/api/v1/logs", {"since": "99999999999999999999999999"}),
    ("/api/v1/logs", {"since": "99999999999999999999d"}),
    ("/api/v1/logs", {"since": HUGE}),
    ("/api/v1/logs", {"contains": "a\x00b"}),
    ("/api/v1/logs", {"server": "web\x00*"}),
    ("/api/v1/servers/{server}/history", {"since": "\u00b9"}),
    ("/api/v1/servers/{server}/history", {"since": "99999999999999d"}),
    ("/api/v1/servers/{server}/history", {"since": HUGE}),
    ("/api/v1/servers/{server}/history", {"step": "0.0001s"}),
]
BAD_BODIES = [
    ("/api/v1/rules/backtest", {"rule": {"name": "b", "condition": "cpu > 50"}, "since": "1\u00b3"}),
    ("/api/v1/rules/backtest", {"rule": {"name": "b", "condition": "cpu > 50"}, "since": HUGE}),
    ("/api/v1/rules/backtest", {"rule": {"name": "b", "condition": "cpu > 50"}, "since": 10**30}),
    ("/api/v1/silences", {"servers": ["web-*"], "starts_at": 10**30, "ends_at": 10**30 + 1, "comment": "x"}),
]

BAD_JSON = [
    ("/api/v1/silences", '{"servers": ["\\ud800"], "duration": "1h", "comment": "lone surrogate"}'),
    ("/api/v1/silences", '{"servers": ["a"], "duration": "1h", "comment": "\\udc00"}'),
    ("/api/v1/rules/backtest", '{"rule": {"name": "b", "condition": "cpu > 50"}, "since": NaN}'),
    ("/api/v1/rules/backtest", '{"rule": {"name": "b", "condition": "cpu > 50"}, "since": 1e400}'),
    ("/api/v1/rules/backtest", '{"rule": {"name": "b", "condition": "cpu > 50"}, "since": ' + HUGE + "}"),
]


def test_out_of_range_input_is_a_400_and_logged_as_one(fuzzed_hub: tuple[HubProcess, dict[str, str]]) -> None:
    hub, tokens = fuzzed_hub
    seen = len(hub.log().splitlines())
    with httpx.Client(base_url=hub.base, headers={"Authorization": f"Bearer {tokens['operator']}"},
                      timeout=10) as http:
        server = http.get("/api/v1/servers").json()["servers"][0]["id"]
        answers = [http.get(path.format(server=server), params=params) for path, params in BAD_QUERIES]
        answers += [http.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})
                    for path, body in BAD_BODIES]
        for answer in answers:
            assert answer.status_code == 400, (answer.request.url, answer.text)
            error = answer.json()["error"]
            assert error["code"] in ("invalid_parameter", "invalid_silence"), error
            assert len(error["message"]) < 300, error
        for path, body in BAD_JSON:  # refused as it is read, before anything is stored
            answer = http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", answer.text
        assert http.get("/api/v1/silences").json()["silences"] == []
        for before in ("99999999999999999999999", "-1", "\u00b9", HUGE):
            answer = http.get("/api/v1/notifications", params={"before": before})
            assert answer.status_code == 422 and answer.json()["error"]["code"] == "invalid_request", answer.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and '"POST /api/v1/silences" 400' not in hub.log():
        time.sleep(0.05)
    lines = hub.log().splitlines()
    logged = [line for line in lines[seen:] if '"GET /api/v1/logs"' in line]
    assert len(logged) == 7 and all('" 400 ' in line for line in logged), logged
    _assert_access_log_has_real_statuses(hub, at_least=len(BAD_QUERIES) + len(BAD_BODIES))

"""`/static/openmanager.js` and the dashboard that uses it in a real headless Chromium against a real hub.

Needs Chromium (Debian's `chromium`, which `.ci/run` installs). Without it the module is skipped on a
developer's machine and fails on CI (`CI` set), so a missing browser cannot pass unnoticed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from openmanager.core.delta import quantize_sample
from tests.browser.cdp import Chromium, Page
from tests.integration.hubproc import Client, HubProcess

CHROMIUM = os.environ.get("OPENMANAGER_CHROMIUM", "/usr/bin/chromium")

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} not found: install Debian's `chromium` to run the browser tests "
                "(on CI they fail instead)", allow_module_level=True)

STATUSES = {"healthy", "warning", "critical", "offline", "maintenance"}
SERVERS = 20  # the shared hub's fleet: enough for a few background log lines a second


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"CI is set but {CHROMIUM} is missing: .ci/run must install Debian's `chromium`")
    browser = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium") / "profile").start()
    try:
        yield browser
    finally:
        browser.stop()
        shutil.rmtree(browser.profile_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    proc = HubProcess(tmp_path_factory.mktemp("hub"), "--servers", str(SERVERS), "--tick", "0.2", "--no-local").start()
    yield proc
    proc.stop()


@pytest.fixture
async def page(chromium: Chromium) -> AsyncIterator[Page]:
    """A fresh tab on about:blank, closed after the test (the browser and its cookies are shared)."""
    target = await asyncio.to_thread(chromium.new_page)
    tab = await Page.connect(target["webSocketDebuggerUrl"])
    try:
        yield tab
    finally:
        await tab.close()
        await asyncio.to_thread(chromium.close_page, target["id"])


def seq(cursor: str) -> int:
    return int(cursor.rsplit("-", 1)[1])


def epoch(cursor: str) -> str:
    return cursor.rsplit("-", 1)[0]


def transitions(states: list[dict[str, Any]]) -> list[str]:
    """State names with repeats collapsed (each failed attempt re-announces `reconnecting`)."""
    return [name for name, _ in itertools.groupby(s["state"] for s in states)]


# A HubClient in the page (%s: its options) subscribed to every log record and to metrics, recording
# into `window.t` what it delivers. Resolves once both subscriptions are confirmed.
SETUP = """(async () => {
  const { HubClient } = await import("/static/openmanager.js");
  const t = window.t = { states: [], subscribed: [], resets: [], logs: [], metrics: [], snapshots: [] };
  const c = t.client = new HubClient(%s);
  c.on("state", (d) => t.states.push(d));
  c.on("message", (m) => { if (m.type === "subscribed") t.subscribed.push(m); });
  const logs = c.subscribe("logs", {
    onEvent: (d, m) => t.logs.push(m.cursor), onReset: (i) => t.resets.push(i) });
  const metrics = c.subscribe("metrics", {
    onSnapshot: (d, m) => t.snapshots.push(m.cursor), onEvent: (d, m) => t.metrics.push(m.cursor),
    onReset: (i) => t.resets.push(i) });
  await c.connect();
  [t.logsSub, t.metricsSub] = await Promise.all([logs, metrics]);
  return true;
})()"""


async def test_page_shows_every_server_live_after_cookie_login(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/?token={hub.token}")
    assert await page.evaluate("location.pathname + location.search") == "/"  # the token left the URL
    assert await page.evaluate("document.cookie") == ""  # the session cookie is HttpOnly
    expected = {s["id"] for s in (await asyncio.to_thread(hub.get, "/api/v1/servers")).json()["servers"]}
    assert len(expected) == SERVERS
    # The dashboard keeps every server's latest sample (from the page's HubClient) and renders the cards in view.
    rows = await page.wait_for(
        f"""(() => {{
          const live = window.omApp && window.omApp.live;
          const conn = document.getElementById("conn");
          return live && live.servers.size === {SERVERS} && conn.dataset.state === "connected"
            && [...live.servers.values()].every((s) => s.sample.status)
            ? [...live.servers.values()].map((s) => [s.id, s.sample.status]) : null;
        }})()""",
        timeout=5,
    )
    assert {server for server, _ in rows} == expected
    assert {status for _, status in rows} <= STATUSES
    # Its metrics come in the delta encoding and still land as whole samples (at the encoding's precision:
    # whole milliseconds of response time, where the REST samples it starts from have decimals).
    live = "window.omApp.live"
    assert await page.evaluate(f"{live}.client.subscriptions.filter((s) => s.topic === 'metrics')"
                               ".map((s) => s.encoding)") == ["delta"]
    await page.wait_for(
        f"""{live}.metricsEvents >= 3 && [...{live}.servers.values()].every((s) =>
          ["cpu", "memory", "disk", "net_in", "net_out", "status"].every((k) => k in s.sample)
          && Number.isInteger(s.sample.response_time))""",
        timeout=5,
    )
    cards = await page.wait_for("(() => { const c = [...document.querySelectorAll('#fleet-grid .card:not([hidden])')];"
                                " return c.length && c.map((e) => e.dataset.status); })()", timeout=3)
    assert set(cards) <= STATUSES
    total = "document.querySelector('.summary-item[data-status=total] .count').textContent"
    await page.wait_for(f"{total} === '{SERVERS}'", timeout=3)
    conn = await page.wait_for(
        "(() => { const t = document.querySelector('#conn .conn-detail').textContent;"
        " return /RTT \\d+ ms/.test(t) && t; })()",
        timeout=3,
    )
    assert "msg/s" in conn
    assert page.exceptions == []
    assert page.console_errors == []


async def test_reconnects_and_restores_subscriptions_after_a_hub_restart(tmp_path: Path, page: Page) -> None:
    args = ("--servers", "20", "--tick", "0.2", "--no-local")
    hub = await asyncio.to_thread(HubProcess(tmp_path, *args).start)
    try:
        await page.navigate(f"{hub.base}/?token={hub.token}")  # cookie login: the client below uses it
        options = "{ backoffMin: 100, backoffMax: 1000, restartDelayMin: 100, restartDelayMax: 1000 }"
        await page.evaluate(SETUP % options)
        await page.wait_for("t.logs.length >= 2 && t.metrics.length >= 2", timeout=10)
        old_epoch = epoch(await page.evaluate("t.metrics.at(-1)"))

        await asyncio.to_thread(hub.stop)
        await page.wait_for("t.client.state === 'reconnecting'", timeout=5)
        line = await page.wait_for("(() => { const t = document.querySelector('#conn .conn-label').textContent;"
                                   " return t.startsWith('Reconnecting') && t; })()", timeout=5)
        assert re.match(r"Reconnecting · attempt \d+( · next try in \d+\.\d s|…)$", line), line
        hub = await asyncio.to_thread(HubProcess(tmp_path, *args, port=hub.port).start)

        # Nothing but the client itself restores the subscriptions.
        await page.wait_for(
            f"""t.client.state === 'open'
              && t.metrics.filter((c) => !c.startsWith('{old_epoch}-')).length >= 2
              && t.logs.filter((c) => !c.startsWith('{old_epoch}-')).length >= 1""",
            timeout=15,
        )
        t = await page.evaluate(
            "({states: t.states, resets: t.resets, snapshots: t.snapshots, subscribed: t.subscribed,"
            " logs: t.logs, metrics: t.metrics, logsCursor: t.logsSub.cursor, metricsCursor: t.metricsSub.cursor,"
            " attempts: Math.max(...t.states.map((s) => s.attempt))})"
        )
        assert transitions(t["states"]) == ["connecting", "open", "reconnecting", "open"]
        reconnecting = [s for s in t["states"] if s["state"] == "reconnecting"]
        assert all(0 <= s["nextDelayMs"] <= 1000 for s in reconnecting)
        assert [s["attempt"] for s in reconnecting] == list(range(1, len(reconnecting) + 1))
        new_epoch = epoch(t["metrics"][-1])
        assert new_epoch != old_epoch
        assert epoch(t["logsCursor"]) == epoch(t["metricsCursor"]) == new_epoch
        # The resubscriptions carried `since`, and the restarted hub could not recover them. A new epoch
        # is a reset for every topic, delta `metrics` included (unlike a resume in the same run).
        again = t["subscribed"][2:]
        assert sorted(m["topic"] for m in again) == ["logs", "metrics"]
        assert all(m["recovered"] is False for m in again)
        assert sorted(r["topic"] for r in t["resets"]) == ["logs", "metrics"]
        assert [epoch(c) for c in t["snapshots"]] == [old_epoch, new_epoch]
        for cursors in (t["logs"], t["metrics"]):
            for _, group in itertools.groupby(cursors, key=epoch):
                seqs = [seq(c) for c in group]
                assert seqs == sorted(set(seqs))
        # The page's own client comes back too: the hub closed with 1012, so it retries about every second.
        await page.wait_for("document.getElementById('conn').dataset.state === 'connected'", timeout=10)
        assert page.exceptions == []
    finally:
        await asyncio.to_thread(hub.stop)


async def test_resumes_without_gaps_or_duplicates_after_a_dropped_socket(tmp_path: Path, page: Page) -> None:
    hub = await asyncio.to_thread(HubProcess(tmp_path, "--servers", "100", "--tick", "0.1", "--no-local").start)
    try:
        await page.navigate(f"{hub.base}/healthz")  # a light document of the hub's origin
        # random: () => 1 makes the first retry wait the full 600 ms, so the hub surely publishes
        # log events that only the replay can deliver.
        await page.evaluate(SETUP % f"{{ token: '{hub.token}', backoffMin: 600, random: () => 1 }}")
        await page.wait_for("t.logs.length >= 5", timeout=10)
        await page.evaluate("t.before = t.logs.length; t.client.dropForTest(); true")
        await page.wait_for("t.states.some((s) => s.state === 'reconnecting')", timeout=5)
        await page.wait_for("t.client.state === 'open' && t.logs.length >= t.before + 15", timeout=10)
        t = await page.evaluate("({states: t.states, subscribed: t.subscribed, resets: t.resets, logs: t.logs,"
                                " before: t.before, dropped: t.client.duplicatesDropped})")
        assert transitions(t["states"]) == ["connecting", "open", "reconnecting", "open"]
        assert t["states"][2]["nextDelayMs"] == 600
        assert t["resets"] == []  # metrics (delta) came back with a fresh snapshot: no reset in the same run
        resumed = [m for m in t["subscribed"][2:] if m["topic"] == "logs"]
        assert len(resumed) == 1 and resumed[0]["recovered"] is True
        logs = t["logs"]
        assert len({epoch(c) for c in logs}) == 1
        seqs = [seq(c) for c in logs]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap or duplicate in the logs cursors"
        # Some events came from the replay: published while the client was away.
        replayed_up_to = seq(resumed[0]["cursor"])
        assert seqs[t["before"] - 1] < replayed_up_to
        assert page.exceptions == []
    finally:
        await asyncio.to_thread(hub.stop)


async def test_a_bad_token_ends_closed_without_retrying(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    result = await page.evaluate("""(async () => {
      const { HubClient } = await import("/static/openmanager.js");
      let sockets = 0;
      const Native = window.WebSocket;
      window.WebSocket = class extends Native { constructor(...a) { super(...a); sockets += 1; } };
      const states = [];
      const c = new HubClient({ token: "wrong", backoffMin: 10, backoffMax: 50 });
      c.on("state", (d) => states.push(d));
      const pending = c.subscribe("logs").then(() => "subscribed", (e) => e.code);
      const connected = await c.connect().then(() => "connected", (e) => e.code);
      const late = await c.subscribe("metrics").then(() => "subscribed", (e) => e.code);
      return { connected, pending: await pending, late, states, state: c.state, reason: c.reason,
               sockets, retryScheduled: c._retryTimer !== null };
    })()""")
    assert result["connected"] == "closed" and result["pending"] == "closed" and result["late"] == "closed"
    assert result["state"] == "closed"
    assert "4401" in result["reason"]
    assert [s["state"] for s in result["states"]] == ["connecting", "closed"]
    assert "4401" in result["states"][-1]["reason"]
    assert result["sockets"] == 1 and not result["retryScheduled"]
    assert page.exceptions == []


async def test_subscribe_errors_reject_with_the_hub_code_and_the_helpers_stream(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    result = await page.evaluate(f"""(async () => {{
      const {{ HubClient, MetricsStream, LogStream }} = await import("/static/openmanager.js");
      const c = new HubClient({{ token: "{hub.token}" }});
      await c.connect();
      const bad = await c.subscribe("metrics", {{ filter: {{ where: "cpu >" }} }}).then(() => null, (e) => e);
      const unknown = await c.subscribe("nope").then(() => null, (e) => e.code);
      const fleet = [];
      const sub = await c.subscribe("fleet", {{ onSnapshot: (d) => fleet.push(d) }});
      const twin = await c.subscribe("fleet");
      const metrics = new MetricsStream({{ client: c }});
      await metrics.subscribe("metrics", {{ metrics: ["cpu"] }});
      const logs = new LogStream({{ token: "{hub.token}" }});
      const records = [];
      logs.onLog((r) => records.push(r));
      await logs.connect();
      const deadline = performance.now() + 8000;
      while ((metrics.servers.size < {SERVERS} || records.length < 1) && performance.now() < deadline) {{
        await new Promise((r) => setTimeout(r, 50));
      }}
      const out = {{ code: bad.code, name: bad.name, position: bad.detail.position, unknown,
        shared: sub.sub === twin.sub, fleetTotal: fleet[0].total, servers: metrics.servers.size,
        sample: [...metrics.servers.values()][0], records: records.length }};
      await sub.unsubscribe();
      c.close();
      logs.close();
      out.states = [c.state, logs.client.state];
      return out;
    }})()""")
    assert result["code"] == "invalid_expression" and result["name"] == "HubError"
    assert isinstance(result["position"], int)
    assert result["unknown"] == "unknown_topic"
    assert result["shared"] and result["fleetTotal"] == SERVERS
    assert result["servers"] == SERVERS and set(result["sample"]) == {"cpu", "status"}
    assert result["records"] >= 1
    assert result["states"] == ["closed", "closed"]
    assert page.exceptions == []


# --- the `delta` encoding of `metrics` -------------------------------------------------------------------

# Records every frame the page's WebSockets send into `window.sent` (parsed), before a client opens one.
RECORD_SENT = """(() => {
  window.sent = [];
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) { window.sent.push(JSON.parse(data)); return send.call(this, data); };
  return true;
})()"""

# A HubClient (%s: its options) with `metrics` twice, by default (delta) and as `encoding: "json"`, plus
# `logs` and `fleet`. `t.delta` / `t.json`: cursor -> the servers delivered to onEvent; `t.raw`: the
# delta events as they came over the wire; `t.order`: deliveries of the delta subscription in order.
SETUP_DELTA = """(async () => {
  const { HubClient } = await import("/static/openmanager.js");
  const t = window.t = { delta: {}, json: {}, raw: {}, order: [], snapshots: [], resets: [], subscribed: [] };
  const c = t.client = new HubClient(%s);
  c.on("message", (m) => {
    if (m.type === "subscribed") t.subscribed.push(m);
    if (m.type === "event" && t.deltaSub && m.sub === t.deltaSub.sub) t.raw[m.cursor] = m.data.servers;
  });
  const onReset = (i) => t.resets.push(i);
  const delta = c.subscribe("metrics", {
    onSnapshot: (d, m) => {
      t.snapshots.push({ cursor: m.cursor, servers: d.servers });
      t.order.push(["snapshot", m.cursor]);
    },
    onEvent: (d, m) => { t.delta[m.cursor] = d.servers; t.order.push(["event", m.cursor]); },
    onReset });
  const json = c.subscribe("metrics", {
    encoding: "json", onEvent: (d, m) => { t.json[m.cursor] = d.servers; }, onReset });
  const logs = c.subscribe("logs", { onReset });
  const fleet = c.subscribe("fleet", { onReset });
  await c.connect();
  [t.deltaSub, t.jsonSub] = await Promise.all([delta, json, logs, fleet]);
  return { delta: t.deltaSub.sub, json: t.jsonSub.sub, encodings: [t.deltaSub.encoding, t.jsonSub.encoding] };
})()"""

# Delta events delivered after the delta subscription's n-th delivery that a json event of the same cursor
# can be compared with.
PAIRED_AFTER = """((n) => t.order.slice(n).filter(([k, c]) => k === "event" && t.json[c]).length)"""


async def hub_subs(hub: HubProcess) -> dict[str, str]:
    """The hub's `sub` of the unfiltered metrics shape in each encoding (the encoding is part of the shape)."""
    client = await Client.open(hub)
    try:
        delta = await client.subscribe("metrics", rid="d", encoding="delta")
        json_ = await client.subscribe("metrics", rid="j")
    finally:
        await client.close()
    return {"delta": delta["sub"], "json": json_["sub"]}


def paired(t: dict[str, Any], start: int) -> list[str]:
    """Cursors of the delta events from the `start`-th delivery on that the json subscription got too."""
    return [c for kind, c in t["order"][start:] if kind == "event" and c in t["json"]]


def assert_full_and_quantized(delta: dict[str, Any], json_: dict[str, Any], cursors: list[str]) -> None:
    """At each cursor the delta subscription delivered every server of the json one, each with every field,
    equal to the json sample at the precision the delta encoding keeps."""
    assert cursors
    for cursor in cursors:
        assert delta[cursor].keys() == json_[cursor].keys(), cursor
        for sid, sample in json_[cursor].items():
            assert delta[cursor][sid] == quantize_sample(sample), (cursor, sid)


async def test_metrics_subscribe_in_delta_and_deliver_full_samples(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    await page.evaluate(RECORD_SENT)
    subs = await page.evaluate(SETUP_DELTA % f"{{ token: '{hub.token}' }}")
    assert subs["encodings"] == ["delta", "json"]
    # The hub registered the default metrics subscription as its delta shape, the other as its json one.
    assert {"delta": subs["delta"], "json": subs["json"]} == await hub_subs(hub)
    await page.wait_for(f"{PAIRED_AFTER}(0) >= 10", timeout=10)
    t = await page.evaluate("({sent: window.sent, delta: t.delta, json: t.json, raw: t.raw, resets: t.resets})")

    subscribes = {(m["topic"], m.get("encoding")) for m in t["sent"] if m["type"] == "subscribe"}
    assert subscribes == {("metrics", "delta"), ("metrics", None), ("logs", None), ("fleet", None)}
    cursors = [c for c in t["delta"] if c in t["json"]]
    assert_full_and_quantized(t["delta"], t["json"], cursors)
    # On the wire most servers carried only some fields (uptime changes once a minute), yet every
    # delivered sample above was whole: the client filled the rest from its state.
    full = {sid: set(s) for sid, s in t["json"][cursors[0]].items()}
    partial = [(c, sid) for c in cursors for sid, fields in t["raw"][c].items() if set(fields) < full[sid]]
    assert len(partial) > len(cursors)
    assert t["resets"] == []
    assert page.exceptions == []


async def test_delta_state_is_replaced_by_snapshots_and_a_resume_is_no_reset(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    await page.evaluate(RECORD_SENT)
    await page.evaluate(SETUP_DELTA % f"{{ token: '{hub.token}', backoffMin: 50, backoffMax: 200 }}")
    await page.wait_for(f"{PAIRED_AFTER}(0) >= 3", timeout=10)

    # A mid-stream snapshot (what the hub sends a client that fell behind) replaces the state: here one
    # that says every uptime is -60 and adds a server "ghost". Later deltas build on it.
    injected = await page.evaluate("""(() => {
      const last = t.order.filter(([k]) => k === "event").at(-1)[1];
      const servers = { ghost: { cpu: 1, status: "healthy" } };
      for (const [id, s] of Object.entries(t.delta[last])) servers[id] = { ...s, uptime: -60 };
      t.injectedAt = t.order.length;
      t.client._ws.onmessage({ data: JSON.stringify({ type: "snapshot", sub: t.deltaSub.sub,
        cursor: t.deltaSub.cursor, data: { ts: 1, servers } }) });
      return t.injectedAt;
    })()""")
    await page.wait_for(f"{PAIRED_AFTER}({injected} + 1) >= 3", timeout=10)
    t = await page.evaluate("({order: t.order, delta: t.delta, json: t.json, snapshots: t.snapshots})")
    assert t["order"][injected][0] == "snapshot" and "ghost" in t["snapshots"][-1]["servers"]
    after = paired(t, injected + 1)
    for cursor in after:
        assert "ghost" not in t["delta"][cursor]  # listed only when it reports
        for sid, sample in t["json"][cursor].items():
            got, want = dict(t["delta"][cursor][sid]), quantize_sample(sample)
            assert got.pop("uptime") in (-60, want.pop("uptime")) and got == want, (cursor, sid)
    stale = sum(s["uptime"] == -60 for s in t["delta"][after[-1]].values())
    assert stale > 0, "an unchanged field should come from the replaced state"

    # A dropped socket: the client resubscribes in delta with `since`; the hub answers recovered: false
    # and a fresh snapshot, which replaces the state (no ghost, real uptimes). Not a reset.
    dropped = await page.evaluate("t.sentAt = window.sent.length; t.client.dropForTest(); t.order.length")
    await page.wait_for(f"""t.client.state === 'open' && t.order.slice({dropped}).some(([k]) => k === 'snapshot')
      && {PAIRED_AFTER}(t.order.findIndex(([k], i) => i >= {dropped} && k === 'snapshot')) >= 3""", timeout=10)
    t = await page.evaluate("({order: t.order, delta: t.delta, json: t.json, snapshots: t.snapshots, resets: t.resets,"
                            " subscribed: t.subscribed, sent: window.sent.slice(t.sentAt), deltaSub: t.deltaSub.sub})")
    assert t["resets"] == []
    resub = [m for m in t["sent"] if m["type"] == "subscribe" and m["topic"] == "metrics"]
    assert sorted(m.get("encoding", "json") for m in resub) == ["delta", "json"]
    assert all("since" in m for m in resub)
    again = {m["sub"]: m for m in t["subscribed"][4:]}
    assert again[t["deltaSub"]]["recovered"] is False
    first = next(i for i, (k, _) in enumerate(t["order"]) if i >= dropped and k == "snapshot")
    fresh = t["snapshots"][-1]
    assert fresh["cursor"] == t["order"][first][1] and epoch(fresh["cursor"]) == epoch(t["order"][dropped - 1][1])
    assert "ghost" not in fresh["servers"] and all(s["uptime"] >= 0 for s in fresh["servers"].values())
    assert_full_and_quantized(t["delta"], t["json"], paired(t, first + 1))
    assert page.exceptions == []


async def test_json_metrics_when_the_client_asks(hub: HubProcess, page: Page) -> None:
    await page.navigate(f"{hub.base}/healthz")
    await page.evaluate(RECORD_SENT)
    result = await page.evaluate(f"""(async () => {{
      const {{ HubClient, MetricsStream }} = await import("/static/openmanager.js");
      const c = new HubClient({{ token: "{hub.token}", delta: false }});
      const events = [];
      await c.connect();
      const sub = await c.subscribe("metrics", {{ onEvent: (d) => events.push(d.servers) }});
      const stream = new MetricsStream({{ client: c }});
      const twin = await stream.subscribe("metrics", {{ encoding: "delta" }});
      const deadline = performance.now() + 8000;
      while ((events.length < 3 || stream.servers.size < {SERVERS}) && performance.now() < deadline) {{
        await new Promise((r) => setTimeout(r, 50));
      }}
      const out = {{ sub: sub.sub, encoding: sub.encoding, delta: twin.sub, events,
        stream: Object.fromEntries(stream.servers) }};
      c.close();
      return out;
    }})()""")
    sent = await page.evaluate("window.sent")
    assert [m.get("encoding") for m in sent if m["type"] == "subscribe"] == [None, "delta"]
    assert result["encoding"] == "json"
    assert {"delta": result["delta"], "json": result["sub"]} == await hub_subs(hub)
    assert len(result["events"]) >= 3
    # Full samples at full precision: something has more digits than the delta encoding would keep.
    samples = [s for servers in result["events"] for s in servers.values()]
    assert all({"cpu", "memory", "response_time", "uptime", "status"} <= set(s) for s in samples)
    assert any(s != quantize_sample(s) for s in samples)
    # MetricsStream keeps whole samples from a delta subscription too.
    assert len(result["stream"]) == SERVERS
    assert all({"cpu", "memory", "response_time", "uptime", "status"} <= set(s) for s in result["stream"].values())
    assert page.exceptions == []


async def test_delta_rules_against_a_scripted_socket(hub: HubProcess, page: Page) -> None:
    """The cases a live hub seldom shows, with a WebSocket the page scripts: a removed field (`null`), a new
    server, a callback that changes what it got, a duplicate, a mid-stream snapshot, and resumes in the
    same hub run (no reset) and after a restart (a new epoch: reset, as for every topic)."""
    await page.navigate(f"{hub.base}/healthz")
    r = await page.evaluate("""(async () => {
      const { HubClient } = await import("/static/openmanager.js");
      const sockets = [];
      window.WebSocket = class FakeSocket {
        static OPEN = 1;
        constructor() {
          this.readyState = 1;
          this.sent = [];
          sockets.push(this);
          setTimeout(() => this.recv({ type: "welcome", session: "x", heartbeat_ms: 15000 }));
        }
        send(data) { this.sent.push(JSON.parse(data)); }
        close(code, reason) { this.readyState = 3; setTimeout(() => this.onclose?.({ code, reason })); }
        recv(msg) { this.onmessage({ data: JSON.stringify(msg) }); }
        subscribe(topic) { return this.sent.find((m) => m.type === "subscribe" && m.topic === topic); }
      };
      const tick = () => new Promise((r) => setTimeout(r, 10));
      // The n-th socket, once the client has sent its metrics subscribe on it.
      const opened = async (n) => {
        while (!sockets[n - 1] || !sockets[n - 1].subscribe("metrics")) await tick();
        return sockets[n - 1];
      };
      const sub = "sdelta";
      const data = (ts, servers) => ({ ts, servers });
      const got = [], resets = [], frames = [];
      const c = new HubClient({ url: "ws://scripted/ws", backoffMin: 0, backoffMax: 0, pingInterval: 60000 });
      const pending = c.subscribe("metrics", {
        onSnapshot: (d, m) => got.push(["snapshot", m.cursor, structuredClone(d.servers)]),
        onEvent: (d, m) => {
          got.push(["event", m.cursor, structuredClone(d.servers)]);
          if (d.servers.a) d.servers.a.cpu = 999;
        },
        onReset: (i) => resets.push(i.cursor) });
      await c.connect();
      let ws = await opened(1);
      const subscribed = (cursor, more = {}) => {
        frames.push(ws.subscribe("metrics"));
        ws.recv({ type: "subscribed", id: frames.at(-1).id, sub, topic: "metrics", cursor, ...more });
      };
      const snapshot = (cursor, d) => ws.recv({ type: "snapshot", sub, cursor, data: d });
      const event = (cursor, d) => ws.recv({ type: "event", sub, cursor, data: d });
      subscribed("e1-10");
      snapshot("e1-10", data(1, {
        a: { cpu: 1, memory: 2, status: "healthy" }, b: { cpu: 3, memory: 4, status: "healthy" } }));
      await pending;
      event("e1-11", data(2, { a: { cpu: 5 }, b: {} }));
      event("e1-12", data(3, { a: { memory: null }, c: { cpu: 7, status: "warning" } }));
      event("e1-12", data(3, { a: { cpu: 0 } }));
      snapshot("e1-20", data(4, { a: { cpu: 9, status: "critical" } }));
      event("e1-21", data(5, { b: { cpu: 1 } }));
      ws.close(1006, "");
      ws = await opened(2);
      subscribed("e1-30", { recovered: false });
      snapshot("e1-29", data(6, { a: { cpu: 2, status: "healthy" } }));
      event("e1-31", data(7, { a: {} }));
      ws.close(1012, "");
      ws = await opened(3);
      subscribed("e2-3", { recovered: false });
      snapshot("e2-3", data(8, { d: { cpu: 4, status: "healthy" } }));
      c.close();
      return { got, resets, frames, duplicates: c.duplicatesDropped };
    })()""")
    assert [(f.get("encoding"), f.get("since")) for f in r["frames"]] == [("delta", None), ("delta", "e1-21"),
                                                                          ("delta", "e1-31")]
    assert r["got"] == [
        ["snapshot", "e1-10", {"a": {"cpu": 1, "memory": 2, "status": "healthy"},
                               "b": {"cpu": 3, "memory": 4, "status": "healthy"}}],
        ["event", "e1-11", {"a": {"cpu": 5, "memory": 2, "status": "healthy"},
                            "b": {"cpu": 3, "memory": 4, "status": "healthy"}}],
        # The callback set a.cpu = 999 on what it got: the client's state kept 5.
        ["event", "e1-12", {"a": {"cpu": 5, "status": "healthy"}, "c": {"cpu": 7, "status": "warning"}}],
        # The duplicate e1-12 was dropped; the mid-stream snapshot replaced the state (b and c are gone).
        ["snapshot", "e1-20", {"a": {"cpu": 9, "status": "critical"}}],
        ["event", "e1-21", {"b": {"cpu": 1}}],
        ["snapshot", "e1-29", {"a": {"cpu": 2, "status": "healthy"}}],
        ["event", "e1-31", {"a": {"cpu": 2, "status": "healthy"}}],
        ["snapshot", "e2-3", {"d": {"cpu": 4, "status": "healthy"}}],
    ]
    assert r["duplicates"] == 1
    assert r["resets"] == ["e2-3"]  # the restart only, not the resume in the same run
    assert page.exceptions == []


async def test_a_restarting_hub_is_retried_within_about_a_second_then_with_backoff(hub: HubProcess, page: Page) -> None:
    """After a close with 1012 every retry waits restartDelayMin + random * (max - min), however many fail,
    while the restart window runs; a welcome ends it (the next close backs off as usual), and so does the
    window's end. The page's `online` event and `retrySoon()` bring a backoff's retry forward the same way.
    A scripted WebSocket makes each close and each delay exact."""
    await page.navigate(f"{hub.base}/healthz")
    r = await page.evaluate("""(async () => {
      const { HubClient } = await import("/static/openmanager.js");
      const sockets = [];
      window.WebSocket = class ScriptedSocket {
        static OPEN = 1;
        constructor() { this.readyState = 1; this.extensions = ""; sockets.push(this); }
        send() {}
        close() { this.readyState = 3; }
        welcome() { this.onmessage({ data: JSON.stringify({ type: "welcome", session: "s", heartbeat_ms: 15000 }) }); }
        drop(code) { this.readyState = 3; this.onclose({ code, reason: "" }); }
      };
      const opened = async (n) => {
        while (sockets.length < n) await new Promise((r) => setTimeout(r, 5));
        return sockets[n - 1];
      };
      const run = async (options, script) => {
        sockets.length = 0;
        const delays = [];
        const c = new HubClient({ url: "ws://scripted/ws", backoffMin: 1000, backoffMax: 8000, pingInterval: 60000,
          random: () => 0.5, ...options });
        c.on("state", (d) => { if (d.state === "reconnecting") delays.push([d.reason, d.nextDelayMs]); });
        window.scripted = c;
        void c.connect();
        await script(opened);
        c.close();
        return delays;
      };
      const inWindow = await run({}, async (opened) => {
        (await opened(1)).welcome();
        (await opened(1)).drop(1012);      // the hub restarts
        (await opened(2)).drop(1006);      // not back yet: still a quick retry
        (await opened(3)).drop(1006);
        const back = await opened(4);
        back.welcome();                    // back: the restart is over
        back.drop(1006);                   // an ordinary loss backs off again
        await opened(5);
      });
      const afterWindow = await run({ restartWindow: 0 }, async (opened) => {
        (await opened(1)).welcome();
        (await opened(1)).drop(1012);
        await opened(2);
      });
      const spread = await run({ random: () => 0.999 }, async (opened) => {
        (await opened(1)).welcome();
        (await opened(1)).drop(1012);
        await opened(2);
      });
      const online = await run({ backoffMin: 8000 }, async (opened) => {
        (await opened(1)).welcome();
        (await opened(1)).drop(1006);      // a lost network: backoff (0.5 * 8000 ms)
        window.dispatchEvent(new Event("online"));  // it is back: try within about a second
        window.dispatchEvent(new Event("online"));  // again: the retry is already that soon
        await opened(2);
      });
      const answered = await run({ backoffMin: 8000, random: () => 0.25 }, async (opened) => {
        (await opened(1)).welcome();
        (await opened(1)).drop(1006);      // the hub went away without a word: backoff (0.25 * 8000 ms)
        window.scripted.retrySoon();       // the page got an answer over HTTP: within about a second
        await opened(2);
      });
      return { inWindow, afterWindow, spread, online, answered };
    })()""")
    assert r["inWindow"] == [["1012 service restart", 750], ["1006 connection lost", 750],
                             ["1006 connection lost", 750], ["1006 connection lost", 500]]
    assert r["afterWindow"] == [["1012 service restart", 500]]  # the window is over: full-jitter backoff
    assert r["spread"] == [["1012 service restart", 1249]]
    assert r["online"] == [["1006 connection lost", 4000], [None, 750]]
    assert r["answered"] == [["1006 connection lost", 2000], [None, 500]]
    assert page.exceptions == []

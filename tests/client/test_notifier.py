"""SmartNotifier against a real hub: rules over REST (create, list, errors, remove by id and by name), alert
transitions over the `alerts` topic, ack, and a transition published while the connection was cut delivered
after the reconnect (resume)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from openmanager.client import AuthError, ClientError, HubError, SmartNotifier, http_url
from tests.client.proxy import CuttableProxy
from tests.client.waiting import until
from tests.integration.hubproc import HubProcess

Data = dict[str, Any]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _of(events: list[Data], rule_id: str, transition: str) -> list[Data]:
    return [e for e in events if e["alert"]["rule"]["id"] == rule_id and e["transition"] == transition]


class GatedProxy(CuttableProxy):
    """A CuttableProxy that can hold new connections (accepted, but not forwarded until `release()`), so a
    cut connection stays down for as long as the test needs."""

    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self.gate = asyncio.Event()
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.gate.wait()
        await super()._handle(reader, writer)


def test_http_url() -> None:
    assert http_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert http_url("ws://127.0.0.1:8000/ws?token=x") == "http://127.0.0.1:8000"
    assert http_url("wss://hub.example/monitor/ws") == "https://hub.example/monitor"
    with pytest.raises(ValueError):
        http_url("ftp://hub")


async def test_rule_fires_on_alert_ack_and_remove_by_name(hub: HubProcess) -> None:
    name = _name("nt-hot")
    seen: list[Data] = []
    web: list[Data] = []

    async def on_web(data: Data) -> None:  # async callbacks are awaited, in order
        await asyncio.sleep(0)
        web.append(data)

    async with SmartNotifier(hub.base, token=hub.token) as notifier:
        everything = notifier.on_alert(seen.append)
        only_web = notifier.on_alert(on_web, servers="web-01", severity="warning")
        assert only_web.filter == {"servers": ["web-01"], "severity": "warning"}
        await everything.ready()  # made at once: the notifier is already connected
        await only_web.ready()
        assert everything.subscription is not None and everything.subscription.active

        rule = await notifier.add_rule(name=name, condition='server.id == "web-01"', severity="critical",
                                       action="immediate-alert", cooldown="5m", description="notifier test")
        try:
            assert rule["id"] and rule["name"] == name and rule["severity"] == "critical"
            assert rule["cooldown"] == "5m" and rule["condition"] == 'server.id == "web-01"'
            assert rule["description"] == "notifier test"
            assert any(r["id"] == rule["id"] for r in await notifier.rules())

            await until(lambda: _of(seen, rule["id"], "firing"), 15, "the rule's firing transition")
            firing = _of(seen, rule["id"], "firing")
            assert len(firing) == 1
            event = firing[0]
            assert {"transition", "alert", "ts", "notify"} <= set(event)
            alert = event["alert"]
            assert alert["server"] == "web-01" and alert["severity"] == "critical" and alert["state"] == "firing"
            assert alert["rule"] == {"id": rule["id"], "name": name}
            assert notifier.active[alert["id"]]["state"] == "firing"
            await until(lambda: _of(web, rule["id"], "firing"), 10, "the filtered feed's firing transition")
            assert all(e["alert"].get("server") == "web-01" or "web-01" in e["alert"].get("servers", ())
                       for e in web)
            assert any(a["id"] == alert["id"] for a in await notifier.alerts(state="firing", server="web-01"))

            acked = await notifier.ack(alert["id"], comment="looking into it")
            assert acked["id"] == alert["id"] and acked["acknowledged"]["comment"] == "looking into it"
            await until(lambda: _of(seen, rule["id"], "acknowledged"), 10, "the acknowledged transition")
            with pytest.raises(HubError) as info:
                await notifier.ack(alert["id"], comment="again")
            assert info.value.code == "conflict" and info.value.status == 409
        finally:
            await notifier.remove_rule(name)  # by name
        assert all(r["id"] != rule["id"] for r in await notifier.rules())
        await until(lambda: _of(seen, rule["id"], "resolved"), 10, "the resolved transition after removal")
        assert alert["id"] not in notifier.active
        assert notifier.client.stats.callback_errors == 0
    assert notifier.client.state == "closed"


async def test_rule_errors_and_remove_by_id(hub: HubProcess) -> None:
    notifier = SmartNotifier(hub.base, token=hub.token)  # REST works without connect()
    with pytest.raises(HubError) as info:
        await notifier.add_rule(name=_name("nt-bad"), condition="cpu > > 85", severity="critical")
    err = info.value
    assert err.code == "invalid_rule" and err.status == 400
    assert err.position == 6 and "position" in err.message

    with pytest.raises(HubError) as info:
        await notifier.add_rule(name=_name("nt-bad"), condition="cpu > 85", severity="urgent")
    assert info.value.code == "invalid_rule" and info.value.position is None

    name = _name("nt-byid")
    rule = await notifier.add_rule(name=name, condition="cpu > 99.9 AND memory > 99.9", for_="1m",
                                   **{"id": f"{name}-x", "scope": 'server.role == "web"', "enabled": False})
    assert rule["id"] == f"{name}-x" and rule["for"] == "1m" and rule["scope"] == 'server.role == "web"'
    assert rule["enabled"] is False
    with pytest.raises(HubError) as info:
        await notifier.add_rule(name=name, condition="cpu > 1", id=rule["id"])
    assert info.value.code == "conflict" and info.value.status == 409

    await notifier.remove_rule(rule["id"])  # by id
    assert all(r["id"] != rule["id"] for r in await notifier.rules())
    with pytest.raises(HubError) as info:
        await notifier.remove_rule(rule["id"])
    assert info.value.code == "not_found"

    twins = [await notifier.add_rule(name=name, condition="cpu > 99.9", id=f"{name}-{i}", enabled=False)
             for i in range(2)]
    with pytest.raises(ClientError) as ambiguous:
        await notifier.remove_rule(name)
    assert ambiguous.value.code == "ambiguous_rule"
    for twin in twins:
        await notifier.remove_rule(twin["id"])

    with pytest.raises(HubError) as info:
        await notifier.ack("no-such-alert")
    assert info.value.code == "not_found" and info.value.status == 404
    with pytest.raises(ValueError):
        notifier.on_alert(print, severity="urgent")
    with pytest.raises(AuthError):
        await SmartNotifier(hub.base, token="not-the-token").rules()
    await notifier.close()


async def test_on_alert_after_connect_and_remove(hub: HubProcess) -> None:
    async with SmartNotifier(hub.base, token=hub.token) as notifier:
        assert notifier.feeds == []
        late = notifier.on_alert(print, servers=["db-*"], severity="critical")
        await late.ready()
        assert late.subscription is not None and late.subscription.active
        await late.remove()
        assert late not in notifier.feeds and not late.subscription.active


async def test_transition_during_a_cut_is_delivered_after_the_reconnect(hub: HubProcess) -> None:
    proxy = GatedProxy(hub.port)
    await proxy.start()
    cut = SmartNotifier(f"ws://127.0.0.1:{proxy.port}/ws", token=hub.token, backoff_min=0.01, backoff_max=0.05)
    direct = SmartNotifier(hub.base, token=hub.token)
    name = _name("nt-resume")
    rule_id = ""
    try:
        seen: list[Data] = []
        cursors: list[str | None] = []
        feed = cut.on_alert(lambda data: (seen.append(data), cursors.append(feed.cursor)))
        await cut.connect()
        reference: list[Data] = []
        direct.on_alert(reference.append)
        await direct.connect()

        proxy.hold()
        assert proxy.cut() > 0
        await asyncio.wait_for(cut.client.wait_for_state("reconnecting"), 10)
        rule = await direct.add_rule(name=name, condition='server.id == "db-01"', severity="warning",
                                     action="record")
        rule_id = rule["id"]
        await until(lambda: _of(reference, rule_id, "firing"), 15, "the firing transition (seen directly)")
        assert cut.client.state == "reconnecting" and not _of(seen, rule_id, "firing")

        proxy.release()
        await asyncio.wait_for(cut.client.wait_for_state("open"), 15)
        await until(lambda: _of(seen, rule_id, "firing"), 10, "the firing transition after the reconnect")
        assert _of(seen, rule_id, "firing") == _of(reference, rule_id, "firing")
        assert cut.client.stats.resumed >= 1 and cut.client.stats.resets == 0
        seqs = [int(c.rsplit("-", 1)[1]) for c in cursors if c]
        assert seqs == sorted(set(seqs)), "a duplicate or an out-of-order transition"
        assert any(a["id"] == _of(seen, rule_id, "firing")[0]["alert"]["id"] for a in cut.active.values())
    finally:
        proxy.release()
        if rule_id:
            await direct.remove_rule(rule_id)
        await cut.close()
        await direct.close()
        await proxy.close()

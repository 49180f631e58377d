"""The composition root: it chooses the parts from the settings and hands each gateway its narrow service."""

from __future__ import annotations

from pathlib import Path

from openmanager.broker.memory import MemoryBroker
from openmanager.config import Settings
from openmanager.root import Root


def test_the_root_builds_one_hub_and_services_over_its_parts(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path), "servers": 3, "local": False}, env={})
    root = Root.build(settings, admin_token="a-test-token")
    hub, services = root.hub, root.services
    assert isinstance(hub.broker, MemoryBroker) and hub.is_leader  # one process: always the leader
    assert [s.name for s in hub.sources] == ["simulator"]
    assert services.fleet.state is hub.state and services.fleet.history is hub.history
    assert services.users.auth is hub.auth and services.ingest.pipeline is hub.pipeline
    assert services.limits is hub.limits
    streams, gate = services.streams, services.stream_gate  # the streams over the hub's parts, not the hub
    assert streams.fanout is hub.fanout and streams.broker is hub.broker and streams.view is hub.state
    assert streams is hub.streams and streams.queue_limits is hub.queue_limits  # the one owner of open sessions
    assert streams.limits.per_connection == settings.subscriptions_per_connection
    assert gate.auth is hub.auth and gate.limits is hub.limits and gate.allowed_origins == hub.allowed_origins
    assert sorted(hub.calls.handlers) == sorted(f"alerts.{op}" for op in (
        "create_rule", "replace_rule", "delete_rule", "ack", "add_silence", "end_silence", "add_window",
        "start_window", "delete_window", "set_escalation_defaults"))
    assert services.health.readiness() == (False, "starting")
    otlp = services.otlp  # the OTLP receiver maps onto the hub's pipeline; its counters are on /metrics
    assert otlp.receiver.sink is hub.pipeline
    assert otlp.max_decompressed_bytes == settings.otlp_max_decompressed_bytes
    assert "openmanager_otlp" in " ".join(m.name for m in hub.registry.collect())


def test_the_trusted_proxies_come_from_the_setting_only_when_named(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path), "forwarded_allow_ips": "10.0.0.1"}, env={})
    assert Root.build(settings, admin_token="a-test-token", sources=[]).services.trusted_proxies == "10.0.0.1"

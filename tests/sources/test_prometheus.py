"""The Prometheus scrape source: target parsing, the pure exposition mapping, and the source against
httpx's MockTransport (a real transport, not a mock object) feeding a recording sink and a real hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import pytest

from openmanager.config import Settings
from openmanager.core.errors import ConfigError
from openmanager.core.model import LogLevel, LogRecord, Sample, ServerInfo
from openmanager.root import Root, build_sources
from openmanager.sources.prometheus import (
    USER_AGENT,
    ExpositionError,
    PrometheusSource,
    ScrapeTarget,
    backoff_delay,
    map_exposition,
    max_interval,
    parse_scrape_targets,
)

# --------------------------------------------------------------------------------------------------------
# canned node_exporter output


@dataclass
class Node:
    """What a node_exporter would report; `text()` renders it as node_exporter 1.x does."""

    cpu: dict[tuple[str, str], float] = field(default_factory=lambda: {
        (cpu, mode): 0.0 for cpu in ("0", "1") for mode in ("idle", "iowait", "irq", "nice", "softirq", "steal",
                                                           "system", "user")})
    mem_total: float | None = 16e9
    mem_available: float | None = 12e9
    mem_extra: dict[str, float] = field(default_factory=dict)  # e.g. MemFree, Buffers, Cached
    swap_total: float | None = 4e9
    swap_free: float | None = 3e9
    # mountpoint → (fstype, size, avail, free or None, device_error)
    filesystems: dict[str, tuple[str, float, float, float | None, int]] = field(default_factory=lambda: {
        "/": ("ext4", 100e9, 30e9, 35e9, 0),
        "/run": ("tmpfs", 1e9, 0.9e9, 0.9e9, 0),
        "/boot/efi": ("vfat", 0.5e9, 0.4e9, 0.4e9, 0),
    })
    net_rx: dict[str, float] = field(default_factory=lambda: {"eth0": 1e6, "lo": 5e6, "wlan0": 2e5})
    net_tx: dict[str, float] = field(default_factory=lambda: {"eth0": 4e5, "lo": 5e6, "wlan0": 1e5})
    loads: tuple[float, float, float] | None = (0.42, 0.31, 0.18)
    boot_time: float | None = 1_700_000_000.0
    time: float | None = 1_700_086_400.5
    procs_running: float | None = 3.0
    noise: bool = True  # other families a real exporter has

    def text(self) -> str:
        out: list[str] = []
        if self.noise:
            out += ['# HELP go_gc_duration_seconds A summary of the pause duration of garbage collection cycles.',
                    '# TYPE go_gc_duration_seconds summary',
                    'go_gc_duration_seconds{quantile="0"} 2.1e-05',
                    'go_gc_duration_seconds_sum 0.0123', 'go_gc_duration_seconds_count 42',
                    '# HELP node_cpu_guest_seconds_total Seconds the CPUs spent in guests (VMs) for each mode.',
                    '# TYPE node_cpu_guest_seconds_total counter',
                    'node_cpu_guest_seconds_total{cpu="0",mode="nice"} 0']
        if self.boot_time is not None:
            out += ["# HELP node_boot_time_seconds Node boot time, in unixtime.",
                    "# TYPE node_boot_time_seconds gauge", f"node_boot_time_seconds {self.boot_time:.9e}"]
        if self.cpu:
            out += ["# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.",
                    "# TYPE node_cpu_seconds_total counter"]
            out += [f'node_cpu_seconds_total{{cpu="{c}",mode="{m}"}} {v}' for (c, m), v in self.cpu.items()]
        for name, index in (("avail", 2), ("device_error", 4), ("free", 3), ("size", 1)):
            metric = f"node_filesystem_{name}" + ("" if name == "device_error" else "_bytes")
            rows = [(mount, spec) for mount, spec in self.filesystems.items() if spec[index] is not None]
            if rows:
                out += [f"# HELP {metric} Filesystem {name}.", f"# TYPE {metric} gauge"]
                out += [f'{metric}{{device="/dev/x{i}",fstype="{spec[0]}",mountpoint="{mount}"}} '
                        f"{float(spec[index] or 0):.10e}" for i, (mount, spec) in enumerate(rows)]
        if self.loads is not None:
            for minutes, value in zip((1, 15, 5), (self.loads[0], self.loads[2], self.loads[1]), strict=True):
                out += [f"# HELP node_load{minutes} {minutes}m load average.", f"# TYPE node_load{minutes} gauge",
                        f"node_load{minutes} {value}"]
        memory = {"MemAvailable": self.mem_available, "MemTotal": self.mem_total, "SwapFree": self.swap_free,
                  "SwapTotal": self.swap_total, **self.mem_extra}
        for key, value in memory.items():
            if value is not None:
                out += [f"# HELP node_memory_{key}_bytes Memory information field {key}_bytes.",
                        f"# TYPE node_memory_{key}_bytes gauge", f"node_memory_{key}_bytes {value:.10e}"]
        for direction, counters in (("receive", self.net_rx), ("transmit", self.net_tx)):
            if counters:
                out += [f"# HELP node_network_{direction}_bytes_total Network device statistic {direction}_bytes.",
                        f"# TYPE node_network_{direction}_bytes_total counter"]
                out += [f'node_network_{direction}_bytes_total{{device="{d}"}} {v:.10e}' for d, v in counters.items()]
        if self.procs_running is not None:
            out += ["# HELP node_procs_running Number of processes in runnable state.",
                    "# TYPE node_procs_running gauge", f"node_procs_running {self.procs_running:g}"]
        if self.time is not None:
            out += ["# HELP node_time_seconds System time in seconds since epoch (1970).",
                    "# TYPE node_time_seconds gauge", f"node_time_seconds {self.time!r}"]
        if self.noise:
            out += ["# HELP promhttp_metric_handler_requests_total Total number of scrapes by HTTP status code.",
                    "# TYPE promhttp_metric_handler_requests_total counter",
                    'promhttp_metric_handler_requests_total{code="200"} 7']
        return "\n".join(out) + "\n"

    def advance(self, seconds: float, busy_share: float, rx: dict[str, float], tx: dict[str, float]) -> Node:
        """The node `seconds` later: each CPU busy for `busy_share` of it (split user/system/iowait as
        below), counters grown by rx/tx bytes per device."""
        cpu = dict(self.cpu)
        for c in {c for c, _ in cpu}:
            busy = seconds * busy_share
            cpu[(c, "user")] += busy * 0.6
            cpu[(c, "system")] += busy * 0.4
            cpu[(c, "iowait")] += (seconds - busy) * 0.25  # idle time waiting on I/O counts as idle
            cpu[(c, "idle")] += (seconds - busy) * 0.75
        net_rx = {d: v + rx.get(d, 0.0) for d, v in self.net_rx.items()}
        net_tx = {d: v + tx.get(d, 0.0) for d, v in self.net_tx.items()}
        return replace(self, cpu=cpu, net_rx=net_rx, net_tx=net_tx,
                       time=None if self.time is None else self.time + seconds)


def busy_node() -> Node:
    node = Node()
    node.cpu = {k: v + 1000.0 for k, v in node.cpu.items()}
    return node


# --------------------------------------------------------------------------------------------------------
# mapping


def test_first_scrape_reports_levels_but_no_rates() -> None:
    values, state = map_exposition(Node().text(), None, 100.0)
    assert values["memory"] == pytest.approx(100 * (1 - 12e9 / 16e9))
    assert values["swap"] == pytest.approx(100 * (1 - 3e9 / 4e9))
    used = 100e9 - 35e9  # df: used = size - free; percent = used / (used + avail)
    assert values["disk"] == pytest.approx(100 * used / (used + 30e9))
    assert (values["load1"], values["load5"], values["load15"]) == (0.42, 0.31, 0.18)
    assert values["uptime"] == pytest.approx(86_400.5)
    assert values["processes"] == 3.0
    assert not {"cpu", "net_in", "net_out"} & set(values)
    assert state.mono == 100.0 and len(state.cpu) == 16 and "lo" not in state.net_rx


def test_second_scrape_gives_cpu_and_network_rates() -> None:
    first = busy_node()
    second = first.advance(2.0, busy_share=0.3, rx={"eth0": 20_000, "wlan0": 4_000, "lo": 999_999},
                           tx={"eth0": 6_000, "lo": 999_999})
    _, state = map_exposition(first.text(), None, 10.0)
    values, state2 = map_exposition(second.text(), state, 12.0)
    assert values["cpu"] == pytest.approx(30.0)
    assert values["net_in"] == pytest.approx((20_000 + 4_000) / 2.0)  # lo left out
    assert values["net_out"] == pytest.approx(6_000 / 2.0)
    assert state2.mono == 12.0
    third = second.advance(1.0, busy_share=0.9, rx={"eth0": 1_000}, tx={})
    values3, _ = map_exposition(third.text(), state2, 13.0)
    assert values3["cpu"] == pytest.approx(90.0)
    assert values3["net_in"] == pytest.approx(1_000.0) and values3["net_out"] == 0.0


def test_counter_reset_gives_no_rate_that_round_then_rates_again() -> None:
    first = busy_node()
    _, state = map_exposition(first.text(), None, 0.0)
    # the host rebooted: every counter starts again near zero
    restarted = replace(Node(), time=first.time, net_rx={"eth0": 10.0, "lo": 1.0, "wlan0": 1.0},
                        net_tx={"eth0": 10.0, "lo": 1.0, "wlan0": 1.0})
    restarted.cpu = {k: v + 1.0 for k, v in restarted.cpu.items()}
    values, state = map_exposition(restarted.text(), state, 1.0)
    assert not {"cpu", "net_in", "net_out"} & set(values)
    assert "memory" in values  # levels still reported
    later = restarted.advance(1.0, busy_share=0.5, rx={"eth0": 3_000}, tx={"eth0": 1_000})
    values, _ = map_exposition(later.text(), state, 2.0)
    assert values["cpu"] == pytest.approx(50.0)
    assert values["net_in"] == pytest.approx(3_000.0) and values["net_out"] == pytest.approx(1_000.0)


def test_one_direction_reset_leaves_only_that_rate_out() -> None:
    first = busy_node()
    _, state = map_exposition(first.text(), None, 0.0)
    second = first.advance(1.0, busy_share=0.2, rx={"eth0": 500}, tx={"eth0": 700})
    second.net_rx = {**second.net_rx, "wlan0": 10.0}  # wlan0's receive counter wrapped
    values, _ = map_exposition(second.text(), state, 1.0)
    assert "net_in" not in values
    assert values["net_out"] == pytest.approx(700.0)
    assert values["cpu"] == pytest.approx(20.0)


def test_a_device_that_appears_is_not_counted_until_it_has_two_scrapes() -> None:
    first = busy_node()
    _, state = map_exposition(first.text(), None, 0.0)
    second = first.advance(1.0, busy_share=0.1, rx={"eth0": 100}, tx={"eth0": 100})
    second.net_rx = {**second.net_rx, "eth9": 7e9}  # a new device with a large lifetime count
    second.net_tx = {**second.net_tx, "eth9": 7e9}
    values, state = map_exposition(second.text(), state, 1.0)
    assert values["net_in"] == pytest.approx(100.0) and values["net_out"] == pytest.approx(100.0)
    third = second.advance(1.0, busy_share=0.1, rx={"eth9": 50}, tx={})
    values, _ = map_exposition(third.text(), state, 2.0)
    assert values["net_in"] == pytest.approx(50.0)


def test_no_elapsed_time_gives_no_network_rate() -> None:
    first = busy_node()
    _, state = map_exposition(first.text(), None, 5.0)
    values, _ = map_exposition(first.advance(1.0, 0.5, {"eth0": 10}, {}).text(), state, 5.0)
    assert "net_in" not in values and values["cpu"] == pytest.approx(50.0)


def test_missing_metrics_are_left_out_not_invented() -> None:
    node = Node(cpu={}, mem_total=None, swap_total=None, filesystems={}, net_rx={}, net_tx={}, loads=(1.5, 1.0, 0.5),
                boot_time=None, procs_running=None, noise=False)
    values, _ = map_exposition(node.text(), None, 0.0)
    assert values == {"load1": 1.5, "load5": 1.0, "load15": 0.5}
    values, _ = map_exposition(node.text(), map_exposition(node.text(), None, 0.0)[1], 1.0)
    assert values == {"load1": 1.5, "load5": 1.0, "load15": 0.5}


def test_swap_is_zero_without_swap_and_memory_falls_back_without_memavailable() -> None:
    node = Node(swap_total=0.0, swap_free=0.0, mem_available=None,
                mem_extra={"MemFree": 2e9, "Buffers": 1e9, "Cached": 3e9})
    values, _ = map_exposition(node.text(), None, 0.0)
    assert values["swap"] == 0.0
    assert values["memory"] == pytest.approx(100 * (1 - 6e9 / 16e9))
    values, _ = map_exposition(replace(node, mem_extra={"MemFree": 2e9}).text(), None, 0.0)
    assert "memory" not in values  # not enough to say


def test_disk_is_the_fullest_real_filesystem() -> None:
    node = Node(filesystems={
        "/run": ("tmpfs", 500e9, 0.0, 0.0, 0),  # virtual: never chosen even though the fullest
        "/srv": ("xfs", 200e9, 50e9, None, 0),  # no free_bytes: 1 - avail/size
        "/home": ("ext4", 100e9, 30e9, 30e9, 0),
    })
    values, _ = map_exposition(node.text(), None, 0.0)
    assert values["disk"] == pytest.approx(100 * (1 - 50e9 / 200e9))
    broken_root = Node(filesystems={"/": ("ext4", 100e9, 1e9, 1e9, 1), "/data": ("ext4", 50e9, 40e9, 40e9, 0)})
    values, _ = map_exposition(broken_root.text(), None, 0.0)
    assert values["disk"] == pytest.approx(20.0)  # "/" reports a device error: the other one is used
    values, _ = map_exposition(Node(filesystems={"/run": ("tmpfs", 1e9, 1e9, 1e9, 0)}).text(), None, 0.0)
    assert "disk" not in values


def test_values_are_clamped_to_their_ranges() -> None:
    node = Node(mem_available=20e9, boot_time=1_700_000_000.0, time=1_600_000_000.0)  # bogus exporter values
    values, _ = map_exposition(node.text(), None, 0.0)
    assert values["memory"] == 0.0
    assert "uptime" not in values  # the clock before boot time: no uptime rather than a negative one


@pytest.mark.parametrize("text, message", [
    ("<html><body>Node Exporter</body></html>\n", "no node_exporter metrics"),
    ("", "no node_exporter metrics"),
    ("# TYPE http_requests_total counter\nhttp_requests_total 7\n", "no node_exporter metrics"),
    ("# TYPE node_load1 gauge\nnode_load1 high\n", "unparsable exposition"),
    ('node_cpu_seconds_total{cpu="0",mode=idle} 12\n', "unparsable exposition"),
])
def test_unusable_text_raises(text: str, message: str) -> None:
    with pytest.raises(ExpositionError, match=message):
        map_exposition(text, None, 0.0)


def test_unrelated_malformed_lines_do_not_spoil_the_scrape() -> None:
    text = "some_other_exporter_metric{broken 1\n" + Node().text()
    values, _ = map_exposition(text, None, 0.0)
    assert values["load1"] == 0.42


# --------------------------------------------------------------------------------------------------------
# targets


def test_string_targets() -> None:
    a, b, c = parse_scrape_targets([
        "node1=http://10.0.0.5:9100/metrics@15s",
        "db-2.eu=https://scraper:s3cret@db2.example.com/metrics",
        "edge_3=http://monitor:pw@10.1.2.3:9100/metrics@0.5s",
    ])
    assert (a.server, a.url, a.interval_s, a.hostname) == ("node1", "http://10.0.0.5:9100/metrics", 15.0, "10.0.0.5")
    assert (b.url, b.interval_s, b.hostname) == ("https://scraper:s3cret@db2.example.com/metrics", 5.0,
                                                 "db2.example.com")
    assert b.display_url == "https://scraper:***@db2.example.com/metrics"
    assert (c.url, c.interval_s) == ("http://monitor:pw@10.1.2.3:9100/metrics", 0.5)
    info = a.server_info()
    assert (info.id, info.hostname, info.source, info.role) == ("node1", "10.0.0.5", "prometheus", "host")
    assert a.display_url == a.url


def test_table_targets_from_a_toml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "om.toml"
    cfg.write_text(
        '[[scrape]]\nserver = "db-1"\nurl = "http://10.0.0.7:9100/metrics"\ninterval = "2s"\nrole = "database"\n'
        'environment = "aws"\nlabels = { rack = "r12", tier = 1 }\n\n'
        '[[scrape]]\nserver = "web-1"\nurl = "https://web1.internal:9100/metrics"\ninterval = 3\n'
    )
    settings = Settings.load({}, env={}, config_file=cfg)
    db, web = parse_scrape_targets(settings.scrape)
    assert (db.server, db.interval_s, db.role, db.environment, db.location) == ("db-1", 2.0, "database", "aws",
                                                                                 "unknown")
    assert db.server_info().tags == {"rack": "r12", "tier": "1"}
    assert (web.server, web.interval_s, web.role, dict(web.tags)) == ("web-1", 3.0, "host", {})


def test_environment_form_is_comma_separated() -> None:
    settings = Settings.load({}, env={"OPENMANAGER_SCRAPE": "a=http://h1:9100/metrics,b=http://h2:9100/metrics@2s"})
    assert [(t.server, t.interval_s) for t in parse_scrape_targets(settings.scrape)] == [("a", 5.0), ("b", 2.0)]


@pytest.mark.parametrize("item, message", [
    ("http://10.0.0.5:9100/metrics", "expected SERVER=URL"),
    ("node1=ftp://10.0.0.5/metrics", "must start with http:// or https://"),
    ("node1=10.0.0.5:9100/metrics", "must start with http:// or https://"),
    ("node1=http:///metrics", "has no host"),
    ("node1=http://host:99999/metrics", "bad URL"),
    ("node 1=http://host:9100/metrics", "bad server id 'node 1'"),
    ("no/de=http://host:9100/metrics", "bad server id"),
    ("node1=http://host:9100/metrics@5", "bad interval '5'"),
    ("node1=http://host:9100/metrics@5sec", "bad interval"),
    ("node1=http://host:9100/metrics@0.01s", "shorter than 0.1s"),
    ({"server": "n1"}, "missing 'url'"),
    ({"url": "http://h:9100/metrics"}, "missing 'server'"),
    ({"server": "n1", "url": "http://h/metrics", "lables": {}}, "unknown key 'lables'"),
    ({"server": "n1", "url": "http://h/metrics", "labels": "rack=r1"}, "labels must be a table"),
    ({"server": "n1", "url": "http://h/metrics", "labels": {"rack": ["a"]}}, "label 'rack' must be a string"),
    ({"server": "n1", "url": "http://h/metrics", "interval": True}, "bad interval"),
    ({"server": "n1", "url": "http://h/metrics", "interval": float("inf")}, "bad interval inf"),
    ({"server": "n1", "url": "http://h/metrics", "interval": 0.05}, "shorter than 0.1s"),
    ({"server": "n1", "url": "http://h/metrics", "role": ""}, "role must be a non-empty string"),
    ({"server": 5, "url": "http://h/metrics"}, "must be strings"),
])
def test_bad_targets_raise_config_errors(item: str | dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_scrape_targets([item])
    assert caught.value.message.startswith("scrape target")


def test_a_target_needs_a_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        ScrapeTarget("n1", "http://h/metrics", interval_s=0.0)


def test_credentials_never_appear_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scrape_targets(["n1=ftp://user:hunter2@host/metrics"])
    assert "hunter2" not in caught.value.message and "user:***@host" in caught.value.message


def test_server_ids_must_be_unique() -> None:
    with pytest.raises(ConfigError, match="'n1' is already used by http://a:9100/metrics"):
        parse_scrape_targets(["n1=http://a:9100/metrics", "n2=http://b:9100/metrics", "n1=http://c:9100/metrics"])


def test_interval_must_fit_the_offline_limit() -> None:
    assert max_interval(10.0) == 9.0 and max_interval(1.0) == 0.5
    (target,) = parse_scrape_targets(["n1=http://a:9100/metrics@9s"], offline_after_s=10.0)
    assert target.interval_s == 9.0
    with pytest.raises(ConfigError, match="offline after 10s without a sample"):
        parse_scrape_targets(["n1=http://a:9100/metrics@15s"], offline_after_s=10.0)
    (target,) = parse_scrape_targets(["n1=http://a:9100/metrics"], offline_after_s=4.0)
    assert target.interval_s == 3.0  # the default (5 s) lowered to fit


def test_build_sources_adds_the_scrape_source_and_surfaces_config_errors(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path), "simulator": False, "local": False,
                              "scrape": ["n1=http://127.0.0.1:9100/metrics@2s"]}, env={})
    (source,) = build_sources(settings)
    assert isinstance(source, PrometheusSource) and source.name == "prometheus"
    assert [(t.server, t.interval_s) for t in source.targets] == [("n1", 2.0)]
    assert build_sources(settings.replace(scrape=())) == []
    with pytest.raises(ConfigError, match="scrape target"):
        build_sources(settings.replace(scrape=("n1=http://127.0.0.1:9100/metrics@1m",)))
    with pytest.raises(ConfigError, match="scrape target"):
        Root.build(settings.replace(scrape=("n1=gopher://x",)), admin_token="a-test-token")


def test_backoff_grows_is_capped_and_jittered() -> None:
    top = [backoff_delay(n, 1.0, cap_s=30.0, rand=lambda: 1.0) for n in range(1, 9)]
    assert top == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert [backoff_delay(n, 1.0, cap_s=30.0, rand=lambda: 0.0) for n in (1, 3, 7)] == [0.5, 2.0, 15.0]
    assert backoff_delay(1, 60.0, cap_s=30.0, rand=lambda: 1.0) == 60.0  # never faster than the interval
    assert backoff_delay(10_000, 1.0, cap_s=30.0, rand=lambda: 1.0) == 30.0


# --------------------------------------------------------------------------------------------------------
# the source, over httpx.MockTransport


class RecordingSink:
    """A real SourceSink that keeps everything it is given."""

    def __init__(self) -> None:
        self.servers: list[ServerInfo] = []
        self.batches: list[list[Sample]] = []
        self.records: list[LogRecord] = []
        self.problems: list[tuple[str, str | None]] = []

    def register(self, server: ServerInfo) -> None:
        self.servers.append(server)

    def samples(self, batch: Sequence[Sample]) -> None:
        self.batches.append(list(batch))

    def logs(self, records: Sequence[LogRecord]) -> None:
        self.records.extend(records)

    def problem(self, server: str, reason: str | None) -> None:
        self.problems.append((server, reason))


class Exporter:
    """A scripted exporter behind httpx.MockTransport: each request takes the next step's response."""

    def __init__(self, steps: Sequence[Callable[[httpx.Request], httpx.Response]]) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        return step(request)


def serve(node: Node) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _: httpx.Response(200, text=node.text(), headers={"Content-Type": "text/plain; version=0.0.4"})


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_source_scrapes_reports_failures_and_recovers() -> None:
    n0 = busy_node()
    n1 = n0.advance(1.0, 0.25, {"eth0": 1000}, {"eth0": 500})
    n2 = n1.advance(1.0, 0.5, {"eth0": 1000}, {"eth0": 500})
    exporter = Exporter([serve(n0), serve(n1), lambda _: httpx.Response(503, text="busy"), refuse,
                         lambda _: httpx.Response(200, text="<html>login</html>"), serve(n2)])
    target = ScrapeTarget("n1", "http://u:pw@node1.example:9100/metrics", interval_s=0.1, tags={"rack": "r1"})
    source = PrometheusSource([target], transport=httpx.MockTransport(exporter.handle), max_backoff_s=0.1)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await wait_for(lambda: len(exporter.requests) >= 6 and len(sink.batches) >= 3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    (info,) = sink.servers
    assert (info.id, info.hostname, info.source, dict(info.tags)) == ("n1", "node1.example", "prometheus",
                                                                       {"rack": "r1"})
    request = exporter.requests[0]
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["accept"].startswith("text/plain")
    assert request.headers["authorization"].startswith("Basic ")  # credentials from the URL
    first, second, third = (batch[0] for batch in sink.batches[:3])
    assert "cpu" not in first.values and first.values["memory"] > 0
    assert second.values["cpu"] == pytest.approx(25.0) and "net_in" in second.values
    assert "cpu" in third.values  # after recovery, rates against the last good scrape
    assert all(batch[0].server == "n1" for batch in sink.batches)
    reasons = [reason for _, reason in sink.problems]
    assert len(reasons) == 4 and reasons[-1] is None  # three failures reported, then cleared once
    assert "HTTP 503 Service Unavailable; 1 failure in a row" in str(reasons[0])
    assert "cannot connect" in str(reasons[1])
    assert "no node_exporter metrics" in str(reasons[2]) and "3 failures in a row" in str(reasons[2])
    assert all("pw" not in str(r) and "u:***@node1.example" in str(r) for r in reasons[:3])
    levels = [(r.level, r.service, r.server) for r in sink.records]
    assert levels == [(LogLevel.ERROR, "prometheus", "n1")] * 3 + [(LogLevel.INFO, "prometheus", "n1")]
    assert "recovered after 3 failed attempts" in sink.records[-1].message


async def test_a_slow_target_times_out_and_is_reported() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    target = ScrapeTarget("slow", "http://slow:9100/metrics", interval_s=0.1)
    source = PrometheusSource([target], transport=httpx.MockTransport(handler), max_backoff_s=0.1)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await wait_for(lambda: len(sink.problems) >= 2)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sink.batches == []
    assert all(reason and "timed out after 2s" in reason for _, reason in sink.problems)
    assert len(sink.records) == 1  # the same reason is logged once, not once per retry


async def test_an_oversized_response_is_refused() -> None:
    node = Node()
    target = ScrapeTarget("big", "http://big:9100/metrics", interval_s=0.1)
    source = PrometheusSource([target], transport=httpx.MockTransport(serve(node)), max_body_bytes=1000)
    sink = RecordingSink()
    task = asyncio.create_task(source.run(sink))
    try:
        await wait_for(lambda: len(sink.problems) >= 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(node.text()) > 1000
    assert sink.batches == [] and "larger than 1000 bytes" in str(sink.problems[0][1])


async def test_problem_reaches_the_servers_api_through_the_hub(tmp_path: Path) -> None:
    nodes = [busy_node()]
    for _ in range(3):
        nodes.append(nodes[-1].advance(1.0, 0.4, {"eth0": 100}, {"eth0": 100}))
    gate = {"up": True}

    def handle(request: httpx.Request) -> httpx.Response:
        if not gate["up"]:
            raise httpx.ConnectError("All connection attempts failed", request=request)
        return httpx.Response(200, text=nodes[-1].text())

    source = PrometheusSource([ScrapeTarget("n1", "http://n1:9100/metrics", interval_s=0.1)],
                              transport=httpx.MockTransport(handle), max_backoff_s=0.1)
    settings = Settings.load({"data_dir": str(tmp_path), "tick": 0.05}, env={})
    hub = Root.build(settings, admin_token="a-test-token", sources=[source]).hub
    await hub.start()
    try:
        await wait_for(lambda: "n1" in hub.state.servers and hub.state.servers["n1"].ts > 0)
        api = hub.state.servers["n1"].to_api()
        assert api["source"] == "prometheus" and "problem" not in api and api["sample"]["memory"] > 0
        gate["up"] = False
        await wait_for(lambda: "problem" in hub.state.servers["n1"].to_api())
        problem = hub.state.servers["n1"].to_api()["problem"]
        assert "cannot connect" in problem and "All connection attempts failed" in problem
        # a sample from elsewhere does not clear it: only the source does, on its next good scrape
        hub.pipeline.samples([Sample("n1", hub.state.now_ms(), {"cpu": 1.0})])
        await wait_for(lambda: hub.state.servers["n1"].values.get("cpu") == 1.0)
        assert "problem" in hub.state.servers["n1"].to_api()
        gate["up"] = True
        await wait_for(lambda: "problem" not in hub.state.servers["n1"].to_api())
        assert [s["id"] for s in (st.to_api() for st in hub.state) if "problem" in s] == []
    finally:
        await hub.stop()


def test_set_problem_on_an_unknown_server_is_ignored(tmp_path: Path) -> None:
    settings = Settings.load({"data_dir": str(tmp_path)}, env={})
    hub = Root.build(settings, admin_token="a-test-token", sources=[]).hub
    hub.pipeline.problem("ghost", "nobody home")
    assert "ghost" not in hub.state.servers

"""map_exposition_series: node_exporter's labels (mountpoint, device, cpu, chip/sensor) as labelled series."""

from __future__ import annotations

import pytest

from openmanager.core.series import SeriesPolicy
from openmanager.sources.prometheus import map_exposition_series
from tests.sources.test_prometheus import Node, busy_node

EXTRA = """# TYPE node_filesystem_files gauge
node_filesystem_files{device="/dev/x0",fstype="ext4",mountpoint="/"} 1000
node_filesystem_files{device="/dev/x1",fstype="tmpfs",mountpoint="/run"} 1000
# TYPE node_filesystem_files_free gauge
node_filesystem_files_free{device="/dev/x0",fstype="ext4",mountpoint="/"} 250
node_filesystem_files_free{device="/dev/x1",fstype="tmpfs",mountpoint="/run"} 1000
# TYPE node_disk_read_bytes_total counter
node_disk_read_bytes_total{device="nvme0n1"} %(read)s
node_disk_read_bytes_total{device="loop0"} %(read)s
# TYPE node_disk_written_bytes_total counter
node_disk_written_bytes_total{device="nvme0n1"} %(written)s
node_disk_written_bytes_total{device="loop0"} %(written)s
# TYPE node_hwmon_temp_celsius gauge
node_hwmon_temp_celsius{chip="platform_coretemp_0",sensor="temp1"} 54.5
"""


def text(node: Node, read: float, written: float) -> str:
    return node.text() + EXTRA % {"read": read, "written": written}


def test_series_per_mount_device_interface_core_and_sensor() -> None:
    first = busy_node()
    _, series, state = map_exposition_series(text(first, 1e6, 2e6), None, 0.0)
    assert series["disk:mount=/"] == pytest.approx(100 * 65e9 / 95e9)
    assert series["disk:mount=/boot/efi"] == pytest.approx(20.0)
    assert series["fs_inodes:mount=/"] == pytest.approx(75.0)
    assert series["temperature:sensor=platform_coretemp_0/temp1"] == 54.5
    assert not [k for k in series if "/run" in k]  # tmpfs, and /run is excluded anyway
    assert not [k for k in series if k.startswith(("cpu:", "net_in:", "disk_read:"))]  # rates: two scrapes

    second = first.advance(2.0, busy_share=0.25, rx={"eth0": 2000, "wlan0": 400, "lo": 9e6}, tx={"eth0": 100})
    values, series, _ = map_exposition_series(text(second, 1e6 + 4000, 2e6 + 8000), state, 2.0)
    assert series["net_in:interface=eth0"] == pytest.approx(1000.0)
    assert series["net_in:interface=wlan0"] == pytest.approx(200.0)
    assert "net_in:interface=lo" not in series
    assert values["net_in"] == pytest.approx(1200.0)
    assert series["cpu:core=0"] == pytest.approx(25.0) and series["cpu:core=1"] == pytest.approx(25.0)
    assert series["disk_read:device=nvme0n1"] == pytest.approx(2000.0)
    assert series["disk_write:device=nvme0n1"] == pytest.approx(4000.0)
    assert "disk_read:device=loop0" not in series
    assert values["disk"] == max(v for k, v in series.items() if k.startswith("disk:"))


def test_the_policy_decides_which_labels_count() -> None:
    policy = SeriesPolicy(exclude_mounts=("/boot*",), exclude_interfaces=("wlan*", "lo"))
    first = busy_node()
    _, _, state = map_exposition_series(first.text(), None, 0.0, policy)
    second = first.advance(1.0, busy_share=0.5, rx={"eth0": 10, "wlan0": 1000}, tx={})
    values, series, _ = map_exposition_series(second.text(), state, 1.0, policy)
    assert "disk:mount=/boot/efi" not in series and "net_in:interface=wlan0" not in series
    assert values["net_in"] == pytest.approx(10.0)


def test_only_root_stands_for_disk_when_the_policy_keeps_no_filesystem() -> None:
    values, series, _ = map_exposition_series(Node().text(), None, 0.0, SeriesPolicy(exclude_mounts=("*",)))
    assert values["disk"] == pytest.approx(100 * 65e9 / 95e9)
    assert not [k for k in series if k.startswith("disk:")]

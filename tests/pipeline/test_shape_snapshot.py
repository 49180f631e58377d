"""A `delta` shape's snapshot message is encoded once per base cursor and shared by every client that asks."""

from __future__ import annotations

import msgpack
import orjson

from openmanager.core.filters import parse_filter
from openmanager.pipeline.shape import Shape


def _full(ts: int, cpu: float) -> dict[str, object]:
    return {"ts": ts, "servers": {"web-01": {"ts": ts, "cpu": cpu, "status": "healthy"}}}


def test_the_base_snapshot_is_one_object_until_the_base_moves() -> None:
    shape: Shape[object] = Shape("metrics", parse_filter("metrics", {}), "delta")
    assert shape.delta is not None
    shape.delta.seed("e-1", _full(1000, 10.0))
    first = shape.base_snapshot_frame()
    assert shape.base_snapshot_frame() is first  # a second client between two events: the same frame
    assert orjson.loads(first) == {"type": "snapshot", "sub": shape.sub, "cursor": "e-1",
                                   "data": shape.delta.snapshot()}
    assert shape.resync_frame("e-1", {}) is first

    shape.delta.step("e-2", _full(2000, 55.0))  # an event moves the base
    second = shape.base_snapshot_frame()
    assert second is not first
    message = orjson.loads(second)
    assert message["cursor"] == "e-2" and message["data"]["servers"]["web-01"]["cpu"] == 55.0
    assert message["data"] == shape.delta.snapshot()


def test_a_binary_shape_shares_its_msgpack_snapshot() -> None:
    shape: Shape[object] = Shape("metrics", parse_filter("metrics", {}), "delta+msgpack")
    assert shape.delta is not None
    shape.delta.seed("e-7", _full(7000, 3.0))
    frame = shape.base_snapshot_frame()
    assert isinstance(frame, bytes) and shape.base_snapshot_frame() is frame
    assert msgpack.unpackb(frame)["cursor"] == "e-7"

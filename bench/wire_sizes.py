"""Bytes on the wire per `metrics` frame, by encoding, against the naive full-JSON frame.

    .venv/bin/python bench/wire_sizes.py --servers 20 --ticks 300

Runs the simulated fleet (deterministic, no network) for `--ticks` 1 s steps and encodes every tick's
event as the hub would: full JSON (the naive frame), full msgpack, the `delta` encoding in JSON and in
msgpack; each plain, with the hub's shared deflate (no context takeover: one compression per frame for
every client) and, for reference, with per-connection context takeover (what a per-client compressor
reaches). Sizes are whole WebSocket frames (header included).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from openmanager.core.delta import DeltaEncoder
from openmanager.core.encoding import encode_event, pack_event
from openmanager.core.status import StatusPolicy
from openmanager.core.wsframe import frame_bytes
from openmanager.sources.simulator import FleetSimulator

SUB = "s0123456789abcdef"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, default=20)
    p.add_argument("--ticks", type=int, default=300)
    args = p.parse_args()
    sim = FleetSimulator(servers=args.servers, seed=1)
    policy = StatusPolicy()
    ts = 1_800_000_000_000
    delta_json, delta_pack = DeltaEncoder(), DeltaEncoder()
    totals: dict[str, int] = {}
    takeover: dict[str, zlib._Compress] = {}
    for i in range(args.ticks + 1):
        ts += 1000
        samples, _ = sim.step(ts, 1.0)
        servers = {s.server: {**s.values, "status": policy.derive(s.values).value} for s in samples}
        data = {"ts": ts, "servers": servers}
        cursor = f"0badc0de-{i}"
        payloads: dict[str, str | bytes] = {
            "json (naive)": encode_event(SUB, cursor, data),
            "msgpack": pack_event(SUB, cursor, data),
            "delta json": encode_event(SUB, cursor, delta_json.step(cursor, data)),
            "delta msgpack": pack_event(SUB, cursor, delta_pack.step(cursor, data)),
        }
        if i == 0:
            continue  # the first delta is the whole state (the snapshot's job)
        for name, payload in payloads.items():
            raw = payload.encode() if isinstance(payload, str) else payload
            totals[name] = totals.get(name, 0) + len(frame_bytes(payload, 0))
            totals[name + " + deflate"] = totals.get(name + " + deflate", 0) + len(frame_bytes(payload, 15))
            c = takeover.setdefault(name, zlib.compressobj(6, zlib.DEFLATED, -15))
            out = c.compress(raw) + c.flush(zlib.Z_SYNC_FLUSH)
            key = name + " + deflate, context takeover"
            totals[key] = totals.get(key, 0) + len(out) - 4 + 4  # the trailer stripped, a 2-4 B header
    naive = totals["json (naive)"] / args.ticks
    print(f"{args.servers} servers, {args.ticks} ticks; bytes per frame on the wire (header included)")
    print("| encoding | B/frame | % of naive JSON |")
    print("|---|---:|---:|")
    for name, total in totals.items():
        per = total / args.ticks
        print(f"| {name} | {per:.0f} | {per / naive:.1%} |")


if __name__ == "__main__":
    main()

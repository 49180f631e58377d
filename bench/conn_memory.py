"""Where a WebSocket connection's memory goes in the hub: tracemalloc by source line, per connection.

    .venv/bin/python bench/conn_memory.py --clients 1000

Runs the hub in this process (uvicorn with `FastSendProtocol`, the simulated fleet, tracemalloc on),
connects `--clients` subscribers to `metrics` from one Node load-generator process
(bench/peers/loadgen.js, so the clients allocate nothing here), lets a few ticks go by, and prints the
Python allocations that grew, grouped by file and line, divided by the number of clients, plus RSS per
connection. tracemalloc sees Python-level allocations only (not the kernel's socket buffers, which are
not in RSS either); its own overhead inflates RSS, so read the RSS figure from `sidebyside.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from _harness import free_port, raise_nofile_limit

PEERS = Path(__file__).resolve().parent / "peers"


async def main(args: argparse.Namespace) -> None:
    import uvicorn

    from openmanager.config import Settings
    from openmanager.root import Root
    from openmanager.server import uvicorn_config

    token = "mem-" + secrets.token_hex(8)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings().replace(port=port, data_dir=tmp, local=False, servers=20, seed=1, log_level="warning")
        server = uvicorn.Server(uvicorn_config(settings, Root.build(settings, admin_token=token)))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        await asyncio.sleep(3)
        gc.collect()
        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        snap0 = tracemalloc.take_snapshot()
        cmd = ["node", str(PEERS / "loadgen.js"), "--url", f"ws://127.0.0.1:{port}/ws?token={token}",
               "--kind", "hub", "--clients", str(args.clients), "--deadline", str(time.time() + 300),
               *(["--compression", "1"] if args.compression else [])]
        gen = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # noqa: ASYNC220
        assert gen.stdout is not None
        line = await asyncio.get_running_loop().run_in_executor(None, gen.stdout.readline)
        print(line.strip()[:200])
        await asyncio.sleep(3)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        rss1 = proc.memory_info().rss
        n = args.clients
        stats = snap1.compare_to(snap0, "lineno")
        total = sum(s.size_diff for s in stats)
        print(f"Python allocations: {total / n / 1024:.1f} KB per connection (tracemalloc); "
              f"RSS {(rss1 - rss0) / n / 1024:.1f} KB per connection (with tracemalloc's overhead)")
        by_file: dict[str, int] = {}
        for s in stats:
            frame = s.traceback[0]
            key = frame.filename.split("site-packages/")[-1].split("src/")[-1]
            by_file[key] = by_file.get(key, 0) + s.size_diff
        print("| file | bytes per connection |")
        print("|---|---:|")
        for key, size in sorted(by_file.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| {key} | {size / n:.0f} |")
        print("\ntop lines:")
        for s in stats[: args.top]:
            frame = s.traceback[0]
            print(f"{s.size_diff / n:8.0f} B  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}")
        gen.kill()
        gen.wait()
        server.should_exit = True
        await task


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--compression", action="store_true", help="clients offer permessage-deflate")
    raise_nofile_limit()
    tracemalloc.start(1)
    import uvloop

    uvloop.run(main(p.parse_args()))

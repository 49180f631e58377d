"""The dashboard's fleet view with a big fleet, in Debian's headless Chromium: scripting time per metrics
update and JS heap over a long run, beside a baseline in the same run.

    .venv/bin/python bench/dashboard.py                      # 1,000 servers, 10 min, then a 60 s baseline
    .venv/bin/python bench/dashboard.py --duration 60 --baseline-duration 30 --json out.json

A hub with `--servers N` (simulated, 1 s tick) streams `metrics` to the fleet view at 1280x720. Through
the DevTools protocol (Playwright's CDP session) the run reads `Performance.getMetrics` every
`--sample` seconds: ScriptDuration and TaskDuration (main-thread time) divided by the metrics events the
page's HubClient delivered in between give the scripting (and total main-thread) time per update; the JS
heap is read after a forced garbage collection (`HeapProfiler.collectGarbage`) at the start, every
minute and at the end, so "flat" means the retained heap, not garbage waiting to be collected. Long tasks
(> 50 ms) are counted by a PerformanceObserver in the page.

The baseline is the same page with the grid not virtualised (`/?virtualize=0`: every card in the DOM and
updated on each event), so the result reads as a ratio. Exit status 0 when the virtualised view stays
under 50 ms of scripting per update and its heap grew less than 20 % (or 5 MiB) from first to last, else 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, CDPSession, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.hubproc import HubProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
TARGET_MS = 50.0
LONGTASKS = """
window.__longtasks = { count: 0, max: 0 };
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    window.__longtasks.count += 1;
    window.__longtasks.max = Math.max(window.__longtasks.max, e.duration);
  }
}).observe({ type: "longtask", buffered: true });
"""


def metrics(cdp: CDPSession) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}


def heap_after_gc(cdp: CDPSession) -> float:
    cdp.send("HeapProfiler.collectGarbage")
    return metrics(cdp)["JSHeapUsedSize"]


def events(page: Page) -> int:
    return int(page.evaluate("window.omApp.live.metricsEvents"))


def measure(browser: Browser, hub: HubProcess, label: str, query: str, duration: float, sample: float,
            servers: int) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    context.add_init_script(LONGTASKS)
    try:
        page = context.new_page()
        page.goto(f"{hub.base}/?token={hub.token}")  # sets the session cookie
        page.goto(f"{hub.base}/{query}#/fleet")
        expect(page.locator("#conn")).to_have_attribute("data-state", "connected", timeout=30_000)
        expect(page.locator(".fleet-count")).to_have_text(f"{servers} of {servers} servers", timeout=60_000)
        page.wait_for_function("window.omApp.live.metricsEvents > 5", timeout=30_000)
        rendered = int(page.locator("#fleet-grid").get_attribute("data-rendered") or 0)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable", {"timeDomain": "threadTicks"})
        cdp.send("HeapProfiler.enable")
        heaps = [(0.0, heap_after_gc(cdp))]
        start = time.monotonic()
        prev_m, prev_e = metrics(cdp), events(page)
        per_update: list[float] = []
        busy_per_update: list[float] = []
        first_e = prev_e
        first_m = prev_m
        next_heap = 60.0
        while (elapsed := time.monotonic() - start) < duration:
            page.wait_for_timeout(min(sample, duration - elapsed) * 1000)
            m, e = metrics(cdp), events(page)
            if e > prev_e:
                per_update.append((m["ScriptDuration"] - prev_m["ScriptDuration"]) * 1000 / (e - prev_e))
                busy_per_update.append((m["TaskDuration"] - prev_m["TaskDuration"]) * 1000 / (e - prev_e))
            prev_m, prev_e = m, e
            t = time.monotonic() - start
            if t >= next_heap:
                heaps.append((t, heap_after_gc(cdp)))
                next_heap += 60.0
                prev_m = metrics(cdp)  # the forced GC is not the page's work
        heaps.append((time.monotonic() - start, heap_after_gc(cdp)))
        total_events = prev_e - first_e
        longtasks = page.evaluate("window.__longtasks")
        result = {
            "label": label,
            "url": f"/{query}#/fleet",
            "seconds": round(time.monotonic() - start, 1),
            "updates": total_events,
            "cards_in_dom": rendered,
            "script_ms_per_update": round((prev_m["ScriptDuration"] - first_m["ScriptDuration"]) * 1000
                                          / max(1, total_events), 2),
            "script_ms_per_update_p95_window": round(sorted(per_update)[int(0.95 * (len(per_update) - 1))], 2)
            if per_update else None,
            "main_thread_ms_per_update": round(statistics.fmean(busy_per_update), 2) if busy_per_update else None,
            "layout_s": round(prev_m["LayoutDuration"] - first_m["LayoutDuration"], 2),
            "style_s": round(prev_m["RecalcStyleDuration"] - first_m["RecalcStyleDuration"], 2),
            "heap_mib": [(round(t), round(hp / 2**20, 2)) for t, hp in heaps],
            "heap_first_mib": round(heaps[0][1] / 2**20, 2),
            "heap_last_mib": round(heaps[-1][1] / 2**20, 2),
            "dom_nodes": int(metrics(cdp)["Nodes"]),
            "long_tasks": longtasks["count"],
            "long_task_max_ms": round(longtasks["max"], 1),
        }
        page.close()
        return result
    finally:
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--tick", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds measured on the virtualised view")
    parser.add_argument("--baseline-duration", type=float, default=60.0, help="seconds on the baseline (0: skip)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between two readings")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="om-bench-dashboard-") as tmp:
        hub = HubProcess(Path(tmp), "--servers", str(args.servers), "--tick", str(args.tick), "--no-local",
                         "--seed", "1").start(timeout=120)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--disable-gpu"])
                try:
                    results.append(measure(browser, hub, "dashboard (virtualised grid)", "", args.duration,
                                           args.sample, args.servers))
                    if args.baseline_duration > 0:
                        results.append(measure(browser, hub, "baseline (every card in the DOM)", "?virtualize=0",
                                               args.baseline_duration, args.sample, args.servers))
                finally:
                    browser.close()
        finally:
            hub.stop()
    report = {"servers": args.servers, "tick_s": args.tick, "results": results}
    if len(results) == 2 and results[0]["script_ms_per_update"]:
        ratio = results[1]["script_ms_per_update"] / results[0]["script_ms_per_update"]
        report["baseline_over_dashboard"] = round(ratio, 1)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    main_run = results[0]
    grew = main_run["heap_last_mib"] - main_run["heap_first_mib"]
    ok = main_run["script_ms_per_update"] < TARGET_MS and (grew < 5 or grew < 0.2 * main_run["heap_first_mib"])
    print(f"{'PASS' if ok else 'FAIL'}: {main_run['script_ms_per_update']} ms scripting per update"
          f" (target < {TARGET_MS}), heap {main_run['heap_first_mib']} -> {main_run['heap_last_mib']} MiB",
          file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

// Hub performance: the `system` topic once a second (connections, throughput, compression, drops,
// fan-out latency) as tiles and charts, this browser's own link, and the scheduled jobs.

import { get } from "../api";
import { LiveChart } from "../components/chart";
import { frameThrottle, h, replace, setText } from "../dom";
import { bytes, compactBytes, dateTime, ms, num } from "../format";
import { t, type Key } from "../i18n";
import { cssVar } from "../theme";
import type { Ctx, View } from "../view";

interface Job {
  id: string;
  name: string;
  trigger: string;
  timezone: string | null;
  next_run_at: number | null;
}

export function hubView(ctx: Ctx): View {
  const { live } = ctx;
  const tiles = new Map<string, HTMLElement>();
  const tile = (key: Key, id: string) => {
    const v = h("strong", { class: "tile-value", text: "–" });
    tiles.set(id, v);
    return h("div", { class: "tile", dataset: { stat: id } }, h("span", { class: "tile-label", text: t(key) }), v);
  };
  const grid = h("section", { class: "tiles", aria: { label: t("hub.title") } },
    tile("hub.connections", "connections"), tile("hub.messages", "messages"), tile("hub.bytes", "bytes"),
    tile("hub.compression", "compression"), tile("hub.ingest", "ingest"), tile("hub.fanout", "fanout"),
    tile("hub.drops", "drops"), tile("hub.conflations", "conflations"), tile("hub.slow", "slow"));
  const mine = h("section", { class: "tiles small", aria: { label: t("hub.thisBrowser") } },
    tile("conn.label", "state"), tile("hub.messages", "c-msgs"), tile("hub.bytes", "c-bytes"), tile("hub.duplicates", "c-dups"));
  const waiting = h("p", { class: "muted", text: t("hub.waiting") });
  const c1 = cssVar("--series-1") || "#2f6fde";
  const charts = [
    new LiveChart({ metric: "messages", title: t("hub.messages"), series: [{ label: "msg/s", color: c1 }], format: (v) => num(v, 0) }),
    new LiveChart({ metric: "bytes", title: t("hub.bytes"), series: [{ label: "bytes/s", color: c1 }], format: (v) => `${bytes(v)}/s`, axisFormat: compactBytes }),
    new LiveChart({ metric: "fanout", title: t("hub.fanout"), series: [{ label: "p99", color: c1 }], format: (v) => ms(v) }),
  ];
  const jobs = h("tbody");

  const render = frameThrottle(() => {
    const s = live.system;
    const c = live.client;
    setText(tiles.get("state")!, `${c.state}${c.rtt !== null ? ` · ${Math.round(c.rtt)} ms` : ""}`);
    setText(tiles.get("c-msgs")!, num(c.messagesPerSecond, 0));
    setText(tiles.get("c-bytes")!, `${bytes(c.bytesPerSecond)}/s`);
    setText(tiles.get("c-dups")!, num(c.duplicatesDropped, 0));
    if (!s) return;
    waiting.hidden = true;
    setText(tiles.get("connections")!, `${s.connections.ws} / ${s.connections.sse}`);
    setText(tiles.get("messages")!, num(s.messages_per_s, 0));
    setText(tiles.get("bytes")!, `${bytes(s.bytes_per_s)}/s`);
    setText(tiles.get("compression")!, s.compression_ratio ? `×${num(s.compression_ratio, 1)}` : "–");
    setText(tiles.get("ingest")!, num(s.ingest_per_s, 0));
    setText(tiles.get("fanout")!, ms(s.fanout_p99_ms));
    setText(tiles.get("drops")!, num(s.drops, 0));
    setText(tiles.get("conflations")!, num(s.conflations, 0));
    setText(tiles.get("slow")!, num(s.slow_consumer_closes, 0));
    const hist = live.systemHistory;
    charts[0].setData([hist.ts, hist.messages] as never);
    charts[1].setData([hist.ts, hist.bytes] as never);
    charts[2].setData([hist.ts, hist.fanout] as never);
  });
  const offs = [live.on("system", render), live.client.on("stats", render)];

  const el = h("div", { class: "view view-hub" },
    h("header", { class: "view-header" }, h("h1", { text: t("hub.title") })),
    waiting, grid, h("section", { class: "charts" }, ...charts.map((c) => c.el)),
    h("h2", { text: t("hub.thisBrowser") }), mine,
    h("section", { class: "panel" }, h("h2", { text: t("hub.jobs") }),
      h("table", { class: "table" }, h("thead", null, h("tr", null,
        ...(["hub.job", "hub.trigger", "hub.nextRun"] as Key[]).map((k) => h("th", { text: t(k), attrs: { scope: "col" } })))), jobs)));
  return {
    el,
    mounted() {
      for (const c of charts) c.mount();
      render();
      void get<{ jobs: Job[] }>("/api/v1/jobs").then((r) => {
        replace(jobs, ...r.jobs.map((j) => h("tr", null, h("td", { text: j.id }),
          h("td", { text: `${j.trigger}${j.timezone ? ` (${j.timezone})` : ""}` }), h("td", { text: dateTime(j.next_run_at) }))));
      }, () => {});
    },
    destroy() {
      for (const off of offs) off();
      for (const c of charts) c.destroy();
    },
  };
}

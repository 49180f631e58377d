// Hub performance: the `system` topic once a second (connections, what the hub sent, its measured
// compression, drops, fan-out latency) as tiles and charts; what this browser received on its own link;
// and the scheduled jobs.

import { get } from "../api";
import { LiveChart } from "../components/chart";
import { frameThrottle, h, replace, setText } from "../dom";
import { bytes, compactBytes, dateTime, ms, num, perSecond } from "../format";
import { data, t, tOr, type Key } from "../i18n";
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
    tile("hub.link", "state"), tile("hub.received", "c-msgs"), tile("hub.bytesReceived", "c-bytes"), tile("hub.duplicates", "c-dups"));
  const waiting = h("p", { class: "muted", text: t("hub.waiting") });
  const c1 = cssVar("--series-1") || "#2f6fde";
  const charts = [
    new LiveChart({ metric: "messages", title: t("hub.messages"), series: [{ label: t("hub.messages"), color: c1 }], format: (v) => num(v, 0) }),
    new LiveChart({ metric: "bytes", title: t("hub.bytes"), series: [{ label: t("hub.bytes"), color: c1 }], format: (v) => perSecond(bytes(v)), axisFormat: compactBytes }),
    new LiveChart({ metric: "fanout", title: t("hub.fanout"), series: [{ label: t("hub.fanout"), color: c1 }], format: (v) => ms(v) }),
  ];
  const jobs = h("tbody");

  const render = frameThrottle(() => {
    const s = live.system;
    const c = live.client;
    setText(tiles.get("state")!, `${tOr(`conn.state.${c.state}`, c.state)}${c.rtt !== null ? ` · ${ms(Math.round(c.rtt))}` : ""}`);
    setText(tiles.get("c-msgs")!, num(c.messagesPerSecond, 0));
    setText(tiles.get("c-bytes")!, perSecond(bytes(c.bytesPerSecond)));
    setText(tiles.get("c-dups")!, num(c.duplicatesDropped, 0));
    if (!s) return;
    waiting.hidden = true;
    setText(tiles.get("connections")!, `${s.connections.ws} / ${s.connections.sse}`);
    setText(tiles.get("messages")!, num(s.messages_per_s, 0));
    setText(tiles.get("bytes")!, perSecond(bytes(s.bytes_per_s)));
    // As measured by the hub (uncompressed frame bytes ÷ bytes written): 1.0 means nothing was compressed.
    const ratio = s.compression_ratio;
    setText(tiles.get("compression")!, typeof ratio !== "number" ? "–" : ratio <= 1 ? t("hub.uncompressed") : `×${num(ratio, 1)}`);
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
        replace(jobs, ...r.jobs.map((j) => h("tr", null, h("td", null, data(j.id)),
          h("td", null, data(`${j.trigger}${j.timezone ? ` (${j.timezone})` : ""}`)), h("td", { text: dateTime(j.next_run_at) }))));
      }, () => {});
    },
    destroy() {
      for (const off of offs) off();
      for (const c of charts) c.destroy();
    },
  };
}

// Server detail: live uPlot charts backfilled from /history (range 5m / 15m / 1h), the current values,
// the server's labelled series (each mount's bar and a chart of them all, interfaces, devices, a per-core
// heat strip: the metrics subscription asks for them with the `series` option), its active alerts and logs.

import { ApiError, get, query } from "../api";
import { AlertList } from "../components/alertRow";
import { LiveChart } from "../components/chart";
import { ServerForecastOverlay } from "../components/forecast";
import { LogList } from "../components/logList";
import { SeriesPanel, seriesOf, sortLabels } from "../components/seriesPanel";
import { frameThrottle, h, replace, setText } from "../dom";
import { ago, bytes, compactBytes, duration, ms, num, pct, perSecond } from "../format";
import { data, t, tn, type Key } from "../i18n";
import { Held } from "../live";
import { cssVar } from "../theme";
import { SHAPES, type Alert, type LogRecord, type MetricsData, type Sample, type ServerInfo, type Status } from "../types";
import type { Ctx, View } from "../view";

type Range = "5m" | "15m" | "1h";
const RANGES: Record<Range, { seconds: number; step?: string }> = {
  "5m": { seconds: 300 },
  "15m": { seconds: 900 },
  "1h": { seconds: 3600, step: "4s" },
};
const METRICS = ["cpu", "memory", "disk", "net_in", "net_out", "response_time"] as const;
type Metric = (typeof METRICS)[number];
let range: Range = "5m";

/** Rows of one shared time axis: x in seconds, one column per metric (null where a metric has no point). */
class Series {
  xs: number[] = [];
  cols: Record<Metric, (number | null)[]> = { cpu: [], memory: [], disk: [], net_in: [], net_out: [], response_time: [] };

  /** Rows from the six histories. They were read one by one, so one may end a tick later than another:
   * rows after the earliest end are left out (the live samples fill them), so no metric has a false gap. */
  static fromHistory(results: Record<Metric, [number, number][]>): Series {
    const rows = new Map<number, Partial<Record<Metric, number>>>();
    let end = Infinity;
    for (const m of METRICS) if (results[m].length) end = Math.min(end, results[m][results[m].length - 1][0]);
    for (const m of METRICS) {
      for (const [ts, v] of results[m]) {
        if (ts > end) break;
        let row = rows.get(ts);
        if (!row) rows.set(ts, (row = {}));
        row[m] = v;
      }
    }
    const s = new Series();
    for (const ts of [...rows.keys()].sort((a, b) => a - b)) s.push(ts, rows.get(ts)!);
    return s;
  }

  get lastMs(): number {
    return this.xs.length ? Math.round(this.xs[this.xs.length - 1] * 1000) : 0;
  }

  push(tsMs: number, values: Partial<Record<Metric, number>>): void {
    this.xs.push(tsMs / 1000);
    for (const m of METRICS) this.cols[m].push(values[m] ?? null);
  }

  trim(keepSeconds: number): void {
    if (!this.xs.length) return;
    const from = this.xs[this.xs.length - 1] - keepSeconds;
    let n = 0;
    while (n < this.xs.length && this.xs[n] < from) n++;
    if (!n) return;
    this.xs.splice(0, n);
    for (const m of METRICS) this.cols[m].splice(0, n);
  }
}

const PALETTE = ["#2459c7", "#c2410c", "#15803d", "#7c3aed", "#b45309", "#0e7490", "#be185d", "#4d7c0f"];

/** One chart's rows for a set of labelled series (`disk:mount=/var` ...): x in seconds, a column per key. */
class KeyedRows {
  xs: number[] = [];
  cols: (number | null)[][];
  constructor(readonly keys: string[]) {
    this.cols = keys.map(() => []);
  }

  static fromHistory(keys: string[], results: [number, number][][]): KeyedRows {
    const rows = new Map<number, Map<number, number>>();
    results.forEach((points, k) => {
      for (const [ts, v] of points) {
        let row = rows.get(ts);
        if (!row) rows.set(ts, (row = new Map()));
        row.set(k, v);
      }
    });
    const out = new KeyedRows(keys);
    for (const ts of [...rows.keys()].sort((a, b) => a - b)) {
      out.xs.push(ts / 1000);
      out.cols.forEach((col, k) => col.push(rows.get(ts)!.get(k) ?? null));
    }
    return out;
  }

  push(tsMs: number, sample: Record<string, unknown>): void {
    if (this.xs.length && tsMs / 1000 <= this.xs[this.xs.length - 1]) return;
    this.xs.push(tsMs / 1000);
    this.keys.forEach((key, k) => {
      const v = sample[key];
      this.cols[k].push(typeof v === "number" ? v : null);
    });
  }

  trim(keepSeconds: number): void {
    if (!this.xs.length) return;
    const from = this.xs[this.xs.length - 1] - keepSeconds;
    let n = 0;
    while (n < this.xs.length && this.xs[n] < from) n++;
    if (!n) return;
    this.xs.splice(0, n);
    for (const col of this.cols) col.splice(0, n);
  }
}

export function serverView(ctx: Ctx, params: string[]): View {
  const { live } = ctx;
  const id = params[0] ?? "";
  const offs: (() => void)[] = [];
  let destroyed = false;
  let series = new Series();
  let ready = false;
  let early: MetricsData[] = [];
  let latest: Sample = live.servers.get(id)?.sample ?? {};
  let info: ServerInfo | null = live.servers.get(id)?.info ?? null;
  const held: Held[] = [];
  let loadSeq = 0;

  // -- header --------------------------------------------------------------------------------------
  const shape = h("span", { class: "shape", aria: { hidden: "true" } });
  const statusText = h("span", { class: "status-text" });
  const title = h("h1", { class: "server-title" }, shape, data(id), statusText);
  // Host name, role, environment, location and tags are data (as written); the rest is interface text.
  const metaData = h("span", { attrs: { translate: "no" } });
  const metaSource = h("span");
  const metaSeen = h("span");
  const meta = h("p", { class: "muted server-meta" }, metaData, metaSource, metaSeen);
  const rangeButtons = (Object.keys(RANGES) as Range[]).map((r) => h("button", {
    type: "button", class: "seg", text: t(`range.${r}` as Key), dataset: { range: r }, aria: { pressed: String(r === range) },
    on: { click: () => setRange(r) },
  }));
  const header = h("header", { class: "view-header" },
    h("a", { href: "#/fleet", class: "back", text: t("server.back") }), title, meta,
    h("div", { class: "segmented", role: "group", aria: { label: t("server.range") } }, ...rangeButtons));

  // -- charts ----------------------------------------------------------------------------------------
  const c1 = cssVar("--series-1") || "#2f6fde";
  const c2 = cssVar("--series-2") || "#c2410c";
  const charts: { chart: LiveChart; metrics: Metric[] }[] = [
    { chart: new LiveChart({ metric: "cpu", title: `${t("metric.cpu")} %`, series: [{ label: t("metric.cpu"), color: c1 }], range: [0, 100], format: (v) => `${num(v, 0)}%` }), metrics: ["cpu"] },
    { chart: new LiveChart({ metric: "memory", title: `${t("metric.memory")} %`, series: [{ label: t("metric.memory"), color: c1 }], range: [0, 100], format: (v) => `${num(v, 0)}%` }), metrics: ["memory"] },
    { chart: new LiveChart({ metric: "disk", title: `${t("metric.disk")} %`, series: [{ label: t("metric.disk"), color: c1 }], range: [0, 100], format: (v) => `${num(v, 0)}%` }), metrics: ["disk"] },
    { chart: new LiveChart({ metric: "network", title: t("metric.network"), series: [{ label: t("series.in"), color: c1 }, { label: t("series.out"), color: c2 }], format: (v) => perSecond(bytes(v)), axisFormat: compactBytes }), metrics: ["net_in", "net_out"] },
    { chart: new LiveChart({ metric: "response_time", title: t("metric.response_time"), series: [{ label: t("metric.response_time"), color: c1 }], format: (v) => ms(v) }), metrics: ["response_time"] },
  ];
  // A server that reports no response time (an agent on a host with no service to time) gets a note
  // instead of an empty chart; the chart comes back with its first value.
  const responseChart = charts[charts.length - 1].chart;
  const noResponseTime = h("p", { class: "muted chart-note", id: "no-response-time", hidden: true, text: t("server.noResponseTime") });
  function reportsResponseTime(): boolean {
    return latest.response_time !== undefined || series.cols.response_time.some((v) => v !== null);
  }
  const forecast = new ServerForecastOverlay(id, charts.filter((c) => c.metrics.length === 1).map((c) => ({ chart: c.chart, metric: c.metrics[0] })));
  const loading = h("p", { class: "muted", text: t("server.loading") });
  const chartGrid = h("section", { class: "charts", aria: { label: t("server.details") } }, ...charts.map((c) => c.chart.el));

  // -- labelled series: a panel of bars, rows and cells, and one chart of every mount -----------------
  const seriesPanel = new SeriesPanel();
  let mountKeys: string[] = [];
  let mountChart: LiveChart | null = null;
  let mountRows = new KeyedRows([]);
  let mounted = false;
  function ensureMountChart(sample: Record<string, unknown>): void {
    const keys = sortLabels(seriesOf(sample).get("disk")?.keys() ?? []).map((m) => `disk:mount=${m}`);
    if (!keys.length || JSON.stringify(keys) === JSON.stringify(mountKeys)) return;
    mountKeys = keys;
    mountRows = new KeyedRows(keys);
    mountChart?.el.remove();
    mountChart?.destroy();
    mountChart = new LiveChart({
      metric: "mounts", title: t("series.mountsChart"), range: [0, 100], format: (v) => `${num(v, 0)}%`,
      series: keys.map((key, i) => ({ label: key.slice("disk:mount=".length), color: PALETTE[i % PALETTE.length] })),
    });
    chartGrid.append(mountChart.el);
    if (mounted) mountChart.mount();
    void backfillMounts();
  }
  async function backfillMounts(): Promise<void> {
    const keys = mountKeys;
    const r = RANGES[range];
    try {
      const results = await Promise.all(keys.map((key) => get<{ points: [number, number][] }>(
        `/api/v1/servers/${encodeURIComponent(id)}/history${query({ metric: "disk", mount: key.slice("disk:mount=".length), since: range, step: r.step })}`)));
      if (destroyed || keys !== mountKeys) return;
      mountRows = KeyedRows.fromHistory(keys, results.map((res) => res.points));
    } catch {
      if (destroyed || keys !== mountKeys) return;
      mountRows = new KeyedRows(keys);
    }
    mountRows.trim(r.seconds);
    redraw();
  }

  const redraw = frameThrottle(() => {
    for (const { chart, metrics } of charts) chart.setData([series.xs, ...metrics.map((m) => series.cols[m])] as never);
    mountChart?.setData([mountRows.xs, ...mountRows.cols] as never);
    if (ready) {
      const reported = reportsResponseTime();
      responseChart.el.hidden = !reported;
      noResponseTime.hidden = reported;
    }
  });

  // -- current values ----------------------------------------------------------------------------------
  const values = h("dl", { class: "values" });
  function renderValues(): void {
    const s = latest;
    const status = (s.status ?? info?.status ?? "offline") as Status;
    setText(shape, SHAPES[status]);
    setText(statusText, t(`status.${status}` as Key));
    title.className = `server-title st-${status}`;
    title.dataset.status = status;
    if (info) {
      setText(metaData, [info.hostname, info.role, info.environment, info.location,
        ...Object.entries(info.tags ?? {}).map(([k, v]) => `${k}=${v}`)].filter(Boolean).join(" · "));
      if (metaSource.dataset.source !== info.source) {
        replace(metaSource, " · ", ...tn("server.source", { source: info.source }), " · ");
        metaSource.dataset.source = info.source;
      }
      setText(metaSeen, t("server.lastSeen", { time: ago(live.servers.get(id)?.ts || info.last_seen) }));
    }
    const rows: [Key, string][] = [
      ["metric.cpu", pct(s.cpu)], ["metric.memory", pct(s.memory)], ["metric.disk", pct(s.disk)], ["metric.swap", pct(s.swap)],
      ["metric.load", [s.load1, s.load5, s.load15].map((v) => num(v, 2)).join(" / ")],
      ["metric.net_in", perSecond(bytes(s.net_in))], ["metric.net_out", perSecond(bytes(s.net_out))],
      ["metric.response_time", s.response_time === undefined ? t("server.notReported") : ms(s.response_time)], ["metric.error_rate", s.error_rate === undefined ? "–" : `${num(s.error_rate, 2)}%`],
      ["metric.connections", num(s.connections, 0)], ["metric.processes", num(s.processes, 0)], ["metric.uptime", duration(s.uptime)],
    ];
    if (values.childElementCount !== rows.length * 2) {
      replace(values, ...rows.flatMap(([k]) => [h("dt", { text: t(k) }), h("dd", { dataset: { key: k } })]));
    }
    rows.forEach(([, v], i) => setText(values.children[i * 2 + 1], v));
    seriesPanel.update(s as Record<string, unknown>);
  }

  // -- alerts and logs ------------------------------------------------------------------------------
  const alertList = new AlertList(ctx.me.role, () => renderAlerts(), "alert-list compact");
  const noAlerts = h("p", { class: "muted", text: t("server.noAlerts") });
  function renderAlerts(): void {
    const mine: Alert[] = [...live.alerts.values()].filter((a) => a.server === id || (a.servers ?? []).includes(id));
    alertList.update(mine);
    noAlerts.hidden = mine.length > 0;
  }
  const logs = new LogList(500, false, `${t("server.logs")} ${id}`);

  const el = h("div", { class: "view view-server", dataset: { server: id } },
    header, forecast.el, loading, chartGrid, noResponseTime,
    h("div", { class: "columns" },
      h("section", { class: "panel" }, h("h2", { text: t("server.details") }), values),
      h("section", { class: "panel" }, h("h2", { text: t("server.alerts") }), noAlerts, alertList.el)),
    seriesPanel.el,
    h("section", { class: "panel" }, h("h2", { text: t("server.logs") }), logs.el));

  function onMetrics(d: MetricsData): void {
    const sample = d.servers[id];
    if (!sample) return;
    latest = sample;
    renderValues();
    ensureMountChart(sample as Record<string, unknown>);
    if (mountKeys.length) {
      mountRows.push(d.ts, sample as Record<string, unknown>);
      mountRows.trim(RANGES[range].seconds);
    }
    if (!ready) {
      early.push(d);
      return;
    }
    if (d.ts <= series.lastMs) return;
    series.push(d.ts, sample as Partial<Record<Metric, number>>);
    series.trim(RANGES[range].seconds);
    redraw();
  }

  async function backfill(): Promise<void> {
    const mine = ++loadSeq;
    ready = false;
    loading.hidden = false;
    const r = RANGES[range];
    try {
      const results = await Promise.all(METRICS.map((m) =>
        get<{ points: [number, number][] }>(`/api/v1/servers/${encodeURIComponent(id)}/history${query({ metric: m, since: range, step: r.step })}`)));
      if (destroyed || mine !== loadSeq) return;
      series = Series.fromHistory(Object.fromEntries(METRICS.map((m, i) => [m, results[i].points])) as Record<Metric, [number, number][]>);
    } catch {
      if (destroyed || mine !== loadSeq) return;
      series = new Series();
    }
    ready = true;
    loading.hidden = true;
    const held = early;
    early = [];
    for (const d of held) onMetrics(d);
    series.trim(r.seconds);
    redraw();
  }

  function setRange(r: Range): void {
    range = r;
    for (const b of rangeButtons) b.setAttribute("aria-pressed", String(b.dataset.range === r));
    void backfill();
    if (mountKeys.length) void backfillMounts();
  }

  async function start(): Promise<void> {
    try {
      info = await get<ServerInfo>(`/api/v1/servers/${encodeURIComponent(id)}`);
      if (!live.servers.get(id)?.ts) latest = { ...info.sample, ...(info.series ?? {}), status: info.status };
    } catch (error) {
      if ((error as ApiError).status === 404) {
        replace(el, header, h("p", { class: "empty", text: t("server.notFound", { id }) }));
        return;
      }
    }
    if (destroyed) return;
    renderValues();
    ensureMountChart(latest as Record<string, unknown>);
    held.push(new Held(live.client.subscribe<MetricsData>("metrics", {
      filter: { servers: [id], series: true },
      onSnapshot: (d) => onMetrics(d),
      onEvent: (d) => onMetrics(d),
    })));
    // Live logs first (held until the stored ones are shown), then the stored ones, without duplicates.
    const liveLogs: LogRecord[] = [];
    let logsReady = false;
    held.push(new Held(live.client.subscribe<{ records: LogRecord[] }>("logs", {
      filter: { servers: [id] },
      onEvent: (d) => (logsReady ? logs.add(d.records) : liveLogs.push(...d.records)),
    })));
    void backfill();
    try {
      const stored = await get<{ logs: LogRecord[] }>(`/api/v1/logs${query({ server: id, limit: 200 })}`);
      if (destroyed) return;
      const seen = new Set(stored.logs.map(logKey));
      logs.add([...stored.logs, ...liveLogs.filter((r) => !seen.has(logKey(r)))]);
    } catch {
      logs.add(liveLogs);
    }
    logsReady = true;
  }

  offs.push(live.on("alerts", renderAlerts));
  renderValues();
  renderAlerts();

  return {
    el,
    mounted() {
      for (const { chart } of charts) chart.mount();
      mounted = true;
      mountChart?.mount();
      void start();
      forecast.start();
    },
    destroy() {
      destroyed = true;
      forecast.stop();
      for (const off of offs) off();
      for (const { chart } of charts) chart.destroy();
      mountChart?.destroy();
      for (const sub of held) sub.end();
    },
  };
}

export function logKey(r: LogRecord): string {
  return `${r.ts}|${r.server}|${r.service}|${r.message}`;
}

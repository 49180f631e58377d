// Forecasts on screen, from the hub's measured answers (docs/dashboard.md, docs/protocol.md):
// * fleet cards: "Disk full in 3 h 20 min" from GET /api/v1/forecasts (polled every 30 s);
// * server detail: the same line under the title, and on each single-metric chart the trend line (dashed,
//   continued into a quarter of the chart's span left ahead of the last point),
//   this hour's baseline band (centre ± spread) and anomaly marks (points whose robust z against the baseline
//   is above the hub's `anomaly_mark`), from GET /api/v1/servers/{id}/forecast.
// Nothing here estimates anything the hub did not answer: the line is the hub's least-squares fit, the band
// its baseline; a mark compares a drawn point with that baseline.

import type uPlot from "uplot";
import { get, query } from "../api";
import { h, setText } from "../dom";
import { duration } from "../format";
import { t, type Key } from "../i18n";
import { cssVar } from "../theme";
import type { LiveChart } from "./chart";

export interface MetricOutlook {
  points: number;
  trend: { slope: number; value: number; predicted: number } | null;
  limit: number | null;
  limit_in: number | null;
  limit_reason: string | null;
  baseline: { centre: number; spread: number; days: number } | null;
  baseline_reason: string | null;
  anomaly: number | null;
}

export interface ServerForecast {
  server: string;
  now: number;
  window: number;
  horizon: number;
  baseline_hour: [number, number];
  recent: number;
  anomaly_mark: number;
  metrics: Record<string, MetricOutlook>;
}

interface FleetForecasts {
  horizon: number;
  servers: Record<string, Record<string, { limit_in: number; at: number }>>;
}

const POLL_MS = 30_000;
/** A chart with a trend leaves this fraction of its span after the last point for the line ahead. */
const AHEAD = 0.25;
const FULL_KEYS: Record<string, Key> = { disk: "forecast.diskFull", memory: "forecast.memoryFull" };

/** "Disk full in 3 h 20 min": `seconds` counted from `atMs` (when the hub measured it), less the time since. */
export function fullIn(metric: string, seconds: number, atMs: number, now = Date.now()): string {
  const left = Math.max(0, seconds - Math.max(0, now - atMs) / 1000);
  const key = FULL_KEYS[metric] ?? "forecast.limitIn";
  return t(key, { time: duration(left), metric: t(`metric.${metric}` as Key) });
}

/** The soonest limit among `metrics` ({metric: [seconds, atMs]}), as a sentence, or "". */
function soonest(metrics: [string, number, number][]): string {
  if (!metrics.length) return "";
  const now = Date.now();
  const [metric, seconds, at] = metrics.reduce((a, b) => (b[1] - (now - b[2]) / 1000 < a[1] - (now - a[2]) / 1000 ? b : a));
  return fullIn(metric, seconds, at, now);
}

// -- fleet ------------------------------------------------------------------------------------------------

let fleet: FleetForecasts["servers"] = {};

/** Poll GET /api/v1/forecasts while the fleet view is shown; `changed` redraws the cards. Returns the stop. */
export function watchFleetForecasts(changed: () => void): () => void {
  let stopped = false;
  let timer = 0;
  const load = async (): Promise<void> => {
    try {
      const body = await get<FleetForecasts>("/api/v1/forecasts");
      if (stopped) return;
      fleet = body.servers;
      changed();
    } catch {
      // keep the last answer; the connection badge tells about the hub
    }
    if (!stopped) timer = window.setTimeout(() => void load(), POLL_MS);
  };
  void load();
  return () => {
    stopped = true;
    window.clearTimeout(timer);
  };
}

/** Fill the card's forecast line for server `id` (hidden when nothing reaches its limit within the day);
 * returns its text ("" when hidden) for the card's label. */
export function cardForecast(el: HTMLElement, id: string): string {
  const mine = fleet[id];
  const text = mine ? soonest(Object.entries(mine).map(([m, f]) => [m, f.limit_in, f.at])) : "";
  setText(el, text);
  el.hidden = !text;
  return text;
}

export function cardForecastElement(): HTMLElement {
  return h("div", { class: "card-forecast", hidden: true });
}

// -- server detail ----------------------------------------------------------------------------------------

/** The server view's forecast line and chart overlays; `charts` pairs each chart with its one metric. */
export class ServerForecastOverlay {
  readonly el: HTMLElement;
  private answer: ServerForecast | null = null;
  private timer = 0;
  private stopped = false;

  constructor(private readonly id: string, private readonly charts: { chart: LiveChart; metric: string }[]) {
    this.el = h("p", { class: "forecast-line", id: "forecast-line", hidden: true, aria: { live: "polite" } });
    for (const { chart, metric } of charts) chart.overlay = (u) => this.draw(u, chart, metric);
  }

  start(): void {
    void this.load();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
  }

  private async load(): Promise<void> {
    try {
      const answer = await get<ServerForecast>(
        `/api/v1/servers/${encodeURIComponent(this.id)}/forecast${query({ window: "1h", horizon: "24h" })}`);
      if (this.stopped) return;
      this.answer = answer;
      this.render();
    } catch {
      // keep the last answer
    }
    if (!this.stopped) this.timer = window.setTimeout(() => void this.load(), POLL_MS);
  }

  private render(): void {
    const a = this.answer;
    if (!a) return;
    const reaching = Object.entries(a.metrics)
      .filter(([, m]) => m.limit_in !== null)
      .map(([name, m]) => [name, m.limit_in as number, a.now] as [string, number, number]);
    const text = soonest(reaching);
    setText(this.el, text);
    this.el.hidden = !text;
    for (const { chart, metric } of this.charts) {
      chart.ahead = a.metrics[metric]?.trend ? AHEAD : 0;
      chart.redraw();
    }
  }

  /** uPlot draw hook of one chart: baseline band, trend line, anomaly marks; what was drawn is mirrored in
   * data attributes (`data-forecast-slope`, `data-baseline`, `data-anomalies`) for the browser tests. */
  private draw(u: uPlot, chart: LiveChart, metric: string): void {
    const a = this.answer;
    const m = a?.metrics[metric];
    const ds = chart.el.dataset;
    if (!a || !m) {
      delete ds.forecastSlope;
      delete ds.baseline;
      ds.anomalies = "0";
      return;
    }
    const xs = u.data[0];
    if (!xs.length) return;
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    const x0 = xs[0];
    const x1 = xs[xs.length - 1];
    const xEnd = u.scales.x.max ?? x1;  // the right edge: `ahead` of the last point
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    let marks = 0;
    const base = m.baseline;
    if (base) {
      const from = Math.max(x0, a.baseline_hour[0] / 1000);
      const to = Math.min(x1, a.baseline_hour[1] / 1000);
      ds.baseline = `${base.centre}±${base.spread}`;
      if (to > from) {
        const yHi = u.valToPos(base.centre + base.spread, "y", true);
        const yLo = u.valToPos(base.centre - base.spread, "y", true);
        const xa = u.valToPos(from, "x", true);
        const xb = u.valToPos(to, "x", true);
        ctx.fillStyle = `${cssVar("--healthy") || "#1a7f37"}26`;
        ctx.fillRect(xa, yHi, xb - xa, yLo - yHi);
        ctx.fillStyle = cssVar("--critical") || "#c8212c";
        const ys = u.data[1] as (number | null | undefined)[];
        for (let i = 0; i < xs.length; i++) {
          const v = ys[i];
          if (v === null || v === undefined || xs[i] < from || xs[i] > to) continue;
          if (Math.abs(v - base.centre) / base.spread <= a.anomaly_mark) continue;
          marks++;
          ctx.beginPath();
          ctx.arc(u.valToPos(xs[i], "x", true), u.valToPos(v, "y", true), 3.5 * devicePixelRatio, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    } else {
      delete ds.baseline;
    }
    ds.anomalies = String(marks);
    const trend = m.trend;
    if (trend) {
      const nowS = a.now / 1000;
      const at = (x: number): number => trend.value + trend.slope * (x - nowS);
      ctx.strokeStyle = cssVar("--warning") || "#9a5b00";
      ctx.lineWidth = 1.5 * devicePixelRatio;
      ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.beginPath();  // the fit over the points, then on into the room ahead
      ctx.moveTo(u.valToPos(x0, "x", true), u.valToPos(at(x0), "y", true));
      ctx.lineTo(u.valToPos(xEnd, "x", true), u.valToPos(at(xEnd), "y", true));
      ctx.stroke();
      ctx.setLineDash([]);
      ctx.lineWidth = 1 * devicePixelRatio;
      ctx.strokeStyle = cssVar("--muted") || "#666";
      const xNow = u.valToPos(x1, "x", true);  // where the points end
      ctx.beginPath();
      ctx.moveTo(xNow, top);
      ctx.lineTo(xNow, top + height);
      ctx.stroke();
      ds.forecastSlope = String(trend.slope);
      if (m.limit_in !== null) ds.forecastFullIn = fullIn(metric, m.limit_in, a.now);
      else delete ds.forecastFullIn;
    } else {
      delete ds.forecastSlope;
      delete ds.forecastFullIn;
    }
    ctx.restore();
  }
}

// A live time-series chart on uPlot: series share one x axis (seconds), data replaced with setData. The
// time axis is labelled by the page's one date/time formatter (format.ts), not uPlot's own English one.

import uPlot from "uplot";
import { h } from "../dom";
import { axisTime } from "../format";
import { cssVar } from "../theme";

export interface SeriesSpec {
  label: string;
  color: string;
}

export interface ChartOptions {
  title: string;
  series: SeriesSpec[];
  /** fixed y range (percentages), else auto from 0 */
  range?: [number, number];
  format: (v: number) => string;
  /** shorter labels for the y axis (default: format) */
  axisFormat?: (v: number) => string;
  height?: number;
  metric: string;
}

export class LiveChart {
  readonly el: HTMLElement;
  private plot: uPlot | null = null;
  private resizeObserver: ResizeObserver;
  private data: uPlot.AlignedData;
  private readonly current: HTMLElement;
  /** Drawn over the plot after each redraw (components/forecast.ts: trend line, baseline band, anomalies). */
  overlay: ((u: uPlot) => void) | null = null;
  /** Room left after the last point, as a fraction of the points' span (where the overlay draws a forecast). */
  ahead = 0;

  constructor(readonly opts: ChartOptions) {
    this.current = h("span", { class: "chart-current" });
    this.el = h("figure", { class: "chart", dataset: { metric: opts.metric } },
      h("figcaption", null, h("span", { text: opts.title }), this.current));
    this.data = [[], ...opts.series.map(() => [])] as unknown as uPlot.AlignedData;
    this.resizeObserver = new ResizeObserver(() => this.fit());
  }

  /** Create the plot once the element is in the document (uPlot needs its width). */
  mount(): void {
    const width = Math.max(200, this.el.clientWidth);
    const axis = cssVar("--muted") || "#666";
    const grid = cssVar("--grid") || "#8883";
    const fmt = this.opts.format;
    const axisFmt = this.opts.axisFormat ?? fmt;
    const range = this.opts.range;
    const options: uPlot.Options = {
      width,
      height: this.opts.height ?? 170,
      legend: { show: false },
      hooks: { draw: [(u) => this.overlay?.(u)] },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true, range: (_u, min, max) => [min, max + (max - min) * this.ahead] },
        y: range ? { range: () => range } : { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] },
      },
      axes: [
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid },
          values: (_u, splits, _axis, _space, increment) => this.timeLabels(splits, increment) },
        { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 64,
          values: (_u, splits) => splits.map((v) => axisFmt(v)) },
      ],
      series: [
        {},
        ...this.opts.series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          fill: `${s.color}22`,
          points: { show: false },
          value: (_u: uPlot, v: number | null) => (v === null ? "–" : fmt(v)),
        })),
      ],
    };
    this.plot = new uPlot(options, this.data, this.el);
    this.resizeObserver.observe(this.el);
    this.markLast();
  }

  /** Labels of the time axis' ticks (seconds, `increment` apart); the last ones drawn are kept in
   * `data-x-ticks` (joined by "|") for the browser tests, which cannot read a canvas. */
  private timeLabels(splits: number[], increment: number): string[] {
    const labels = splits.map((s) => axisTime(s * 1000, increment));
    const joined = labels.join("|");
    if (this.el.dataset.xTicks !== joined) this.el.dataset.xTicks = joined;
    return labels;
  }

  setData(data: uPlot.AlignedData): void {
    this.data = data;
    if (this.plot) this.plot.setData(data);
    this.markLast();
  }

  /** Draw again, scales included (the overlay's data or `ahead` changed). */
  redraw(): void {
    this.plot?.setData(this.data);
  }

  private markLast(): void {
    const xs = this.data[0];
    const parts: string[] = [];
    this.opts.series.forEach((spec, i) => {
      const ys = this.data[i + 1] as (number | null | undefined)[];
      let v: number | null | undefined = null;
      for (let k = ys.length - 1; k >= 0 && k >= ys.length - 5; k--) {
        if (ys[k] !== null && ys[k] !== undefined) {
          v = ys[k];
          break;
        }
      }
      const text = v === null || v === undefined ? "–" : this.opts.format(v);
      parts.push(this.opts.series.length > 1 ? `${spec.label} ${text}` : text);
    });
    const now = parts.join(" · ");
    if (this.current.textContent !== now) this.current.textContent = now;
    this.el.dataset.points = String(xs.length);
    if (xs.length) {
      this.el.dataset.firstTs = String(Math.round(xs[0] * 1000));
      this.el.dataset.lastTs = String(Math.round(xs[xs.length - 1] * 1000));
    }
  }

  private fit(): void {
    if (!this.plot) return;
    const width = Math.max(200, this.el.clientWidth);
    if (Math.abs(width - this.plot.width) > 1) this.plot.setSize({ width, height: this.plot.height });
  }

  destroy(): void {
    this.resizeObserver.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}

// Fleet overview: summary bar, filters, and a virtualised grid of server cards (only the rows in view,
// plus one above and below, exist in the DOM; cards are reused as the grid scrolls), updated at most
// once per animation frame from the live metrics.

import { cardForecast, cardForecastElement, watchFleetForecasts } from "../components/forecast";
import { drawSparkline, sparkColor } from "../components/sparkline";
import { frameThrottle, h, setText } from "../dom";
import { pct } from "../format";
import { t, type Key } from "../i18n";
import type { ServerState } from "../live";
import { STATUSES, SHAPES, type Status } from "../types";
import type { Ctx, View } from "../view";

const CARD_H = 142;
const GAP = 12;
const MIN_W = 230;
const OVERSCAN_ROWS = 1;
const THRESHOLDS: Record<"cpu" | "memory" | "disk", [number, number]> = {
  cpu: [70, 85], memory: [75, 85], disk: [80, 90],
};
const SEVERITY: Record<Status, number> = { critical: 0, warning: 1, offline: 2, maintenance: 3, healthy: 4 };

type SortKey = "name" | "status" | "cpu" | "memory" | "disk";

interface Filters {
  search: string;
  status: Status | "";
  role: string;
  environment: string;
  tag: string;
  sort: SortKey;
}

/** Kept across visits of the view. */
const filters: Filters = { search: "", status: "", role: "", environment: "", tag: "", sort: "name" };

/** `?virtualize=0` renders every card (the benchmark's baseline). */
const VIRTUALIZE = new URLSearchParams(location.search).get("virtualize") !== "0";

class Bar {
  readonly el: HTMLElement;
  private readonly fill: HTMLElement;
  private readonly val: HTMLElement;
  private last = NaN;
  constructor(private readonly metric: "cpu" | "memory" | "disk") {
    this.fill = h("span", { class: "bar-fill" });
    this.val = h("span", { class: "bar-val" });
    this.el = h("div", { class: "bar" },
      h("span", { class: "bar-label", text: t(`metric.${metric}` as Key) }),
      h("span", { class: "bar-track" }, this.fill), this.val);
  }
  set(v: number | undefined): void {
    const x = v === undefined ? NaN : Math.round(v * 10) / 10;
    if (Object.is(x, this.last)) return;
    this.last = x;
    if (Number.isNaN(x)) {
      this.fill.style.transform = "scaleX(0)";
      setText(this.val, "–");
      return;
    }
    this.fill.style.transform = `scaleX(${Math.max(0, Math.min(100, x)) / 100})`;
    const [warn, crit] = THRESHOLDS[this.metric];
    this.fill.className = x >= crit ? "bar-fill lvl-crit" : x >= warn ? "bar-fill lvl-warn" : "bar-fill";
    setText(this.val, pct(x));
  }
}

class Card {
  readonly el: HTMLAnchorElement;
  private readonly shape: HTMLElement;
  private readonly statusText: HTMLElement;
  private readonly name: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly bars: Record<"cpu" | "memory" | "disk", Bar>;
  private readonly canvas: HTMLCanvasElement;
  private readonly forecast: HTMLElement;
  id = "";
  index = -1;
  private status = "";
  private drawnTs = -1;
  private pos = "";
  private width = -1;

  constructor() {
    this.shape = h("span", { class: "shape", aria: { hidden: "true" } });
    this.statusText = h("span", { class: "status-text" });
    this.name = h("span", { class: "name", attrs: { translate: "no" } });  // data: id, role, environment, location
    this.meta = h("div", { class: "card-meta", attrs: { translate: "no" } });
    this.bars = { cpu: new Bar("cpu"), memory: new Bar("memory"), disk: new Bar("disk") };
    this.canvas = h("canvas", { class: "spark", aria: { hidden: "true" } });
    this.forecast = cardForecastElement();
    this.el = h("a", { class: "card" },
      h("div", { class: "card-head" }, this.shape, this.name, this.statusText),
      this.meta,
      h("div", { class: "bars" }, this.bars.cpu.el, this.bars.memory.el, this.bars.disk.el),
      this.canvas, this.forecast);
  }

  place(x: number, y: number, w: number): void {
    const pos = `translate(${x}px, ${y}px)`;
    if (pos !== this.pos) {
      this.pos = pos;
      this.el.style.transform = pos;
    }
    if (w !== this.width) {
      this.width = w;
      this.el.style.width = `${w}px`;
      this.drawnTs = -1;
    }
  }

  update(s: ServerState, index: number, color: string): void {
    this.index = index;
    this.el.dataset.index = String(index);
    if (s.id !== this.id) {
      this.id = s.id;
      this.el.href = `#/servers/${encodeURIComponent(s.id)}`;
      this.el.dataset.server = s.id;
      setText(this.name, s.id);
      this.drawnTs = -1;
      this.status = "";
    }
    const info = s.info;
    setText(this.meta, info ? [info.role, info.environment, info.location].filter(Boolean).join(" · ") : "");
    if (info?.hostname && this.el.title !== info.hostname) this.el.title = info.hostname;
    const status = (s.sample.status ?? info?.status ?? "offline") as Status;
    if (status !== this.status) {
      this.status = status;
      this.el.className = `card st-${status}`;
      this.el.dataset.status = status;
      setText(this.shape, SHAPES[status]);
      setText(this.statusText, t(`status.${status}` as Key));
    }
    this.bars.cpu.set(s.sample.cpu);
    this.bars.memory.set(s.sample.memory);
    this.bars.disk.set(s.sample.disk);
    const soon = cardForecast(this.forecast, s.id);
    this.el.setAttribute("aria-label", `${s.id}, ${t(`status.${status}` as Key)}, CPU ${pct(s.sample.cpu)}, `
      + `${t("metric.memory")} ${pct(s.sample.memory)}, ${t("metric.disk")} ${pct(s.sample.disk)}${soon ? `, ${soon}` : ""}`);
    if (s.ts !== this.drawnTs) {
      this.drawnTs = s.ts;
      drawSparkline(this.canvas, s, color);
    }
  }
}

function matches(s: ServerState, f: Filters, search: string, tag: [string, string | null] | null): boolean {
  const status = s.sample.status ?? s.info?.status ?? "offline";
  if (f.status && status !== f.status) return false;
  const info = s.info;
  if (f.role && info?.role !== f.role) return false;
  if (f.environment && info?.environment !== f.environment) return false;
  if (search && !s.id.toLowerCase().includes(search) && !(info?.hostname ?? "").toLowerCase().includes(search)) return false;
  if (tag) {
    const tags = info?.tags ?? {};
    if (!(tag[0] in tags)) return false;
    if (tag[1] !== null && tags[tag[0]] !== tag[1]) return false;
  }
  return true;
}

function sorter(key: SortKey): (a: ServerState, b: ServerState) => number {
  const byName = (a: ServerState, b: ServerState) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  if (key === "name") return byName;
  if (key === "status") {
    return (a, b) => SEVERITY[(a.sample.status ?? "offline") as Status] - SEVERITY[(b.sample.status ?? "offline") as Status]
      || byName(a, b);
  }
  return (a, b) => (b.sample[key] ?? -1) - (a.sample[key] ?? -1) || byName(a, b);
}

export function fleetView(ctx: Ctx): View {
  const { live } = ctx;
  const offs: (() => void)[] = [];

  // -- summary bar ----------------------------------------------------------------------------------
  const counts = new Map<Status | "total", HTMLElement>();
  const summaryButtons: HTMLButtonElement[] = [];
  const summaryItem = (key: Status | "total") => {
    const value = h("strong", { class: "count", text: "–" });
    counts.set(key, value);
    const label = key === "total" ? t("fleet.total") : t(`status.${key}` as Key);
    const btn = h("button", { type: "button", class: `summary-item st-${key}`, dataset: { status: key },
      aria: { pressed: String(filters.status === key) } },
      key === "total" ? null : h("span", { class: "shape", aria: { hidden: "true" }, text: SHAPES[key] }),
      value, h("span", { class: "summary-label", text: label }));
    btn.addEventListener("click", () => {
      filters.status = key === "total" || filters.status === key ? "" : key;
      statusSelect.value = filters.status;
      changed();
    });
    summaryButtons.push(btn);
    return btn;
  };
  const avg = h("div", { class: "summary-avg" });
  const summary = h("section", { class: "summary", aria: { label: t("fleet.title") } },
    summaryItem("total"), ...STATUSES.map(summaryItem), avg);

  function renderSummary(): void {
    const f = live.fleet;
    if (!f) return;
    counts.get("total")!.textContent = String(f.total);
    for (const s of STATUSES) counts.get(s)!.textContent = String(f[s] ?? 0);
    setText(avg, `${t("fleet.avg")}: CPU ${pct(f.avg.cpu)} · ${t("metric.memory")} ${pct(f.avg.memory)} · `
      + `${t("metric.disk")} ${pct(f.avg.disk)}`);
    for (const b of summaryButtons) b.setAttribute("aria-pressed", String(filters.status === b.dataset.status));
  }

  // -- filters --------------------------------------------------------------------------------------
  const field = (id: string, label: string, control: HTMLElement) =>
    h("div", { class: "field inline" }, h("label", { for: id, text: label }), control);
  const search = h("input", { id: "fleet-search", type: "search", value: filters.search,
    attrs: { placeholder: t("fleet.searchPlaceholder"), autocomplete: "off" } });
  const option = (value: string, text: string) => h("option", { value, text });
  const statusSelect = h("select", { id: "fleet-status" }, option("", t("fleet.any")),
    ...STATUSES.map((s) => option(s, `${SHAPES[s]} ${t(`status.${s}` as Key)}`)));
  statusSelect.value = filters.status;
  const roleSelect = h("select", { id: "fleet-role" });
  const envSelect = h("select", { id: "fleet-env" });
  const tagInput = h("input", { id: "fleet-tag", type: "text", value: filters.tag,
    attrs: { placeholder: t("fleet.tagPlaceholder"), autocomplete: "off" } });
  const sortSelect = h("select", { id: "fleet-sort" },
    ...(["name", "status", "cpu", "memory", "disk"] as SortKey[]).map((k) => option(k, t(`fleet.sort.${k}` as Key))));
  sortSelect.value = filters.sort;
  const shown = h("span", { class: "muted fleet-count", role: "status" });
  const controls = h("div", { class: "toolbar" },
    field("fleet-search", t("fleet.search"), search), field("fleet-status", t("fleet.status"), statusSelect),
    field("fleet-role", t("fleet.role"), roleSelect), field("fleet-env", t("fleet.environment"), envSelect),
    field("fleet-tag", t("fleet.tag"), tagInput), field("fleet-sort", t("fleet.sort"), sortSelect), shown);

  function fillOptions(select: HTMLSelectElement, values: string[], selected: string): void {
    const current = [...select.options].map((o) => o.value).join("\n");
    const next = ["", ...values].join("\n");
    if (current !== next) {
      select.replaceChildren(option("", t("fleet.any")), ...values.map((v) => {
        const o = option(v, v);
        o.setAttribute("translate", "no");  // a role or environment, as written
        return o;
      }));
    }
    select.value = selected;
  }
  function renderOptions(): void {
    const roles = new Set<string>();
    const envs = new Set<string>();
    for (const s of live.servers.values()) {
      if (s.info?.role) roles.add(s.info.role);
      if (s.info?.environment) envs.add(s.info.environment);
    }
    fillOptions(roleSelect, [...roles].sort(), filters.role);
    fillOptions(envSelect, [...envs].sort(), filters.environment);
  }

  const changed = () => {
    filters.search = search.value;
    filters.status = statusSelect.value as Status | "";
    filters.role = roleSelect.value;
    filters.environment = envSelect.value;
    filters.tag = tagInput.value;
    filters.sort = sortSelect.value as SortKey;
    grid.scrollTop = 0;
    renderSummary();
    schedule();
  };
  search.addEventListener("input", changed);
  tagInput.addEventListener("input", changed);
  for (const s of [statusSelect, roleSelect, envSelect, sortSelect]) s.addEventListener("change", changed);

  // -- the grid ---------------------------------------------------------------------------------------
  const inner = h("div", { class: "grid-inner" });
  const empty = h("p", { class: "empty", hidden: true });
  const grid = h("div", { class: "grid-scroller", id: "fleet-grid", role: "region",
    aria: { label: t("fleet.grid") }, dataset: { virtual: String(VIRTUALIZE) } }, inner, empty);
  const pool: Card[] = [];
  let items: ServerState[] = [];
  let cols = 1;

  function render(): void {
    const search = filters.search.trim().toLowerCase();
    const tagText = filters.tag.trim();
    const tag: [string, string | null] | null = tagText
      ? (tagText.includes(":") ? [tagText.slice(0, tagText.indexOf(":")).trim(), tagText.slice(tagText.indexOf(":") + 1).trim()]
        : [tagText, null])
      : null;
    items = [];
    for (const s of live.servers.values()) if (matches(s, filters, search, tag)) items.push(s);
    items.sort(sorter(filters.sort));

    const width = grid.clientWidth - 2;
    cols = Math.max(1, Math.floor((width + GAP) / (MIN_W + GAP)));
    const cardW = Math.floor((width - GAP * (cols - 1)) / cols);
    const rows = Math.ceil(items.length / cols);
    const rowH = CARD_H + GAP;
    inner.style.height = `${Math.max(0, rows * rowH - GAP)}px`;
    let firstRow = 0;
    let lastRow = rows - 1;
    if (VIRTUALIZE) {
      firstRow = Math.max(0, Math.floor(grid.scrollTop / rowH) - OVERSCAN_ROWS);
      lastRow = Math.min(rows - 1, Math.ceil((grid.scrollTop + grid.clientHeight) / rowH) + OVERSCAN_ROWS);
    }
    const color = sparkColor();
    let k = 0;
    for (let row = firstRow; row <= lastRow; row++) {
      for (let col = 0; col < cols; col++) {
        const index = row * cols + col;
        if (index >= items.length) break;
        let card = pool[k];
        if (!card) {
          card = pool[k] = new Card();
          inner.append(card.el);
        }
        card.el.hidden = false;
        card.place(col * (cardW + GAP), row * rowH, cardW);
        card.update(items[index], index, color);
        k += 1;
      }
    }
    for (let i = k; i < pool.length; i++) {
      if (!pool[i].el.hidden) pool[i].el.hidden = true;
      pool[i].index = -1;
    }
    grid.dataset.rendered = String(k);
    setText(shown, t("fleet.showing", { shown: items.length, total: live.servers.size }));
    empty.hidden = items.length > 0;
    setText(empty, live.servers.size ? t("fleet.empty") : t("fleet.waiting"));
  }
  const schedule = frameThrottle(render);

  // Arrow keys move between cards (the grid renders the target row first when it is out of view).
  grid.addEventListener("keydown", (ev) => {
    const card = (ev.target as HTMLElement).closest<HTMLElement>(".card");
    if (!card) return;
    const index = Number(card.dataset.index);
    const delta = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols, Home: -index,
      End: items.length - 1 - index }[ev.key];
    if (delta === undefined) return;
    ev.preventDefault();
    const next = Math.max(0, Math.min(items.length - 1, index + delta));
    const rowH = CARD_H + GAP;
    const top = Math.floor(next / cols) * rowH;
    if (top < grid.scrollTop) grid.scrollTop = top;
    else if (top + CARD_H > grid.scrollTop + grid.clientHeight) grid.scrollTop = top + CARD_H - grid.clientHeight;
    render();
    pool.find((c) => c.index === next)?.el.focus();
  });
  grid.addEventListener("scroll", schedule, { passive: true });
  const resize = new ResizeObserver(schedule);

  offs.push(live.on("metrics", schedule));
  offs.push(live.on("fleet", renderSummary));
  offs.push(live.on("servers", () => {
    renderOptions();
    schedule();
  }));

  const el = h("div", { class: "view view-fleet" },
    h("h1", { class: "visually-hidden", text: t("fleet.title") }), summary, controls, grid);
  renderOptions();
  renderSummary();
  return {
    el,
    mounted() {
      resize.observe(grid);
      render();
      offs.push(watchFleetForecasts(schedule));
    },
    destroy() {
      resize.disconnect();
      for (const off of offs) off();
    },
  };
}

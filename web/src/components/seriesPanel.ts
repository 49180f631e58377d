// A server's labelled series (docs/protocol.md "Labelled series"): each mount's usage bar (with inodes),
// each interface's in/out, each block device's read/write, the temperatures, and a per-core heat strip.
// Fed with the server's sample as the `metrics` topic carries it with the `series` option: series are
// fields named `metric:label=value`. Mount points, interface and device names are data (as written).

import { h, replace, setText } from "../dom";
import { bytes, num, pct, perSecond } from "../format";
import { data, t } from "../i18n";

/** A sample's series by metric, then by label value (`disk` → `/var` → 91.2). */
export function seriesOf(sample: Record<string, unknown>): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const [key, value] of Object.entries(sample)) {
    const colon = key.indexOf(":");
    if (colon < 0 || typeof value !== "number") continue;
    const metric = key.slice(0, colon);
    const eq = key.indexOf("=", colon);
    if (eq < 0) continue;
    let byLabel = out.get(metric);
    if (!byLabel) out.set(metric, (byLabel = new Map()));
    byLabel.set(key.slice(eq + 1), value);
  }
  return out;
}

/** Label values in a stable, readable order: numbers numerically (cores), the rest alphabetically. */
export function sortLabels(labels: Iterable<string>): string[] {
  return [...labels].sort((a, b) => {
    const x = Number(a), y = Number(b);
    if (Number.isFinite(x) && Number.isFinite(y)) return x - y;
    return a < b ? -1 : a > b ? 1 : 0;
  });
}

function level(v: number): string {
  return v >= 90 ? "crit" : v >= 80 ? "warn" : "ok";
}

export class SeriesPanel {
  readonly el: HTMLElement;
  private readonly mounts = h("div", { class: "mount-bars", id: "mounts" });
  private readonly nics = h("dl", { class: "series-rows", id: "interfaces" });
  private readonly devices = h("dl", { class: "series-rows", id: "devices" });
  private readonly temps = h("dl", { class: "series-rows", id: "temperatures" });
  private readonly cores = h("div", { class: "heat-strip", id: "cores", role: "img" });
  private readonly sections: Record<string, HTMLElement>;
  private readonly empty = h("p", { class: "muted", text: t("series.none") });
  private signature = "";

  constructor() {
    this.sections = {
      mounts: h("section", { class: "series-section", hidden: true }, h("h3", { text: t("series.filesystems") }), this.mounts),
      nics: h("section", { class: "series-section", hidden: true }, h("h3", { text: t("series.interfaces") }), this.nics),
      devices: h("section", { class: "series-section", hidden: true }, h("h3", { text: t("series.devices") }), this.devices),
      cores: h("section", { class: "series-section", hidden: true }, h("h3", { text: t("series.cores") }), this.cores),
      temps: h("section", { class: "series-section", hidden: true }, h("h3", { text: t("series.temperatures") }), this.temps),
    };
    this.el = h("section", { class: "panel series-panel", id: "series-panel", aria: { label: t("series.title") } },
      h("h2", { text: t("series.title") }), this.empty, ...Object.values(this.sections));
  }

  update(sample: Record<string, unknown>): void {
    const s = seriesOf(sample);
    const disk = s.get("disk") ?? new Map<string, number>();
    const inodes = s.get("fs_inodes") ?? new Map<string, number>();
    const nin = s.get("net_in") ?? new Map<string, number>();
    const nout = s.get("net_out") ?? new Map<string, number>();
    const rd = s.get("disk_read") ?? new Map<string, number>();
    const wr = s.get("disk_write") ?? new Map<string, number>();
    const cpu = s.get("cpu") ?? new Map<string, number>();
    const temp = s.get("temperature") ?? new Map<string, number>();
    const mountNames = sortLabels(disk.keys());
    const nicNames = sortLabels(new Set([...nin.keys(), ...nout.keys()]));
    const devNames = sortLabels(new Set([...rd.keys(), ...wr.keys()]));
    const coreNames = sortLabels(cpu.keys());
    const tempNames = sortLabels(temp.keys());
    // Rebuild the rows only when the set of series changes; values are updated in place.
    const signature = JSON.stringify([mountNames, nicNames, devNames, coreNames, tempNames]);
    if (signature !== this.signature) {
      this.signature = signature;
      replace(this.mounts, ...mountNames.map((m) => h("div", { class: "mount-row", dataset: { mount: m } },
        data(m, "mount-name"),
        h("span", { class: "bar", role: "meter", aria: { label: m, valuemin: "0", valuemax: "100" } }, h("span", { class: "bar-fill" })),
        h("span", { class: "mount-value" }))));
      replace(this.nics, ...nicNames.flatMap((n) => [h("dt", null, data(n)), h("dd", { dataset: { interface: n } })]));
      replace(this.devices, ...devNames.flatMap((d) => [h("dt", null, data(d)), h("dd", { dataset: { device: d } })]));
      replace(this.temps, ...tempNames.flatMap((n) => [h("dt", null, data(n)), h("dd", { dataset: { sensor: n } })]));
      replace(this.cores, ...coreNames.map((c) => h("span", { class: "heat-cell", dataset: { core: c } })));
      this.cores.setAttribute("aria-label", t("series.coresLabel", { n: coreNames.length }));
      this.sections.mounts.hidden = !mountNames.length;
      this.sections.nics.hidden = !nicNames.length;
      this.sections.devices.hidden = !devNames.length;
      this.sections.cores.hidden = !coreNames.length;
      this.sections.temps.hidden = !tempNames.length;
      this.empty.hidden = signature !== JSON.stringify([[], [], [], [], []]);
    }
    mountNames.forEach((m, i) => {
      const row = this.mounts.children[i] as HTMLElement;
      const v = disk.get(m) ?? 0;
      const bar = row.children[1] as HTMLElement;
      bar.setAttribute("aria-valuenow", String(v));
      bar.dataset.level = level(v);
      (bar.firstElementChild as HTMLElement).style.width = `${Math.max(0, Math.min(100, v))}%`;
      const ino = inodes.get(m);
      setText(row.children[2], ino === undefined ? pct(v) : `${pct(v)} · ${t("series.inodes", { value: pct(ino) })}`);
      row.dataset.value = String(v);
    });
    nicNames.forEach((n, i) => setText(this.nics.children[i * 2 + 1],
      `↓ ${perSecond(bytes(nin.get(n)))}  ↑ ${perSecond(bytes(nout.get(n)))}`));
    devNames.forEach((d, i) => setText(this.devices.children[i * 2 + 1],
      `${t("series.read")} ${perSecond(bytes(rd.get(d)))} · ${t("series.write")} ${perSecond(bytes(wr.get(d)))}`));
    tempNames.forEach((n, i) => setText(this.temps.children[i * 2 + 1], `${num(temp.get(n), 1)} °C`));
    coreNames.forEach((c, i) => {
      const cell = this.cores.children[i] as HTMLElement;
      const v = cpu.get(c) ?? 0;
      cell.style.setProperty("--heat", String(Math.max(0, Math.min(100, v)) / 100));
      cell.dataset.value = String(v);
      cell.title = t("series.core", { core: c, value: pct(v) });
    });
  }
}

// Live log view: filters (servers, minimum level, text) applied by the hub; stored lines first, then
// live ones; auto-scroll with pause on scroll-up (components/logList.ts); bounded in memory.

import { get, query } from "../api";
import { LogList } from "../components/logList";
import { debounce, h, setText } from "../dom";
import { t } from "../i18n";
import { Held } from "../live";
import { LEVELS, type LogRecord } from "../types";
import type { Ctx, View } from "../view";
import { logKey } from "./server";

export const MAX_LINES = 2000;
const filters = { servers: "", level: "INFO", contains: "" };

export function logsView(ctx: Ctx): View {
  const { live } = ctx;
  const list = new LogList(MAX_LINES);
  let sub: Held | null = null;
  let seq = 0;
  let destroyed = false;

  const serversInput = h("input", { id: "logs-servers", type: "text", value: filters.servers,
    attrs: { placeholder: t("logs.serverPlaceholder"), autocomplete: "off" } });
  const levelSelect = h("select", { id: "logs-level" }, ...LEVELS.map((l) => h("option", { value: l, text: t(`level.${l}`) })));
  levelSelect.value = filters.level;
  const containsInput = h("input", { id: "logs-contains", type: "search", value: filters.contains,
    attrs: { autocomplete: "off" } });
  const status = h("span", { class: "muted", role: "status" });
  const notice = h("p", { class: "notice", hidden: true, text: t("logs.reset") });
  const field = (id: string, label: string, control: HTMLElement) =>
    h("div", { class: "field inline" }, h("label", { for: id, text: label }), control);

  function filter(): Record<string, unknown> {
    const f: Record<string, unknown> = { level: filters.level };
    const servers = filters.servers.split(",").map((s) => s.trim()).filter(Boolean);
    if (servers.length) f.servers = servers;
    if (filters.contains.trim()) f.contains = filters.contains.trim();
    return f;
  }

  async function restart(): Promise<void> {
    const mine = ++seq;
    sub?.end();
    sub = null;
    list.clear();
    notice.hidden = true;
    el.dataset.ready = "false";
    el.dataset.level = filters.level;
    const held: LogRecord[] = [];
    let ready = false;
    const f = filter();
    const next = live.client.subscribe<{ records: LogRecord[] }>("logs", {
      filter: f,
      onEvent: (d) => {
        if (mine !== seq) return;
        if (ready) list.add(d.records);
        else held.push(...d.records);
      },
      onReset: () => {
        if (mine === seq) notice.hidden = false;
      },
    });
    sub = new Held(next);
    try {
      const stored = await get<{ logs: LogRecord[] }>(`/api/v1/logs${query({ server: filters.servers.replace(/\s+/g, ""),
        level: filters.level, contains: filters.contains.trim(), limit: 500 })}`);
      if (destroyed || mine !== seq) return;
      const seen = new Set(stored.logs.map(logKey));
      list.add([...stored.logs, ...held.filter((r) => !seen.has(logKey(r)))]);
    } catch {
      if (destroyed || mine !== seq) return;
      list.add(held);
    }
    ready = true;
    el.dataset.ready = "true";
  }

  const changed = debounce(() => {
    filters.servers = serversInput.value;
    filters.level = levelSelect.value;
    filters.contains = containsInput.value;
    void restart();
  }, 300);
  serversInput.addEventListener("input", changed);
  containsInput.addEventListener("input", changed);
  levelSelect.addEventListener("change", changed);

  const statusTimer = setInterval(() => setText(status, t("logs.lines", { count: list.size, max: MAX_LINES })), 500);

  const el = h("div", { class: "view view-logs" },
    h("header", { class: "view-header" }, h("h1", { text: t("logs.title") }), status),
    h("div", { class: "toolbar" }, field("logs-servers", t("logs.server"), serversInput),
      field("logs-level", t("logs.level"), levelSelect), field("logs-contains", t("logs.contains"), containsInput)),
    notice, list.el);
  return {
    el,
    mounted() {
      void restart();
    },
    destroy() {
      destroyed = true;
      seq += 1;
      clearInterval(statusTimer);
      sub?.end();
    },
  };
}

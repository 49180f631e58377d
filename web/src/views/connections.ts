// Connections (admins): every open client session from GET /api/v1/connections — who, from where, over
// what transport, subscribed to which topics, its round-trip time, what the hub sent it, its queue and
// compression — polled every few seconds while the view is open. This browser's own session is marked.

import { ApiError, get } from "../api";
import { h, replace, setText } from "../dom";
import { ago, bytes, dateTime, ms, num } from "../format";
import { data, t, tOr, type Key } from "../i18n";
import type { ConnectionInfo } from "../types";
import type { Ctx, View } from "../view";

/** How often the list is read again, ms. */
export const CONNECTIONS_REFRESH_MS = 3000;

const TRANSPORTS: Record<string, string> = { ws: "WebSocket", sse: "SSE" };

/** A connection's compression as the hub measured it (`×3.1`), "not compressed", or "–" when unknown. */
export function compressionText(ratio: number | null | undefined): string {
  if (ratio === undefined) return "–";
  if (ratio === null) return t("conn.compressionOff");
  return ratio <= 1 ? t("hub.uncompressed") : `×${num(ratio, 1)}`;
}

export function connectionsView(ctx: Ctx): View {
  const { live, me } = ctx;
  let destroyed = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  const status = h("span", { class: "muted", role: "status" });
  const error = h("p", { class: "error", hidden: true });
  const empty = h("p", { class: "empty", hidden: true, text: t("conns.none") });
  const rows = h("tbody");
  const columns: Key[] = ["conns.user", "conns.remote", "conns.transport", "conns.subscriptions", "conns.rtt", "conns.sent",
    "conns.queue", "conns.compression", "conns.since"];
  const table = h("table", { class: "table connections", id: "connections" },
    h("thead", null, h("tr", null, ...columns.map((k) => h("th", { text: t(k), attrs: { scope: "col" } })))), rows);

  function row(c: ConnectionInfo): HTMLElement {
    const mine = c.id === live.client.welcome?.session;
    const topics = [...new Set(c.subscriptions.map((s) => s.topic))].sort();
    return h("tr", { class: mine ? "mine" : "", dataset: { id: c.id, transport: c.transport, mine: String(mine) } },
      h("td", null, data(c.user), mine ? h("span", { class: "pill", text: t("conns.thisBrowser") }) : null),
      h("td", null, data(c.remote)),
      h("td", { text: TRANSPORTS[c.transport] ?? c.transport }),
      h("td", { class: "topics", title: c.subscriptions.map((s) => s.sub).join(", ") },
        topics.map((topic) => tOr(`topic.${topic}`, topic)).join(", ") || "–"),
      h("td", { class: "rtt", text: c.rtt_ms === null ? "–" : ms(c.rtt_ms) }),
      h("td", { text: `${t("conns.messages", { count: num(c.messages_sent, 0) })} · ${bytes(c.bytes_sent)}` }),
      h("td", { text: `${num(c.queue_depth, 0)} · ${bytes(c.queue_bytes)}` }),
      h("td", { class: "compression", text: compressionText(c.compression_ratio) }),
      h("td", { title: dateTime(c.since), text: ago(c.since) }));
  }

  async function load(): Promise<void> {
    try {
      const r = await get<{ connections: ConnectionInfo[] }>("/api/v1/connections");
      if (destroyed) return;
      const list = r.connections.slice().sort((a, b) => a.since - b.since);
      replace(rows, ...list.map(row));
      empty.hidden = list.length > 0;
      error.hidden = true;
      setText(status, t("conns.count", { count: list.length, seconds: CONNECTIONS_REFRESH_MS / 1000 }));
      table.dataset.loadedAt = String(Date.now());
    } catch (e) {
      if (destroyed) return;
      error.hidden = false;
      setText(error, t("common.error", { message: (e as ApiError).message }));
    }
    if (!destroyed) timer = setTimeout(() => void load(), CONNECTIONS_REFRESH_MS);
  }

  const admin = me.role === "admin";
  const el = h("div", { class: "view view-connections" },
    h("header", { class: "view-header" }, h("h1", { text: t("conns.title") }), status),
    admin ? null : h("p", { class: "notice", text: t("conns.adminOnly") }),
    error, admin ? h("div", { class: "panel table-scroll" }, table, empty) : null);
  return {
    el,
    mounted() {
      if (admin) void load();
    },
    destroy() {
      destroyed = true;
      if (timer) clearTimeout(timer);
    },
  };
}

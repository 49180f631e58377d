// One alert and its timeline (`#/alerts/<id>`): every transition from `GET /api/v1/alerts/{id}` (pending,
// firing, escalated with its step and recipients, acknowledged, resolved, ...) merged with the caller's
// notifications about it that were inhibited (naming the inhibiting alert), oldest first.

import { get } from "../api";
import { alertRow } from "../components/alertRow";
import { h, replace } from "../dom";
import { dateTime, num } from "../format";
import { data, t, tOr } from "../i18n";
import type { Alert, Notification } from "../types";
import type { Ctx, View } from "../view";

interface HistoryEntry {
  transition: string;
  ts: number;
  notify: boolean;
  reason?: string;
  detail?: string;
  repeat?: boolean;
  alert: Alert & { escalation?: { step: number; after: string; users: string[]; channels?: string[] } };
}

interface TimelineItem {
  ts: number;
  kind: string;  // a transition, or "inhibited"
  lines: (Node | string)[];
}

/** The history limit per request; the caller sees at most this many of their notifications about one alert. */
const NOTIFICATIONS_LIMIT = 500;

function transitionItem(e: HistoryEntry): TimelineItem {
  const lines: (Node | string)[] = [];
  if (e.transition === "escalated" && e.alert.escalation) {
    const esc = e.alert.escalation;
    lines.push(h("span", { class: "timeline-step", text: t("timeline.step", { step: esc.step }) }), " · ",
      t("timeline.recipients"), " ", data(esc.users.join(", "), "timeline-users"));
    if (esc.channels?.length) lines.push(" · ", t("timeline.channels"), " ", data(esc.channels.join(", ")));
  } else if (e.transition === "acknowledged" && e.alert.acknowledged) {
    lines.push(t("alerts.acked", { by: e.alert.acknowledged.by, comment: e.alert.acknowledged.comment || "–" }));
  } else if (e.alert.value !== null && e.alert.value !== undefined && (e.transition === "firing" || e.transition === "pending")) {
    lines.push(t("alerts.value", { value: num(e.alert.value, 2) }));
  }
  if (e.detail) lines.push(h("div", { class: "timeline-detail muted" }, data(e.detail)));
  else if (!e.notify && e.reason) lines.push(h("div", { class: "timeline-detail muted", text: t("timeline.notNotified", { reason: e.reason }) }));
  return { ts: e.ts, kind: e.transition, lines };
}

function inhibitedItems(notifications: Notification[]): TimelineItem[] {
  const out: TimelineItem[] = [];
  for (const n of notifications) {
    const inhibited = Object.entries(n.channels).filter(([, d]) => d.reason === "inhibited");
    if (!inhibited.length) continue;
    const detail = inhibited.map(([, d]) => d.detail).find((d) => d) ?? "";
    out.push({ ts: n.created_at, kind: "inhibited", lines: [
      data(n.title), " · ", t("timeline.channels"), " ", data(inhibited.map(([c]) => c).join(", ")),
      h("div", { class: "timeline-detail muted" }, data(detail)),
    ] });
  }
  return out;
}

export function alertTimelineView(ctx: Ctx, params: string[]): View {
  const id = params[0] ?? "";
  let destroyed = false;
  const head = h("div", { class: "timeline-alert" });
  const list = h("ol", { class: "timeline", aria: { label: t("timeline.title") } });
  const status = h("p", { class: "muted", text: t("common.loading") });

  async function load(): Promise<void> {
    try {
      const [alert, mine] = await Promise.all([
        get<Alert & { history: HistoryEntry[] }>(`/api/v1/alerts/${encodeURIComponent(id)}`),
        get<{ notifications: Notification[] }>(`/api/v1/notifications?alert=${encodeURIComponent(id)}&limit=${NOTIFICATIONS_LIMIT}`),
      ]);
      if (destroyed) return;
      replace(head, alertRow(alert, ctx.me.role, () => void load()));
      const items = [...alert.history.map(transitionItem), ...inhibitedItems(mine.notifications)]
        .sort((a, b) => a.ts - b.ts);
      replace(list, ...items.map((item) => h("li", { class: `timeline-item tl-${item.kind}`, dataset: { transition: item.kind, ts: String(item.ts) } },
        h("time", { class: "timeline-time", attrs: { datetime: new Date(item.ts).toISOString() }, text: dateTime(item.ts) }),
        h("strong", { class: "timeline-kind", text: tOr(`transition.${item.kind}`, item.kind) }),
        h("div", { class: "timeline-body" }, ...item.lines))));
      status.textContent = items.length ? "" : t("timeline.empty");
      status.hidden = items.length > 0;
    } catch (error) {
      if (!destroyed) status.textContent = t("common.error", { message: (error as Error).message });
    }
  }

  const offs = [ctx.live.on("alert-event", (e) => {
    if ((e as { alert?: { id?: string } }).alert?.id === id) void load();
  })];
  const el = h("div", { class: "view view-alert", dataset: { alert: id } },
    h("header", { class: "view-header" },
      h("a", { href: "#/alerts", class: "back-link", text: `← ${t("alerts.title")}` }),
      h("h1", { text: t("timeline.title") })),
    h("section", { class: "panel" }, head),
    h("section", { class: "panel", aria: { label: t("timeline.title") } }, status, list));
  return {
    el,
    mounted() {
      void load();
    },
    destroy() {
      destroyed = true;
      for (const off of offs) off();
    },
  };
}

// The notification centre: the caller's history with each channel's delivery status, mark read.

import { ApiError, get, post } from "../api";
import { toast } from "../components/toast";
import { append, h, replace } from "../dom";
import { dateTime } from "../format";
import { data, t, tOr } from "../i18n";
import { SEVERITY_SHAPES, type Notification } from "../types";
import type { Ctx, View } from "../view";

export function notificationsView(ctx: Ctx): View {
  const { live } = ctx;
  let destroyed = false;
  const list = h("ul", { class: "notif-list" });
  const empty = h("p", { class: "empty", text: t("notif.none"), hidden: true });
  const unread = h("span", { class: "muted", role: "status" });
  const markAll = h("button", { type: "button", text: t("notif.markAll") });
  let items: Notification[] = [];

  function row(n: Notification): HTMLElement {
    const li = h("li", { class: `notif sev-${n.severity}${n.read_at ? " read" : " unread"}`, dataset: { id: n.id } });
    // Channel, status and reason are codes, shown in the page's language; a failure's detail is the
    // hub's own words (data).
    const channels = h("ul", { class: "channels", aria: { label: t("notif.channels") } },
      ...Object.entries(n.channels ?? {}).map(([name, d]) => {
        const reason = d.reason ? tOr(`reason.${d.reason.replace(/ /g, "_")}`, d.reason) : "";
        return h("li", {
          class: `chip ch-${d.status}`, dataset: { channel: name, status: d.status, reason: d.reason ?? "" },
          title: [reason, d.attempts ? t("notif.attempts", { count: d.attempts }) : ""].filter(Boolean).join(" · "),
        }, `${tOr(`channel.${name}`, name)}: ${tOr(`delivery.${d.status}`, d.status)}${reason ? ` (${reason})` : ""}`,
        d.detail && (d.status === "failed" || d.reason === "inhibited") ? h("span", null, " — ", data(d.detail)) : null);
      }));
    const mark = n.read_at ? h("span", { class: "muted", text: t("notif.read") }) : h("button", {
      type: "button", class: "mark-read", text: t("notif.markRead"),
      on: { click: () => void markRead(n) },
    });
    append(li,
      h("div", { class: "notif-head" },
        h("span", { class: `shape sev-${n.severity}`, aria: { hidden: "true" }, text: SEVERITY_SHAPES[n.severity] ?? "●" }),
        h("strong", { text: n.title, attrs: { translate: "no" } }), h("time", { class: "muted", text: dateTime(n.created_at) }), mark),
      n.body ? h("p", { class: "notif-body", text: n.body, attrs: { translate: "no" } }) : null,
      channels);
    return li;
  }

  function render(): void {
    replace(list, ...items.map(row));
    empty.hidden = items.length > 0;
    unread.textContent = t("notif.unread", { count: live.unread });
    markAll.disabled = live.unread === 0;
  }

  async function markRead(n: Notification): Promise<void> {
    try {
      const r = await post<{ unread: number }>(`/api/v1/notifications/${encodeURIComponent(n.id)}/read`);
      n.read_at = Date.now();
      live.setUnread(r.unread);
      render();
    } catch (error) {
      toast(t("common.error", { message: (error as ApiError).message }), "error");
    }
  }

  async function load(): Promise<void> {
    try {
      const r = await get<{ notifications: Notification[]; unread: number }>("/api/v1/notifications?limit=100");
      if (destroyed) return;
      items = r.notifications;
      live.setUnread(r.unread);
      render();
    } catch (error) {
      replace(list, h("li", { class: "error", text: t("common.error", { message: (error as ApiError).message }) }));
    }
  }

  markAll.addEventListener("click", async () => {
    for (const n of items.filter((x) => !x.read_at)) await markRead(n);
  });
  const offs = [
    live.on("notification", (n) => {
      items.unshift(n as Notification);
      if (items.length > 200) items.length = 200;
      render();
    }),
    live.on("unread", () => {
      unread.textContent = t("notif.unread", { count: live.unread });
      markAll.disabled = live.unread === 0;
    }),
  ];
  const el = h("div", { class: "view view-notifications" },
    h("header", { class: "view-header" }, h("h1", { text: t("notif.title") }), unread, markAll), empty, list);
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

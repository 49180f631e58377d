// Alerts: what is firing or pending (live, from the `alerts` topic) and what changed recently (REST),
// with acknowledge and silence for roles that may.

import { get } from "../api";
import { AlertList } from "../components/alertRow";
import { debounce, h } from "../dom";
import { t } from "../i18n";
import { canOperate, type Alert } from "../types";
import type { Ctx, View } from "../view";

const ORDER: Record<string, number> = { critical: 0, warning: 1, info: 2 };

export function alertsView(ctx: Ctx): View {
  const { live, me } = ctx;
  const offs: (() => void)[] = [];
  let destroyed = false;
  const refresh = debounce(() => void loadRecent(), 800);
  const active = new AlertList(me.role, (a) => {
    live.alerts.set(a.id, a);
    renderActive();
    refresh();
  });
  const recent = new AlertList(me.role, () => refresh(), "alert-list recent");
  const noneActive = h("p", { class: "empty", text: t("alerts.none") });
  const noneRecent = h("p", { class: "empty", text: t("alerts.noneRecent"), hidden: true });

  function renderActive(): void {
    const list = [...live.alerts.values()].sort((a, b) => (ORDER[a.severity] ?? 3) - (ORDER[b.severity] ?? 3)
      || (b.fired_at ?? b.started_at ?? 0) - (a.fired_at ?? a.started_at ?? 0));
    active.update(list);
    noneActive.hidden = list.length > 0;
  }

  async function loadRecent(): Promise<void> {
    try {
      const r = await get<{ alerts: Alert[] }>("/api/v1/alerts?state=resolved&limit=50");
      if (destroyed) return;
      recent.update(r.alerts);
      noneRecent.hidden = r.alerts.length > 0;
    } catch {
      /* the connection status says why */
    }
  }

  offs.push(live.on("alerts", renderActive));
  offs.push(live.on("alert-event", refresh));
  const el = h("div", { class: "view view-alerts" },
    h("header", { class: "view-header" }, h("h1", { text: t("alerts.title") })),
    canOperate(me.role) ? null : h("p", { class: "notice", text: t("alerts.readOnly") }),
    h("section", { class: "panel", aria: { label: t("alerts.active") } }, h("h2", { text: t("alerts.active") }), noneActive, active.el),
    h("section", { class: "panel", aria: { label: t("alerts.recent") } }, h("h2", { text: t("alerts.recent") }), noneRecent, recent.el));
  renderActive();
  return {
    el,
    mounted() {
      void loadRecent();
    },
    destroy() {
      destroyed = true;
      for (const off of offs) off();
    },
  };
}

// One alert as a list item, with "acknowledge (with a comment)" and "silence" for roles that may.

import { ApiError, post } from "../api";
import { h, replace } from "../dom";
import { ago, dateTime, num } from "../format";
import { data, t, tn, tOr } from "../i18n";
import { SEVERITY_SHAPES, canOperate, type Alert, type Role } from "../types";
import { toast } from "./toast";

const SILENCE_DURATIONS = ["30m", "1h", "4h", "24h"];

export function alertTarget(a: Alert): string {
  const about = a.labels ? Object.values(a.labels).join(", ") : (a.series ?? []).join(", ");
  const where = a.server ?? (a.servers?.length ? `${t("alerts.fleet")}: ${a.servers.join(", ")}` : t("alerts.fleet"));
  return about ? `${about} ${t("alerts.on")} ${where}` : where;
}

export function alertRow(a: Alert, role: Role, onChange: (a: Alert) => void): HTMLElement {
  const li = h("li", { class: `alert-row sev-${a.severity} state-${a.state}`, dataset: { alert: a.id, state: a.state,
    rule: a.rule.id, acknowledged: String(Boolean(a.acknowledged)) } });
  const shape = h("span", { class: `shape sev-${a.severity}`, aria: { hidden: "true" }, text: SEVERITY_SHAPES[a.severity] });
  const target = a.server ? h("a", { href: `#/servers/${encodeURIComponent(a.server)}`, text: a.server, attrs: { translate: "no" } })
    : a.servers?.length ? h("span", null, `${t("alerts.fleet")}: `, data(a.servers.join(", "))) : h("span", { text: t("alerts.fleet") });
  // The series an alert is about ("/var on db-01"): an `each` alert's labels, else the series it names.
  const about = a.labels ? Object.values(a.labels).join(", ") : (a.series ?? []).join(", ");
  const title = h("div", { class: "alert-title" }, shape,
    h("strong", null, data(a.rule.name)), " ",
    about ? h("span", { class: "alert-series", dataset: { series: about } }, data(about), ` ${t("alerts.on")} `) : null,
    target,
    h("span", { class: `pill sev-${a.severity}`, dataset: { severity: a.severity }, text: tOr(`severity.${a.severity}`, a.severity) }),
    h("span", { class: "pill", dataset: { state: a.state }, text: tOr(`state.${a.state}`, a.state) }));
  const since = a.fired_at ?? a.started_at;
  const facts = h("div", { class: "alert-facts muted" },
    h("span", { text: t("alerts.value", { value: a.value === null ? "–" : num(a.value, 2) }) }), " · ",
    h("span", { title: dateTime(since), text: t("alerts.since", { time: ago(since) }) }),
    a.resolved_at ? h("span", { text: ` · ${t("alerts.resolvedAgo", { time: ago(a.resolved_at) })}` }) : null,
    a.silenced_by ? h("span", { text: ` · ${t("alerts.silenced")}` }) : null, " · ",
    h("a", { class: "timeline-link", href: `#/alerts/${encodeURIComponent(a.id)}`, text: t("timeline.open") }));
  li.append(title, facts);
  if (a.acknowledged) {
    li.append(h("div", { class: "alert-ack" }, "✓ ", ...tn("alerts.acked", { by: a.acknowledged.by, comment: a.acknowledged.comment || "–" })));
  }
  const active = a.state === "firing" || a.state === "pending";
  if (!active || !canOperate(role)) return li;

  const actions = h("div", { class: "alert-actions" });
  const form = h("div", { class: "alert-form", hidden: true });
  const showAck = () => {
    const input = h("input", { type: "text", class: "ack-comment", attrs: { placeholder: t("alerts.ackComment"),
      "aria-label": t("alerts.ackComment"), maxlength: "500" } });
    const confirm = h("button", { type: "button", class: "primary ack-confirm", text: t("alerts.ackConfirm") });
    const cancel = h("button", { type: "button", text: t("alerts.cancel"), on: { click: () => { form.hidden = true; } } });
    const submit = async () => {
      confirm.disabled = true;
      try {
        const updated = await post<Alert>(`/api/v1/alerts/${encodeURIComponent(a.id)}/ack`, { comment: input.value });
        onChange(updated);
      } catch (error) {
        toast(t("common.error", { message: (error as ApiError).message }), "error");
        confirm.disabled = false;
      }
    };
    confirm.addEventListener("click", () => void submit());
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") void submit();
      if (ev.key === "Escape") form.hidden = true;
    });
    replace(form, h("label", { class: "visually-hidden", text: t("alerts.ackComment") }), input, confirm, cancel);
    form.hidden = false;
    input.focus();
  };
  const showSilence = () => {
    const select = h("select", { class: "silence-duration", aria: { label: t("alerts.silenceFor") } },
      ...SILENCE_DURATIONS.map((d) => h("option", { value: d, text: tOr(`silence.${d}`, d) })));
    select.value = "1h";
    const input = h("input", { type: "text", class: "silence-comment", attrs: { placeholder: t("alerts.ackComment"),
      "aria-label": t("alerts.ackComment"), maxlength: "500" } });
    const confirm = h("button", { type: "button", class: "primary", text: t("alerts.silenceConfirm") });
    const cancel = h("button", { type: "button", text: t("alerts.cancel"), on: { click: () => { form.hidden = true; } } });
    confirm.addEventListener("click", async () => {
      confirm.disabled = true;
      const body: Record<string, unknown> = { rules: [a.rule.id], duration: select.value, comment: input.value };
      if (a.server) body.servers = [a.server];
      try {
        await post("/api/v1/silences", body);
        toast([`${t("alerts.silenced")}: `, data(`${a.rule.name} · ${alertTarget(a)}`), ` · ${tOr(`silence.${select.value}`, select.value)}`], "success");
        form.hidden = true;
      } catch (error) {
        toast(t("common.error", { message: (error as ApiError).message }), "error");
        confirm.disabled = false;
      }
    });
    replace(form, select, input, confirm, cancel);
    form.hidden = false;
    select.focus();
  };
  if (a.state === "firing" && !a.acknowledged) {
    actions.append(h("button", { type: "button", class: "ack-button", text: t("alerts.ack"), on: { click: showAck } }));
  }
  actions.append(h("button", { type: "button", class: "silence-button", text: t("alerts.silence"), on: { click: showSilence } }));
  li.append(actions, form);
  return li;
}

/** A keyed list of alert rows: a row is rebuilt only when its alert changed, so an open form survives. */
export class AlertList {
  readonly el: HTMLUListElement;
  private rows = new Map<string, { el: HTMLElement; key: string }>();

  constructor(private readonly role: Role, private readonly onChange: (a: Alert) => void, cls = "alert-list") {
    this.el = h("ul", { class: cls });
  }

  update(alerts: Alert[]): void {
    const next = new Map<string, { el: HTMLElement; key: string }>();
    const nodes: HTMLElement[] = [];
    for (const a of alerts) {
      const key = JSON.stringify([a.state, a.acknowledged, a.silenced_by, a.value, a.resolved_at, a.flapping]);
      let row = this.rows.get(a.id);
      if (!row || row.key !== key) row = { el: alertRow(a, this.role, this.onChange), key };
      next.set(a.id, row);
      nodes.push(row.el);
    }
    this.rows = next;
    // Move only what moved (replaceChildren would blur a focused input).
    nodes.forEach((node, i) => {
      if (this.el.children[i] !== node) this.el.insertBefore(node, this.el.children[i] ?? null);
    });
    while (this.el.children.length > nodes.length) this.el.lastElementChild?.remove();
  }
}

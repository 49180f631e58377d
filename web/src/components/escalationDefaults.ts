// The default escalation policy per severity (GET/PUT /api/v1/escalation/defaults): a JSON field per
// severity with where its value comes from; an admin saves the severities whose text changed (empty: none).

import { ApiError, get, put } from "../api";
import { h, replace } from "../dom";
import { t, tOr } from "../i18n";
import { SEVERITIES, type Rule, type Severity } from "../types";
import { toast } from "./toast";

type Policy = NonNullable<Rule["escalation"]>;
interface Default {
  policy: Policy | null;
  source: "api" | "settings" | "none";
  updated_by?: string;
}
type Defaults = Record<Severity, Default>;
const SOURCE = { api: "escalation.source.api", settings: "escalation.source.settings", none: "escalation.source.none" } as const;

export function escalationDefaults(admin: boolean): HTMLElement {
  const body = h("div", { class: "escalation-defaults-body" }, h("p", { class: "muted", text: t("common.loading") }));
  const box = h("details", { class: "escalation-defaults" },
    h("summary", { text: t("escalation.defaults") }), body);
  let loaded = false;

  function render(defaults: Defaults): void {
    const fields = new Map<Severity, { area: HTMLTextAreaElement; initial: string }>();
    const rows = [...SEVERITIES].reverse().map((sev) => {
      const d = defaults[sev];
      const initial = d.policy ? JSON.stringify(d.policy) : "";
      const area = h("textarea", { id: `escalation-default-${sev}`, value: initial, disabled: !admin,
        attrs: { rows: "2", spellcheck: "false", placeholder: t("escalation.none") } });
      fields.set(sev, { area, initial });
      return h("div", { class: "field" },
        h("label", { for: area.id }, tOr(`severity.${sev}`, sev), " ",
          h("span", { class: "pill", dataset: { source: d.source }, text: t(SOURCE[d.source], { user: d.updated_by ?? "" }) })),
        area);
    });
    const save = h("button", { type: "submit", class: "primary", text: t("escalation.save"), disabled: !admin });
    const form = h("form", { class: "escalation-defaults-form", attrs: { novalidate: "" } },
      h("p", { class: "muted", text: t("escalation.help") }),
      admin ? null : h("p", { class: "notice", text: t("escalation.readOnly") }),
      ...rows, h("div", { class: "actions" }, save));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const changed: Partial<Record<Severity, Policy | null>> = {};
      for (const [sev, { area, initial }] of fields) {
        const text = area.value.trim();
        if (text === initial) continue;
        try {
          changed[sev] = text ? JSON.parse(text) as Policy : null;
        } catch (error) {
          toast(t("escalation.json", { severity: sev, message: (error as SyntaxError).message }), "error");
          area.focus();
          return;
        }
      }
      if (!Object.keys(changed).length) return;
      save.disabled = true;
      try {
        render(await put<Defaults>("/api/v1/escalation/defaults", changed));
        toast(t("escalation.saved"), "success");
      } catch (error) {
        toast(t("common.error", { message: (error as ApiError).message }), "error");
        save.disabled = false;
      }
    });
    replace(body, form);
  }

  box.addEventListener("toggle", async () => {
    if (!box.open || loaded) return;
    loaded = true;
    try {
      render(await get<Defaults>("/api/v1/escalation/defaults"));
    } catch (error) {
      loaded = false;
      replace(body, h("p", { class: "error", text: t("common.error", { message: (error as ApiError).message }) }));
    }
  });
  return box;
}

// Rules: the list, and an editor whose condition (and clear / scope) are validated live by the hub, with
// the error's position highlighted; save, delete, and a backtest over the last hour. Under the list, the
// escalation defaults per severity (components/escalationDefaults.ts).

import { ApiError, del, get, post, put } from "../api";
import { ConditionEditor } from "../components/conditionEditor";
import { escalationDefaults } from "../components/escalationDefaults";
import { toast } from "../components/toast";
import { h, replace } from "../dom";
import { dateTime, num } from "../format";
import { data, t, tOr } from "../i18n";
import { SEVERITIES, SEVERITY_SHAPES, canOperate, type Backtest, type Rule } from "../types";
import type { Ctx, View } from "../view";

const ACTIONS = ["immediate-alert", "digest", "record"];
const EACH = ["mount", "interface", "device", "core", "sensor"];
const BLANK: Rule = { name: "", condition: "", severity: "warning", action: "immediate-alert", for: "0s", cooldown: "5m",
  fleet: false, enabled: true };

export function rulesView(ctx: Ctx, params: string[]): View {
  const editable = canOperate(ctx.me.role);
  const selected = params[0] ? decodeURIComponent(params[0]) : null;
  let destroyed = false;
  const list = h("ul", { class: "rule-list" });
  const editorBox = h("section", { class: "panel rule-editor", aria: { label: t("rules.title") } });

  async function loadList(): Promise<Rule[]> {
    try {
      const { rules } = await get<{ rules: Rule[] }>("/api/v1/rules");
      if (destroyed) return [];
      replace(list, ...rules.map((r) => h("li", { class: r.id === selected ? "selected" : "" },
        h("a", { href: `#/rules/${encodeURIComponent(r.id ?? "")}`, class: "rule-link", dataset: { rule: r.id ?? "" },
          aria: r.id === selected ? { current: "page" } : {} },
          h("span", { class: `shape sev-${r.severity}`, aria: { hidden: "true" }, text: SEVERITY_SHAPES[r.severity] }),
          h("strong", null, data(r.name)),
          r.enabled === false ? h("span", { class: "pill", text: t("rules.disabled") }) : null,
          h("code", { class: "rule-cond", text: r.condition, attrs: { translate: "no" } })))));
      return rules;
    } catch (error) {
      replace(list, h("li", { class: "error", text: t("common.error", { message: (error as ApiError).message }) }));
      return [];
    }
  }

  function editor(rule: Rule, isNew: boolean): void {
    const field = (id: string, label: string, control: HTMLElement) =>
      h("div", { class: "field" }, h("label", { for: id, text: label }), control);
    const text = (id: string, value: string | null | undefined, placeholder = "") =>
      h("input", { id, type: "text", value: value ?? "", attrs: { placeholder, autocomplete: "off", spellcheck: "false" } });
    const name = text("rule-name", rule.name);
    const fleet = h("input", { id: "rule-fleet", type: "checkbox" });
    fleet.checked = Boolean(rule.fleet);
    const isFleet = () => fleet.checked;
    const condition = new ConditionEditor("rule-condition", t("rules.condition"), rule.condition, isFleet);
    const clear = new ConditionEditor("rule-clear", t("rules.clear"), rule.clear ?? "", isFleet, true);
    const scope = new ConditionEditor("rule-scope", t("rules.scope"), rule.scope ?? "", () => false, true);
    fleet.addEventListener("change", () => {
      condition.revalidate();
      clear.revalidate();
    });
    const severity = h("select", { id: "rule-severity" }, ...SEVERITIES.map((s) => h("option", { value: s, text: tOr(`severity.${s}`, s) })));
    severity.value = rule.severity;
    const action = h("select", { id: "rule-action" }, ...ACTIONS.map((s) => h("option", { value: s, text: tOr(`action.${s}`, s) })));
    action.value = rule.action ?? "immediate-alert";
    const forInput = text("rule-for", rule.for ?? "0s", "0s");
    const cooldown = text("rule-cooldown", rule.cooldown ?? "5m", "5m");
    const repeat = text("rule-repeat", rule.repeat ?? "", "1h");
    const each = h("select", { id: "rule-each" }, h("option", { value: "", text: t("rules.eachNone") }),
      ...EACH.map((label) => h("option", { value: label, text: label })));
    each.value = rule.each ?? "";
    const enabled = h("input", { id: "rule-enabled", type: "checkbox" });
    enabled.checked = rule.enabled !== false;
    const description = h("textarea", { id: "rule-description", value: rule.description ?? "", attrs: { rows: "2" } });
    const family = text("rule-family", rule.family ?? "", t("rules.familyDefault"));
    const groupBy = text("rule-group-by", (rule.group_by ?? []).join(", "), "rule, severity");
    const escalation = h("textarea", { id: "rule-escalation", attrs: { rows: "3", spellcheck: "false",
      placeholder: '{"steps": [{"after": "10m", "users": ["oncall"]}], "repeat": "30m"}' },
      value: rule.escalation ? JSON.stringify(rule.escalation) : "" });
    const result = h("div", { class: "backtest", aria: { live: "polite" } });

    const body = (): Rule => {
      const r: Rule = { name: name.value.trim(), condition: condition.value.trim(), severity: severity.value as Rule["severity"],
        action: action.value, for: forInput.value.trim() || "0s", cooldown: cooldown.value.trim() || "5m",
        fleet: fleet.checked, enabled: enabled.checked };
      if (!isNew && rule.id) r.id = rule.id;
      if (clear.value.trim()) r.clear = clear.value.trim();
      if (scope.value.trim()) r.scope = scope.value.trim();
      if (repeat.value.trim()) r.repeat = repeat.value.trim();
      if (description.value.trim()) r.description = description.value.trim();
      if (family.value.trim()) r.family = family.value.trim();
      const labels = groupBy.value.split(",").map((x) => x.trim()).filter((x) => x);
      if (labels.length) r.group_by = labels;
      if (escalation.value.trim()) r.escalation = JSON.parse(escalation.value) as Rule["escalation"];  // a SyntaxError is shown
      if (each.value) r.each = each.value;
      return r;
    };
    // A 400 names the field first ("condition: ... at position 6"): show it where it belongs.
    const showSaveError = (error: ApiError) => {
      if (error instanceof SyntaxError) {  // the escalation field's JSON, parsed by body()
        toast(t("rules.escalationJson", { message: (error as SyntaxError).message }), "error");
        return;
      }
      const target = /^\s*clear\b/.test(error.message) ? clear : /^\s*scope\b/.test(error.message) ? scope
        : error.position !== null || /^\s*condition\b/.test(error.message) ? condition : null;
      if (target) target.showError({ message: error.message, position: error.position });
      else toast(t("common.error", { message: error.message }), "error");
    };

    const save = h("button", { type: "submit", class: "primary", text: t("rules.save"), disabled: !editable });
    const remove = h("button", { type: "button", class: "danger", text: t("rules.delete"), hidden: isNew, disabled: !editable });
    const backtest = h("button", { type: "button", text: t("rules.backtest") });
    const form = h("form", { class: "rule-form", attrs: { novalidate: "" } },
      isNew ? h("h2", { text: t("rules.new") }) : h("h2", null, data(rule.name)),
      editable ? null : h("p", { class: "notice", text: t("rules.readOnly") }),
      field("rule-name", t("rules.name"), name), condition.el, clear.el, scope.el,
      h("div", { class: "row" }, field("rule-severity", t("rules.severity"), severity), field("rule-action", t("rules.action"), action),
        field("rule-for", t("rules.for"), forInput), field("rule-cooldown", t("rules.cooldown"), cooldown),
        field("rule-repeat", t("rules.repeat"), repeat), field("rule-each", t("rules.each"), each)),
      h("div", { class: "row checks" },
        h("label", { class: "check" }, fleet, t("rules.fleet")), h("label", { class: "check" }, enabled, t("rules.enabled"))),
      field("rule-description", t("rules.description"), description),
      h("fieldset", null, h("legend", { text: t("rules.notifications") }),
        h("div", { class: "row" }, field("rule-family", t("rules.family"), family), field("rule-group-by", t("rules.groupBy"), groupBy)),
        field("rule-escalation", t("rules.escalation"), escalation)),
      rule.updated_at ? h("p", { class: "muted" }, data(rule.created_by ?? ""), ` · ${dateTime(rule.updated_at)}`) : null,
      h("div", { class: "actions" }, save, backtest, remove),
      result);

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      save.disabled = true;
      try {
        const saved = isNew ? await post<Rule>("/api/v1/rules", body())
          : await put<Rule>(`/api/v1/rules/${encodeURIComponent(rule.id ?? "")}`, body());
        toast(t("rules.saved"), "success");
        if (isNew) location.hash = `#/rules/${encodeURIComponent(saved.id ?? "")}`;
        else void loadList();
      } catch (error) {
        showSaveError(error as ApiError);
      } finally {
        save.disabled = !editable;
      }
    });
    remove.addEventListener("click", async () => {
      if (!confirm(t("rules.confirmDelete", { name: rule.name }))) return;
      try {
        await del(`/api/v1/rules/${encodeURIComponent(rule.id ?? "")}`);
        toast(t("rules.deleted"), "success");
        location.hash = "#/rules";
      } catch (error) {
        toast(t("common.error", { message: (error as ApiError).message }), "error");
      }
    });
    backtest.addEventListener("click", async () => {
      backtest.disabled = true;
      replace(result, h("p", { class: "muted", text: t("common.loading") }));
      try {
        const r = await post<Backtest>("/api/v1/rules/backtest", { rule: body(), since: "1h" });
        replace(result,
          h("p", { class: "backtest-summary", text: t("rules.backtestResult", { firings: r.firings, notifications: r.notifications,
            servers: r.servers, evaluations: num(r.evaluations, 0), step: num(r.step_ms / 1000, 1) }) }),
          r.history && !r.history.enough && r.history.reason
            ? h("p", { class: "backtest-history muted", text: t("rules.history", { reason: r.history.reason }) }) : null,
          r.episodes.length ? h("table", { class: "table" },
            h("caption", { text: t("rules.episodes") }),
            h("thead", null, h("tr", null, ...(["server", "fired", "resolved", "value", "notified"] as const).map((c) =>
              h("th", { text: t(`backtest.${c}`), attrs: { scope: "col" } })))),
            h("tbody", null, ...r.episodes.slice(0, 100).map((e) => h("tr", null,
              h("td", null, data(e.labels ? `${Object.values(e.labels).join(", ")} ${t("alerts.on")} ${e.server}` : e.server)),
              h("td", { text: dateTime(e.fired_at) }), h("td", { text: dateTime(e.resolved_at) }),
              h("td", { text: num(e.value, 2) }), h("td", { text: e.notified ? t("common.yes") : t("common.no") })))))
            : h("p", { class: "muted", text: t("rules.noEpisodes") }));
      } catch (error) {
        const e = error as ApiError;
        replace(result);
        showSaveError(e);
      } finally {
        backtest.disabled = false;
      }
    });
    replace(editorBox, form);
  }

  const el = h("div", { class: "view view-rules" },
    h("header", { class: "view-header" }, h("h1", { text: t("rules.title") }),
      h("a", { href: "#/rules/new", class: "button primary", text: t("rules.new") })),
    h("div", { class: "split" }, h("section", { class: "panel" }, list, escalationDefaults(ctx.me.role === "admin")), editorBox));

  return {
    el,
    mounted() {
      void (async () => {
        const rules = await loadList();
        if (destroyed) return;
        const rule = selected && selected !== "new" ? rules.find((r) => r.id === selected) : undefined;
        if (rule) editor(rule, false);
        else editor({ ...BLANK }, true);
      })();
    },
    destroy() {
      destroyed = true;
    },
  };
}

// A rule-condition editor with live validation: the text is checked by POST /api/v1/rules/validate as
// it is typed, and an error's position is highlighted in place (a backdrop behind the transparent
// textarea marks the character) and named below it. The backdrop also marks the function names (the
// history functions `predict`, `time_to`, `anomaly`, `outlier` apart), and a note below the field explains
// each history function the condition uses and the history it needs before it answers.

import { ApiError, post } from "../api";
import { debounce, h, replace, setText } from "../dom";
import { data, t, tn } from "../i18n";

/** Function names the rule language knows, as the grammar matches them (a word followed by "("). */
const FUNCTION = /\b(avg|min|max|last|rate|delta|p95|count|any|all|fleet_(?:avg|min|max|p95)|predict|time_to|anomaly|outlier)(?=\s*\()/gi;
export const HISTORY_FUNCTIONS = ["predict", "time_to", "anomaly", "outlier"] as const;
type HistoryFunction = (typeof HISTORY_FUNCTIONS)[number];

/** [start, end, name] of each function name in `text`, in order. */
export function functionSpans(text: string): [number, number, string][] {
  const out: [number, number, string][] = [];
  for (const m of text.matchAll(FUNCTION)) out.push([m.index ?? 0, (m.index ?? 0) + m[0].length, m[0].toLowerCase()]);
  return out;
}

interface Validation {
  valid: boolean;
  error?: { message: string; position: number | null };
}

export class ConditionEditor {
  readonly el: HTMLElement;
  readonly input: HTMLTextAreaElement;
  private readonly backdrop: HTMLElement;
  private readonly message: HTMLElement;
  private readonly help: HTMLElement;
  private seq = 0;
  private readonly check: () => void;
  valid: boolean | null = null;

  constructor(id: string, label: string, value: string, private readonly fleet: () => boolean,
    private readonly optional = false) {
    const msgId = `${id}-msg`;
    this.input = h("textarea", { id, class: "code-input", name: id, attrs: { spellcheck: "false", rows: "2",
      autocomplete: "off", autocapitalize: "off" }, aria: { describedby: msgId }, value });
    this.backdrop = h("div", { class: "code-backdrop", aria: { hidden: "true" } });
    this.message = h("p", { id: msgId, class: "field-msg", role: "status" });
    this.help = h("ul", { id: `${id}-help`, class: "field-help fn-help" });
    this.input.setAttribute("aria-describedby", `${msgId} ${id}-help`);
    this.el = h("div", { class: "field code-field" },
      h("label", { for: id, text: label }),
      h("div", { class: "code-editor" }, this.backdrop, this.input),
      this.message, this.help);
    this.check = debounce(() => void this.validate(), 200);
    this.input.addEventListener("input", () => {
      this.paint(null);
      this.check();
    });
    this.input.addEventListener("scroll", () => {
      this.backdrop.scrollTop = this.input.scrollTop;
    });
    this.paint(null);
    if (value.trim()) this.check();
  }

  get value(): string {
    return this.input.value;
  }

  /** Re-run validation now (e.g. when the fleet flag changes). */
  revalidate(): void {
    this.check();
  }

  /** Ask the hub; paint the answer if it is still the newest question. */
  async validate(): Promise<boolean | null> {
    const condition = this.input.value;
    const mine = ++this.seq;
    if (!condition.trim()) {
      this.showError(null);
      this.valid = this.optional ? true : null;
      this.el.dataset.state = "empty";
      return this.valid;
    }
    try {
      const r = await post<Validation>("/api/v1/rules/validate", { condition, fleet: this.fleet() });
      if (mine !== this.seq) return null;
      this.valid = r.valid;
      this.showError(r.valid ? null : { message: r.error?.message ?? "invalid", position: r.error?.position ?? null });
    } catch (error) {
      if (mine !== this.seq) return null;
      const e = error as ApiError;
      this.valid = false;
      this.showError({ message: e.message, position: e.position });
    }
    return this.valid;
  }

  /** Show an error (from validation or from a save's 400) at its position; null clears it. */
  showError(error: { message: string; position: number | null } | null): void {
    if (!error) {
      this.el.dataset.state = this.input.value.trim() ? "valid" : "empty";
      delete this.el.dataset.errorPosition;
      this.input.removeAttribute("aria-invalid");
      setText(this.message, this.input.value.trim() ? t("rules.valid") : "");
      this.message.className = "field-msg ok";
      this.paint(null);
      return;
    }
    this.el.dataset.state = "invalid";
    this.input.setAttribute("aria-invalid", "true");
    const pos = error.position;
    if (pos !== null) this.el.dataset.errorPosition = String(pos);
    // The hub's message is its own words (data); the frame around it is interface text.
    replace(this.message, ...(pos !== null ? tn("rules.invalid", { position: document.createTextNode(String(pos)), message: error.message })
      : [data(error.message)]));
    this.message.className = "field-msg error";
    this.paint(pos);
  }

  /** The backdrop: the same text, function names marked, and the error's character (if any). */
  private paint(position: number | null): void {
    const text = this.input.value;
    const spans = functionSpans(text);
    const at = position === null || position < 0 ? -1 : Math.min(position, text.length);
    const nodes: (Node | string)[] = [];
    let i = 0;
    const plain = (end: number): void => { // text up to `end`, the error character marked where it falls
      if (at >= i && at < end) {
        const ch = text.slice(at, at + 1);
        nodes.push(text.slice(i, at), h("mark", { class: "error-mark", dataset: { position: String(position) },
          text: ch && ch !== "\n" ? ch : " " }), ch === "\n" ? "\n" : "");
        i = at + 1;
      }
      if (end > i) nodes.push(text.slice(i, end));
      i = Math.max(i, end);
    };
    for (const [start, end, name] of spans) {
      plain(start);
      if (at >= start && at < end) { plain(end); continue; } // an error inside a name: the error wins
      const history = (HISTORY_FUNCTIONS as readonly string[]).includes(name);
      nodes.push(h("span", { class: history ? "fn-mark fn-history" : "fn-mark", dataset: { fn: name },
        text: text.slice(start, end) }));
      i = end;
    }
    plain(text.length);
    if (at === text.length) nodes.push(h("mark", { class: "error-mark", dataset: { position: String(position) }, text: " " }));
    replace(this.backdrop, ...nodes, "\n");
    this.explain(spans.map(([, , name]) => name));
  }

  /** One line per history function used: what it is and the history it needs (unknown until then). */
  private explain(names: string[]): void {
    const used = HISTORY_FUNCTIONS.filter((f: HistoryFunction) => names.includes(f));
    replace(this.help, ...used.map((f) => h("li", { dataset: { fn: f } },
      h("code", { text: f, attrs: { translate: "no" } }), " ", t(`rules.fn.${f}`))));
  }
}

// A rule-condition editor with live validation: the text is checked by POST /api/v1/rules/validate as
// it is typed, and an error's position is highlighted in place (a backdrop behind the transparent
// textarea marks the character) and named below it.

import { ApiError, post } from "../api";
import { debounce, h, replace, setText } from "../dom";
import { data, t, tn } from "../i18n";

interface Validation {
  valid: boolean;
  error?: { message: string; position: number | null };
}

export class ConditionEditor {
  readonly el: HTMLElement;
  readonly input: HTMLTextAreaElement;
  private readonly backdrop: HTMLElement;
  private readonly message: HTMLElement;
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
    this.el = h("div", { class: "field code-field" },
      h("label", { for: id, text: label }),
      h("div", { class: "code-editor" }, this.backdrop, this.input),
      this.message);
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

  private paint(position: number | null): void {
    const text = this.input.value;
    if (position === null || position < 0) {
      replace(this.backdrop, text + "\n");
      return;
    }
    const at = Math.min(position, text.length);
    const ch = text.slice(at, at + 1);
    const mark = h("mark", { class: "error-mark", dataset: { position: String(position) },
      text: ch && ch !== "\n" ? ch : " " });
    replace(this.backdrop, text.slice(0, at), mark, (ch === "\n" ? "\n" : "") + text.slice(at + 1) + "\n");
  }
}

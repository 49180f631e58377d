import { h } from "../dom";
import { t } from "../i18n";

let container: HTMLElement | null = null;

export function toastContainer(): HTMLElement {
  if (!container) container = h("div", { id: "toasts", class: "toasts", aria: { live: "assertive" } });
  return container;
}

/** Show a toast for `ms` (0: until closed). `kind` styles it (info, success, error, critical). */
export function toast(text: string | (Node | string)[], kind: "info" | "success" | "error" | "critical" = "info", ms = 6000,
  href?: string): HTMLElement {
  const box = toastContainer();
  const close = h("button", { class: "icon-button", type: "button", aria: { label: t("common.close") }, text: "×" });
  const parts = typeof text === "string" ? [text] : text;
  const body = href ? h("a", { href }, ...parts) : h("span", null, ...parts);
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "critical" || kind === "error" ? "alert" : "status" },
    kind === "critical" ? h("span", { class: "shape", aria: { hidden: "true" }, text: "■" }) : null, body, close);
  const remove = () => el.remove();
  close.addEventListener("click", remove);
  box.append(el);
  while (box.childElementCount > 5) box.firstElementChild?.remove();
  if (ms > 0) setTimeout(remove, ms);
  return el;
}

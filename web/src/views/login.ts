// Sign in with a user name and password, or with a token (POST /api/v1/login sets the session cookie).
// The link the hub prints (`/?token=`) signs in before this page even loads.

import { ApiError, post } from "../api";
import { h } from "../dom";
import { t } from "../i18n";
import type { Me } from "../types";

export function loginView(onSignedIn: (me: Me) => void): HTMLElement {
  let mode: "password" | "token" = "password";
  const name = h("input", { id: "login-name", name: "username", type: "text", attrs: { autocomplete: "username" } });
  const password = h("input", { id: "login-password", name: "password", type: "password", attrs: { autocomplete: "current-password" } });
  const token = h("input", { id: "login-token", name: "token", type: "password", attrs: { autocomplete: "off", spellcheck: "false" } });
  const field = (id: string, label: string, control: HTMLElement) =>
    h("div", { class: "field" }, h("label", { for: id, text: label }), control);
  const passwordPanel = h("div", { id: "login-panel-password", role: "tabpanel", aria: { labelledby: "login-tab-password" } },
    field("login-name", t("login.name"), name), field("login-password", t("login.secret"), password));
  const tokenPanel = h("div", { id: "login-panel-token", role: "tabpanel", hidden: true, aria: { labelledby: "login-tab-token" } },
    field("login-token", t("login.tokenField"), token));
  const error = h("p", { class: "field-msg error", role: "alert", id: "login-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "login-submit", text: t("login.submit") });

  const tab = (m: "password" | "token", label: string) => h("button", {
    type: "button", role: "tab", id: `login-tab-${m}`, text: label, class: "seg",
    aria: { selected: String(m === mode), controls: `login-panel-${m}` }, tabindex: m === mode ? 0 : -1,
  });
  const tabs = [tab("password", t("login.password")), tab("token", t("login.token"))];
  const select = (m: "password" | "token") => {
    mode = m;
    for (const b of tabs) {
      const on = b.id === `login-tab-${m}`;
      b.setAttribute("aria-selected", String(on));
      b.tabIndex = on ? 0 : -1;
    }
    passwordPanel.hidden = m !== "password";
    tokenPanel.hidden = m !== "token";
    (m === "password" ? name : token).focus();
  };
  tabs[0].addEventListener("click", () => select("password"));
  tabs[1].addEventListener("click", () => select("token"));
  for (const b of tabs) {
    b.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowRight" || ev.key === "ArrowLeft") {
        select(mode === "password" ? "token" : "password");
        (mode === "password" ? tabs[0] : tabs[1]).focus();
      }
    });
  }

  const form = h("form", { class: "login-form panel", id: "login-form" },
    h("h1", { text: t("login.title") }),
    h("div", { class: "segmented", role: "tablist" }, ...tabs),
    passwordPanel, tokenPanel, error, submit,
    h("p", { class: "muted", text: t("login.hint") }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    submit.disabled = true;
    const body = mode === "password" ? { name: name.value.trim(), password: password.value } : { token: token.value.trim() };
    try {
      const me = await post<Me>("/api/v1/login", body, { quiet401: true });
      onSignedIn(me);
    } catch (e) {
      error.textContent = t("login.failed", { message: (e as ApiError).message });
      submit.disabled = false;
    }
  });
  return h("main", { class: "login", id: "main" }, form);
}

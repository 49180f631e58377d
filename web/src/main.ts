// The dashboard shell: sign-in, the header (navigation, connection status, bell, theme, language), the
// hash router, toasts for new critical alerts. All data comes through the browser client
// (/static/openmanager.js, one connection for every stream) and the REST API.

import "uplot/dist/uPlot.min.css";
import "./styles.css";
import { ApiError, get, post, setUnauthorizedHandler } from "./api";
import { connectionStatus, type ConnectionView } from "./components/connection";
import { toast, toastContainer } from "./components/toast";
import { h, replace } from "./dom";
import { initLang, lang, setLang, t, tn, userLine, type Key } from "./i18n";
import { Live } from "./live";
import { effectiveTheme, initTheme, onThemeChange, setTheme } from "./theme";
import type { AlertEvent, Me } from "./types";
import type { Ctx, View } from "./view";
import { alertsView } from "./views/alerts";
import { alertTimelineView } from "./views/alertTimeline";
import { fleetView } from "./views/fleet";
import { connectionsView } from "./views/connections";
import { hubView } from "./views/hub";
import { loginView } from "./views/login";
import { logsView } from "./views/logs";
import { notificationsView } from "./views/notifications";
import { rulesView } from "./views/rules";
import { serverView } from "./views/server";
import { settingsView } from "./views/settings";

declare global {
  interface Window {
    /** the browser client, for the console and the browser tests */
    openmanager?: Live["client"];
    /** the dashboard's live state, for the console, the tests and the benchmark */
    omApp?: { live: Live; route: () => string };
  }
}

const NAV: { route: string; key: Key; admin?: boolean }[] = [
  { route: "fleet", key: "nav.fleet" },
  { route: "logs", key: "nav.logs" },
  { route: "alerts", key: "nav.alerts" },
  { route: "rules", key: "nav.rules" },
  { route: "notifications", key: "nav.notifications" },
  { route: "hub", key: "nav.hub" },
  { route: "connections", key: "nav.connections", admin: true },
  { route: "settings", key: "nav.settings" },
];

const SVG = "http://www.w3.org/2000/svg";
function bellIcon(): SVGSVGElement {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("width", "20");
  svg.setAttribute("height", "20");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", "M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3a1.5 1.5 0 0 0-3 0v1.16A7 7 0 0 0 5 11v5l-2 2v1h18v-1Z");
  path.setAttribute("fill", "currentColor");
  svg.append(path);
  return svg;
}

function parseRoute(): { name: string; params: string[] } {
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter((p) => p !== "");
  const name = parts[0] ?? "fleet";
  return { name, params: parts.slice(1).map((p) => decodeURIComponent(p)) };
}

class App {
  private view: View | null = null;
  private conn: ConnectionView | null = null;
  private main!: HTMLElement;
  private bellCount!: HTMLElement;
  private bell!: HTMLAnchorElement;
  private navLinks: HTMLAnchorElement[] = [];
  private readonly ctx: Ctx;
  private readonly offs: (() => void)[] = [];

  constructor(readonly live: Live, readonly me: Me, private readonly onSignedOut: () => void) {
    this.ctx = { live, me };
    window.openmanager = live.client;
    window.omApp = { live, route: () => location.hash };
    this.offs.push(live.on("unread", () => this.renderBell()));
    this.offs.push(live.on("alert-event", (e) => this.onAlertEvent(e as AlertEvent)));
    const onHash = () => this.route();
    window.addEventListener("hashchange", onHash);
    this.offs.push(() => window.removeEventListener("hashchange", onHash));
    this.offs.push(onThemeChange(() => this.rerender()));
    const onKey = (ev: KeyboardEvent) => this.shortcut(ev);
    document.addEventListener("keydown", onKey);
    this.offs.push(() => document.removeEventListener("keydown", onKey));
  }

  start(): void {
    this.renderShell();
    this.live.start();
    this.route();
  }

  /** Build the shell again (language or theme changed) and remount the current view; the data stays. */
  rerender(): void {
    this.renderShell();
    this.route();
  }

  private renderShell(): void {
    this.conn?.destroy();
    this.conn = connectionStatus(this.live, () => this.signOut(false));
    this.navLinks = NAV.filter((n) => !n.admin || this.me.role === "admin")
      .map((n) => h("a", { href: `#/${n.route}`, dataset: { route: n.route }, text: t(n.key) }));
    this.bellCount = h("span", { class: "bell-count" });
    this.bell = h("a", { href: "#/notifications", class: "bell icon-button", id: "bell" }, bellIcon(), this.bellCount);
    const themeButton = h("button", { type: "button", class: "icon-button", id: "theme-toggle", title: t("theme.toggle"),
      aria: { label: t("theme.toggle") }, text: effectiveTheme() === "dark" ? "☀" : "☾" });
    themeButton.addEventListener("click", () => setTheme(effectiveTheme() === "dark" ? "light" : "dark"));
    const langButton = h("button", { type: "button", class: "lang-toggle", id: "lang-toggle", aria: { label: t("lang.label") },
      text: t("lang.toggle"), attrs: { lang: lang() === "en" ? "ko" : "en" } });
    langButton.addEventListener("click", () => {
      setLang(lang() === "en" ? "ko" : "en");
      this.rerender();
    });
    this.main = h("main", { id: "main", tabindex: -1 });
    const header = h("header", { class: "topbar" },
      h("a", { class: "brand", href: "#/fleet" }, h("span", { class: "brand-mark", aria: { hidden: "true" }, text: "◆" }), t("app.title")),
      h("nav", { class: "nav", aria: { label: t("nav.main") } }, ...this.navLinks),
      h("div", { class: "topbar-right" }, this.conn.badge, this.bell, themeButton, langButton,
        h("span", { class: "user muted" }, ...userLine(this.me.user, this.me.role))));
    replace(document.body,
      h("a", { class: "skip-link", href: "#main", text: t("app.skip"), on: { click: (ev) => {
        ev.preventDefault();
        this.main.focus();
      } } }),
      header, this.conn.banner, this.main, toastContainer());
    this.renderBell();
  }

  private renderBell(): void {
    const n = this.live.unread;
    this.bellCount.textContent = n > 99 ? "99+" : String(n);
    this.bellCount.hidden = n === 0;
    this.bell.dataset.unread = String(n);
    this.bell.setAttribute("aria-label", t("bell.label", { count: n }));
  }

  private route(): void {
    const { name, params } = parseRoute();
    this.view?.destroy();
    this.view = null;
    const ctx = this.ctx;
    let view: View;
    switch (name) {
      case "servers": view = serverView(ctx, params); break;
      case "logs": view = logsView(ctx); break;
      case "alerts": view = params.length ? alertTimelineView(ctx, params) : alertsView(ctx); break;
      case "rules": view = rulesView(ctx, params); break;
      case "notifications": view = notificationsView(ctx); break;
      case "settings": view = settingsView(ctx, params, { rerender: () => this.rerender(), logout: () => void this.signOut(true) }); break;
      case "hub": view = hubView(ctx); break;
      case "connections": view = connectionsView(ctx); break;
      default: view = fleetView(ctx);
    }
    const active = name === "servers" ? "fleet" : name;
    for (const a of this.navLinks) {
      if (a.dataset.route === active) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = `${t((NAV.find((n) => n.route === active)?.key ?? "nav.fleet"))} · ${t("app.title")}`;
    this.view = view;
    replace(this.main, view.el);
    this.main.dataset.view = name;
    view.mounted?.();
  }

  private onAlertEvent(e: AlertEvent): void {
    // A new critical alert (not a replay of an old one after a reconnect).
    if (e.transition !== "firing" || e.alert.severity !== "critical" || Date.now() - e.ts > 60000) return;
    const server = e.alert.server ?? t("alerts.fleet");
    toast(tn("alerts.toast", { rule: e.alert.rule.name, server }), "critical", 10000, "#/alerts");
  }

  private shortcut(ev: KeyboardEvent): void {
    const target = ev.target as HTMLElement;
    if (ev.ctrlKey || ev.metaKey || ev.altKey || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) return;
    if (ev.key === "/") {
      const search = document.getElementById("fleet-search") ?? document.getElementById("logs-contains");
      if (search) {
        ev.preventDefault();
        search.focus();
      }
    }
  }

  async signOut(callHub: boolean): Promise<void> {
    if (callHub) await post("/api/v1/logout").catch(() => {});
    for (const off of this.offs) off();
    this.view?.destroy();
    this.conn?.destroy();
    this.live.client.close();
    this.onSignedOut();
  }
}

let app: App | null = null;

function showLogin(): void {
  app = null;
  replace(document.body, loginView((me) => startApp(me)), toastContainer());
  document.title = t("login.title");
  (document.getElementById("login-name") as HTMLInputElement | null)?.focus();
}

function startApp(me: Me): void {
  const live = new Live(me);
  app = new App(live, me, showLogin);
  app.start();
}

async function whoAmI(): Promise<Me | null> {
  try {
    return await get<Me>("/api/v1/me", { quiet401: true });
  } catch (error) {
    const e = error as ApiError;
    if (e.status === 401) return null;
    if (e.status === 404) {
      // A hub without accounts: the admin token (through the cookie) is the only identity.
      try {
        await get("/api/v1/servers", { quiet401: true });
        return { user: "admin", role: "admin" };
      } catch {
        return null;
      }
    }
    throw error;
  }
}

async function boot(): Promise<void> {
  initTheme();
  initLang();
  setUnauthorizedHandler(() => {
    if (app) void app.signOut(false);
  });
  let me: Me | null = null;
  try {
    me = await whoAmI();
  } catch (error) {
    replace(document.body, h("main", { class: "login" }, h("p", { class: "error", role: "alert",
      text: t("common.error", { message: (error as Error).message }) })));
    setTimeout(() => void boot(), 3000);
    return;
  }
  if (me) startApp(me);
  else showLogin();
}

void boot();

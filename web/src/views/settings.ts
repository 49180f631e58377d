// Settings: theme and language, the account, notification preferences (channels with a test button each,
// Apprise URLs with a builder for the common services, grouping, quiet hours, digest), a test through every
// channel, and "enable push on this device" (service worker + PushManager subscription).

import { ApiError, get, post, put } from "../api";
import { toast } from "../components/toast";
import { h, replace } from "../dom";
import { lang, setLang, t, tOr, userLine, type Key, type Lang } from "../i18n";
import { setTheme, themeChoice, type ThemeChoice } from "../theme";
import { SEVERITIES, type Preferences } from "../types";
import type { Ctx, View } from "../view";

const CHANNELS = ["inapp", "email", "webhook", "webpush", "apprise"] as const;

/** Apprise URL templates for the common services: `{part}` becomes an input in the builder. */
const APPRISE_TEMPLATES: Record<string, string> = {
  ntfy: "ntfy://{host}/{topic}",
  gotify: "gotifys://{host}/{token}",
  slack: "slack://{token_a}/{token_b}/{token_c}",
  discord: "discord://{webhook_id}/{webhook_token}",
  telegram: "tgram://{bot_token}/{chat_id}",
  teams: "workflows://{host}/{workflow}/{signature}",
  matrix: "matrixs://{user}:{password}@{host}/{room}",
  pushover: "pover://{user_key}@{token}",
  pagerduty: "pagerduty://{integration_key}@{api_key}",
  opsgenie: "opsgenie://{api_key}",
  json: "jsons://{host}/{path}",
};

export interface SettingsHooks {
  rerender: () => void;
  logout: () => void;
}

function base64UrlToBytes(s: string): Uint8Array<ArrayBuffer> {
  const pad = "=".repeat((4 - (s.length % 4)) % 4);
  const raw = atob((s + pad).replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(new ArrayBuffer(raw.length));
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

/** Register the service worker, subscribe with the hub's VAPID key, and hand the subscription to the hub. */
export async function enablePush(): Promise<"enabled" | "unsupported" | "denied"> {
  if (!("serviceWorker" in navigator) || !("PushManager" in window) || !window.isSecureContext) return "unsupported";
  const permission = await window.Notification.requestPermission();
  if (permission !== "granted") return "denied";
  const reg = await navigator.serviceWorker.register("/static/sw.js", { scope: "/static/" });
  const worker = reg.installing ?? reg.waiting;
  if (worker && !reg.active) {
    await new Promise<void>((resolve) => {
      worker.addEventListener("statechange", () => {
        if (worker.state === "activated") resolve();
      });
    });
  }
  const { public_key } = await get<{ public_key: string }>("/api/v1/push/vapid-public-key");
  const subscription = (await reg.pushManager.getSubscription())
    ?? await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: base64UrlToBytes(public_key) });
  await post("/api/v1/push/subscriptions", subscription.toJSON());
  return "enabled";
}

export function settingsView(ctx: Ctx, _params: string[], hooks: SettingsHooks): View {
  let destroyed = false;
  const field = (id: string, label: string, control: HTMLElement) =>
    h("div", { class: "field" }, h("label", { for: id, text: label }), control);

  // -- appearance -----------------------------------------------------------------------------------
  const theme = h("select", { id: "set-theme" }, ...(["system", "light", "dark"] as ThemeChoice[]).map((c) =>
    h("option", { value: c, text: t(`theme.${c}` as Key) })));
  theme.value = themeChoice();
  theme.addEventListener("change", () => {
    setTheme(theme.value as ThemeChoice);
  });
  const language = h("select", { id: "set-lang" }, h("option", { value: "en", text: "English" }), h("option", { value: "ko", text: "한국어" }));
  language.value = lang();
  language.addEventListener("change", () => {
    setLang(language.value as Lang);
    hooks.rerender();
  });

  // -- preferences ----------------------------------------------------------------------------------
  const prefsBox = h("div", { class: "prefs" }, h("p", { class: "muted", text: t("common.loading") }));
  function prefsForm(p: Preferences): HTMLElement {
    const rows = CHANNELS.map((name) => {
      const c = p.channels[name] ?? { enabled: false, min_severity: "warning" };
      const enabled = h("input", { id: `ch-${name}-enabled`, type: "checkbox" });
      enabled.checked = c.enabled;
      const min = h("select", { id: `ch-${name}-min`, aria: { label: `${t(`settings.channel.${name}` as Key)}: ${t("settings.minSeverity")}` } },
        ...SEVERITIES.map((s) => h("option", { value: s, text: tOr(`severity.${s}`, s) })));
      min.value = c.min_severity;
      const extra: HTMLElement[] = [];
      const read: Record<string, () => unknown> = {};
      if (name === "email") {
        const to = h("input", { id: "ch-email-to", type: "email", value: Array.isArray(c.to) ? c.to.join(", ") : c.to ?? "",
          attrs: { autocomplete: "email" } });
        extra.push(field("ch-email-to", t("settings.emailTo"), to));
        read.to = () => to.value.trim() || undefined;
      }
      if (name === "webhook") {
        const url = h("input", { id: "ch-webhook-url", type: "password", attrs: { autocomplete: "off",
          placeholder: c.url_set ? t("settings.webhookSet") : "https://…" } });
        const format = h("select", { id: "ch-webhook-format" }, h("option", { value: "json", text: "json" }), h("option", { value: "slack", text: "slack" }));
        format.value = c.format ?? "json";
        extra.push(field("ch-webhook-url", t("settings.webhookUrl"), url), field("ch-webhook-format", t("settings.webhookFormat"), format));
        read.url = () => url.value.trim() || undefined;
        read.format = () => format.value;
      }
      if (name === "apprise") {
        const urls = h("textarea", { id: "ch-apprise-urls", attrs: { rows: "3", autocomplete: "off", spellcheck: "false",
          placeholder: c.urls_set ? t("settings.appriseSet", { services: (c.services ?? []).join(", ") }) : "ntfy://ntfy.example.com/alerts" } });
        const service = h("select", { id: "ch-apprise-service" }, ...Object.keys(APPRISE_TEMPLATES).map((k) =>
          h("option", { value: k, text: k })));
        const parts = h("div", { class: "row apprise-parts" });
        const inputs: Record<string, HTMLInputElement> = {};
        const showParts = () => {
          for (const k of Object.keys(inputs)) delete inputs[k];
          const names = [...APPRISE_TEMPLATES[service.value].matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
          replace(parts, ...names.map((n) => {
            inputs[n] = h("input", { id: `apprise-part-${n}`, type: "text", attrs: { autocomplete: "off" } });
            return field(`apprise-part-${n}`, n, inputs[n]);
          }));
        };
        service.addEventListener("change", showParts);
        showParts();
        const add = h("button", { type: "button", id: "apprise-add", text: t("settings.appriseAdd") });
        add.addEventListener("click", () => {
          const url = APPRISE_TEMPLATES[service.value].replace(/\{(\w+)\}/g, (_m, n: string) => encodeURIComponent(inputs[n]?.value.trim() ?? ""));
          urls.value = (urls.value.trim() ? urls.value.trim() + "\n" : "") + url;
        });
        extra.push(field("ch-apprise-urls", t("settings.appriseUrls"), urls),
          h("div", { class: "apprise-builder" }, field("ch-apprise-service", t("settings.appriseBuilder"), service), parts, add));
        read.urls = () => {
          const list = urls.value.split("\n").map((u) => u.trim()).filter((u) => u);
          return list.length ? list : undefined;
        };
      }
      const testOne = h("button", { type: "button", class: "channel-test", text: t("settings.testChannel") });
      testOne.addEventListener("click", async () => {
        testOne.disabled = true;
        try {
          const r = await post<{ ok: boolean; detail: string }>(`/api/v1/me/test-notification/${name}`);
          toast(t(r.ok ? "settings.testOk" : "settings.testFailed", { detail: r.detail }), r.ok ? "success" : "error", 10000);
        } catch (error) {
          toast(t("common.error", { message: (error as ApiError).message }), "error");
        } finally {
          testOne.disabled = false;
        }
      });
      const fieldset = h("fieldset", { class: "channel", dataset: { channel: name } },
        h("legend", { text: t(`settings.channel.${name}` as Key) }),
        h("label", { class: "check" }, enabled, t("settings.enabled")),
        field(`ch-${name}-min`, t("settings.minSeverity"), min), ...extra, testOne);
      const value = () => {
        const out: Record<string, unknown> = { enabled: enabled.checked, min_severity: min.value };
        for (const [k, fn] of Object.entries(read)) {
          const v = fn();
          if (v !== undefined) out[k] = v;
        }
        return out;
      };
      return { name, fieldset, value };
    });
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    const q = p.quiet_hours;
    const quietOn = h("input", { id: "quiet-on", type: "checkbox" });
    quietOn.checked = q !== null;
    const qStart = h("input", { id: "quiet-start", type: "time", value: q?.start ?? "22:00" });
    const qEnd = h("input", { id: "quiet-end", type: "time", value: q?.end ?? "07:00" });
    const qZone = h("input", { id: "quiet-zone", type: "text", value: q?.timezone ?? zone });
    const qBypass = h("input", { id: "quiet-bypass", type: "checkbox" });
    qBypass.checked = q?.critical_bypass ?? true;
    const dMode = h("select", { id: "digest-mode" }, ...(["off", "hourly", "daily"] as const).map((m) =>
      h("option", { value: m, text: t(`settings.digest.${m}` as Key) })));
    dMode.value = p.digest.mode;
    const dAt = h("input", { id: "digest-at", type: "time", value: p.digest.at });
    const dZone = h("input", { id: "digest-zone", type: "text", value: p.digest.timezone });
    const gBy = h("input", { id: "group-by", type: "text", value: (p.grouping?.group_by ?? []).join(", "),
      attrs: { placeholder: "rule, severity" } });
    const gBypass = h("input", { id: "group-bypass", type: "checkbox" });
    gBypass.checked = p.grouping?.critical_bypass ?? false;
    const save = h("button", { type: "submit", class: "primary", text: t("settings.save") });
    const form = h("form", { class: "prefs-form" },
      h("h3", { text: t("settings.channels") }), h("div", { class: "channels-grid" }, ...rows.map((r) => r.fieldset)),
      h("fieldset", null, h("legend", { text: t("settings.quiet") }),
        h("label", { class: "check" }, quietOn, t("settings.quietOn")),
        h("div", { class: "row" }, field("quiet-start", t("settings.quietStart"), qStart), field("quiet-end", t("settings.quietEnd"), qEnd),
          field("quiet-zone", t("settings.timezone"), qZone)),
        h("label", { class: "check" }, qBypass, t("settings.bypass"))),
      h("fieldset", null, h("legend", { text: t("settings.grouping") }),
        field("group-by", t("settings.groupBy"), gBy),
        h("label", { class: "check" }, gBypass, t("settings.groupBypass"))),
      h("fieldset", null, h("legend", { text: t("settings.digest") }),
        h("div", { class: "row" }, field("digest-mode", t("settings.digestMode"), dMode), field("digest-at", t("settings.digestAt"), dAt),
          field("digest-zone", t("settings.timezone"), dZone))),
      h("div", { class: "actions" }, save));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      save.disabled = true;
      const body = {
        channels: Object.fromEntries(rows.map((r) => [r.name, r.value()])),
        quiet_hours: quietOn.checked ? { start: qStart.value, end: qEnd.value, timezone: qZone.value.trim() || "UTC",
          critical_bypass: qBypass.checked } : null,
        digest: { mode: dMode.value, at: dAt.value || "09:00", timezone: dZone.value.trim() || "UTC" },
        grouping: { group_by: gBy.value.trim() ? gBy.value.split(",").map((x) => x.trim()).filter((x) => x) : null,
          critical_bypass: gBypass.checked },
      };
      try {
        const saved = await put<Preferences>("/api/v1/me/preferences", body);
        toast(t("settings.saved"), "success");
        replace(prefsBox, prefsForm(saved));
      } catch (error) {
        toast(t("common.error", { message: (error as ApiError).message }), "error", 10000);
      } finally {
        save.disabled = false;
      }
    });
    return form;
  }

  const test = h("button", { type: "button", text: t("settings.test") });
  test.addEventListener("click", async () => {
    try {
      await post("/api/v1/me/test-notification");
      toast(t("settings.testSent"), "success", 6000, "#/notifications");
    } catch (error) {
      toast(t("common.error", { message: (error as ApiError).message }), "error");
    }
  });
  const pushStatus = h("p", { class: "muted", role: "status" });
  const pushButton = h("button", { type: "button", id: "push-enable", text: t("settings.pushEnable") });
  pushButton.addEventListener("click", async () => {
    pushButton.disabled = true;
    try {
      const r = await enablePush();
      pushStatus.textContent = r === "enabled" ? t("settings.pushEnabled") : r === "denied" ? t("settings.pushDenied")
        : t("settings.pushUnsupported");
    } catch (error) {
      pushStatus.textContent = t("settings.pushFailed", { message: (error as Error).message });
    } finally {
      pushButton.disabled = false;
    }
  });
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) pushStatus.textContent = t("settings.pushUnsupported");

  const el = h("div", { class: "view view-settings" },
    h("header", { class: "view-header" }, h("h1", { text: t("settings.title") })),
    h("div", { class: "columns" },
      h("section", { class: "panel" }, h("h2", { text: t("settings.appearance") }),
        field("set-theme", t("settings.theme"), theme), field("set-lang", t("settings.language"), language)),
      h("section", { class: "panel" }, h("h2", { text: t("settings.account") }),
        h("p", null, ...userLine(ctx.me.user, ctx.me.role)),
        h("button", { type: "button", text: t("user.logout"), on: { click: hooks.logout } }))),
    h("section", { class: "panel" }, h("h2", { text: t("nav.notifications") }), prefsBox,
      h("div", { class: "actions" }, test)),
    h("section", { class: "panel" }, h("h2", { text: t("settings.push") }), pushButton, pushStatus));

  return {
    el,
    mounted() {
      void get<Preferences>("/api/v1/me/preferences").then((p) => {
        if (!destroyed) replace(prefsBox, prefsForm(p));
      }, (error: ApiError) => {
        if (!destroyed) replace(prefsBox, h("p", { class: "error", text: t("common.error", { message: error.message }) }));
      });
    },
    destroy() {
      destroyed = true;
    },
  };
}

// The always-visible connection status (state, attempt and countdown, RTT, messages/s, bytes/s received,
// the hub's measured compression ratio, or "not compressed" when this connection is not) and the banner
// that says when the data on screen is stale.

import type { StateDetail } from "openmanager-client";
import { h, setText } from "../dom";
import { bytes, closeReason, ms, num, time } from "../format";
import { t } from "../i18n";
import type { Live } from "../live";

export type BadgeState = "connected" | "connecting" | "reconnecting" | "offline";

export interface ConnectionView {
  badge: HTMLElement;
  banner: HTMLElement;
  refresh(): void;
  destroy(): void;
}

export function connectionStatus(live: Live, onSignedOut: () => void): ConnectionView {
  const client = live.client;
  const label = h("span", { class: "conn-label" });
  const detail = h("span", { class: "conn-detail" });
  const badge = h("div", { id: "conn", class: "conn", role: "status", aria: { live: "polite", label: t("conn.label") } },
    h("span", { class: "conn-dot", aria: { hidden: "true" } }), label, detail);
  const bannerText = h("span");
  const banner = h("div", { id: "stale-banner", class: "banner", role: "alert", hidden: true }, bannerText);
  let retryAt = 0;

  function badgeState(): BadgeState {
    if (!navigator.onLine) return "offline";
    switch (client.state) {
      case "open": return "connected";
      case "connecting": return "connecting";
      case "reconnecting": return "reconnecting";
      default: return "offline";
    }
  }

  function render(): void {
    const state = badgeState();
    badge.dataset.state = state;
    badge.dataset.attempt = String(client.attempt);
    if (state === "connected") {
      setText(label, t("conn.connected"));
      const parts = [
        t("conn.rtt", { rtt: client.rtt === null ? "–" : ms(Math.round(client.rtt)) }),
        t("conn.rate", { msgs: num(client.messagesPerSecond, 0), bytes: bytes(client.bytesPerSecond) }),
      ];
      // A browser cannot see the bytes on the wire: the figure is the hub's measured ratio (`system`
      // topic), shown only when this connection negotiated compression at all.
      const ratio = live.system?.compression_ratio;
      if (!/permessage-deflate/.test(client.extensions)) parts.push(t("conn.compressionOff"));
      else if (typeof ratio === "number") parts.push(ratio <= 1 ? t("conn.compressionNone") : t("conn.compression", { ratio: num(ratio, 1) }));
      setText(detail, parts.join(" · "));
    } else if (state === "reconnecting") {
      const left = Math.max(0, retryAt - performance.now()) / 1000;
      setText(label, left > 0
        ? t("conn.reconnecting", { attempt: client.attempt, next: left.toFixed(1) })
        : t("conn.reconnectingNow", { attempt: client.attempt }));
      setText(detail, closeReason(client.reason));
    } else if (state === "connecting") {
      setText(label, t("conn.connecting"));
      setText(detail, "");
    } else {
      setText(label, navigator.onLine ? (/4401/.test(client.reason ?? "") ? t("conn.signedOut") : t("conn.offline"))
        : t("conn.offlineNetwork"));
      setText(detail, client.state === "reconnecting" ? closeReason(client.reason) : "");
    }
    renderBanner();
  }

  function renderBanner(): void {
    const now = Date.now();
    let text = "";
    let kind = "";
    if (client.state !== "open" && live.lastMetricsAt) {
      text = t("stale.disconnected", { time: time(live.lastMetricsAt) });
      kind = "disconnected";
    } else if (client.state === "open" && live.lastMetricsAt) {
      const quiet = now - live.lastMetricsAt;
      if (quiet > Math.max(5000, 3 * live.metricsInterval)) {
        text = t("stale.quiet", { seconds: Math.round(quiet / 1000) });
        kind = "quiet";
      }
    }
    banner.hidden = !text;
    banner.dataset.kind = kind;
    setText(bannerText, text);
  }

  const offState = client.on("state", (d: StateDetail) => {
    if (d.state === "reconnecting") retryAt = performance.now() + (d.nextDelayMs ?? 0);
    if (d.state === "closed" && /4401/.test(d.reason ?? "")) onSignedOut();
    render();
  });
  const offStats = client.on("stats", render);
  const online = () => render();
  window.addEventListener("online", online);
  window.addEventListener("offline", online);
  // The countdown and the staleness check move with time, not with events.
  const timer = setInterval(() => {
    if (client.state === "reconnecting") render();
    else renderBanner();
  }, 250);
  render();

  return {
    badge,
    banner,
    refresh: render,
    destroy() {
      offState();
      offStats();
      window.removeEventListener("online", online);
      window.removeEventListener("offline", online);
      clearInterval(timer);
    },
  };
}

// The dashboard's service worker: shows Web Push notifications from the hub (the payload is the
// notification's JSON: id, title, body, severity, url) and opens the dashboard when one is clicked.
/// <reference lib="webworker" />

declare const self: ServiceWorkerGlobalScope;

interface PushPayload {
  id?: string;
  title?: string;
  body?: string;
  severity?: string;
  url?: string;
}

self.addEventListener("install", () => {
  void self.skipWaiting();
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", (event) => {
  let data: PushPayload = {};
  try {
    data = (event.data?.json() ?? {}) as PushPayload;
  } catch {
    data = { title: "OpenManager Vibe", body: event.data?.text() ?? "" };
  }
  const title = data.title ?? "OpenManager Vibe";
  event.waitUntil(self.registration.showNotification(title, {
    body: data.body ?? "",
    tag: data.id,
    data: { url: "/#/alerts" },
    requireInteraction: data.severity === "critical",
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data as { url?: string } | null)?.url ?? "/";
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    for (const w of windows) {
      if (new URL(w.url).origin === self.location.origin) {
        await w.focus();
        await w.navigate(url).catch(() => null);
        return;
      }
    }
    await self.clients.openWindow(url);
  })());
});

export {};

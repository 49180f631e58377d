// The dashboard's live state: one HubClient (the browser client of /static/openmanager.js) for every
// stream, plus what the REST API tells once (server metadata, unread count). Views read it and listen for
// changes; nothing here touches the DOM.

import { HubClient, type Subscription } from "openmanager-client";
import { get, setAnsweredHandler } from "./api";
import type {
  Alert, AlertEvent, FleetData, Me, MetricsData, Notification, Sample, ServerInfo, SystemData,
} from "./types";

/** CPU points kept per server for the card sparklines. */
export const SPARK_POINTS = 60;
/** System-topic samples kept for the hub panel's charts (one a second: 5 minutes). */
export const SYSTEM_POINTS = 300;
/** Fields of the fleet-wide metrics subscription (status always comes). */
export const FLEET_METRICS = ["cpu", "memory", "disk", "net_in", "net_out", "response_time"];

export interface ServerState {
  id: string;
  info: ServerInfo | null;
  sample: Sample;
  /** ring of the last SPARK_POINTS CPU values */
  spark: Float32Array;
  sparkLen: number;
  sparkPos: number;
  /** ms of the sample shown */
  ts: number;
}

type Channel = "metrics" | "fleet" | "alerts" | "alert-event" | "system" | "notification" | "unread" | "servers";
type Listener = (detail?: unknown) => void;

export class Live {
  readonly client: HubClient;
  readonly servers = new Map<string, ServerState>();
  fleet: FleetData | null = null;
  system: SystemData | null = null;
  readonly systemHistory = { ts: [] as number[], messages: [] as number[], bytes: [] as number[], fanout: [] as (number | null)[] };
  readonly alerts = new Map<string, Alert>();
  unread = 0;
  /** time (ms, Date.now) of the last metrics delivery, and how many there were */
  lastMetricsAt = 0;
  metricsEvents = 0;
  /** smoothed interval between metrics deliveries, ms */
  metricsInterval = 1000;
  private listeners = new Map<Channel, Set<Listener>>();
  private metaTimer: ReturnType<typeof setTimeout> | null = null;
  private started = false;

  constructor(readonly me: Me) {
    this.client = new HubClient();
    // The live connection backs off while the hub is away; a REST answer shows it is back.
    setAnsweredHandler(() => this.client.retrySoon());
  }

  on(channel: Channel, fn: Listener): () => void {
    let set = this.listeners.get(channel);
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  private emit(channel: Channel, detail?: unknown): void {
    const set = this.listeners.get(channel);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (error) {
        reportError(error);
      }
    }
  }

  /** Open the connection and every app-wide subscription. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const swallow = (p: Promise<unknown>) => p.catch(() => {}); // rejected only when the client ends closed
    swallow(this.client.subscribe<MetricsData>("metrics", {
      filter: { metrics: FLEET_METRICS },
      onSnapshot: (d) => this.onMetrics(d, true),
      onEvent: (d) => this.onMetrics(d, false),
    }));
    swallow(this.client.subscribe<FleetData>("fleet", {
      onSnapshot: (d) => this.onFleet(d),
      onEvent: (d) => this.onFleet(d),
    }));
    swallow(this.client.subscribe<{ alerts: Alert[] }>("alerts", {
      onSnapshot: (d) => {
        this.alerts.clear();
        for (const a of d.alerts) this.alerts.set(a.id, a);
        this.emit("alerts");
      },
      onEvent: (d) => this.onAlert(d as unknown as AlertEvent),
    }));
    swallow(this.client.subscribe<SystemData>("system", {
      onSnapshot: (d) => this.onSystem(d),
      onEvent: (d) => this.onSystem(d),
    }));
    swallow(this.client.subscribe<{ notification: Notification }>("notifications", {
      onEvent: (d) => {
        this.unread += 1;
        this.emit("notification", d.notification);
        this.emit("unread");
      },
    }));
    // After a reconnect the streams resume by themselves; what came over REST is read again.
    let welcomes = 0;
    this.client.on("welcome", () => {
      if (welcomes++ === 0) return;
      void this.loadServers();
      void this.refreshUnread();
    });
    void this.client.connect().catch(() => {});
    void this.loadServers();
    void this.refreshUnread();
  }

  async loadServers(): Promise<void> {
    try {
      const { servers } = await get<{ servers: ServerInfo[] }>("/api/v1/servers");
      for (const info of servers) {
        const s = this.state(info.id);
        s.info = info;
        if (!s.ts) {
          s.sample = { ...info.sample, status: info.status };
          s.ts = info.last_seen ?? 0;
        }
      }
      this.emit("servers");
    } catch {
      /* shown by the connection status; retried when an unknown server appears */
    }
  }

  async refreshUnread(): Promise<void> {
    try {
      const r = await get<{ unread: number }>("/api/v1/notifications?limit=1");
      this.unread = r.unread;
      this.emit("unread");
    } catch {
      /* notifications may be starting */
    }
  }

  setUnread(n: number): void {
    this.unread = n;
    this.emit("unread");
  }

  state(id: string): ServerState {
    let s = this.servers.get(id);
    if (!s) {
      s = { id, info: null, sample: {}, spark: new Float32Array(SPARK_POINTS), sparkLen: 0, sparkPos: 0, ts: 0 };
      this.servers.set(id, s);
    }
    return s;
  }

  private onMetrics(d: MetricsData, snapshot: boolean): void {
    const now = Date.now();
    if (this.lastMetricsAt && !snapshot) {
      const gap = now - this.lastMetricsAt;
      this.metricsInterval = this.metricsInterval * 0.8 + Math.min(gap, 60000) * 0.2;
    }
    this.lastMetricsAt = now;
    this.metricsEvents += 1;
    let unknown = false;
    for (const id in d.servers) {
      const sample = d.servers[id];
      const s = this.state(id);
      if (!s.info) unknown = true;
      s.sample = sample;
      s.ts = d.ts;
      if (sample.cpu !== undefined) {
        s.spark[s.sparkPos] = sample.cpu;
        s.sparkPos = (s.sparkPos + 1) % SPARK_POINTS;
        if (s.sparkLen < SPARK_POINTS) s.sparkLen += 1;
      }
    }
    if (unknown && !this.metaTimer) {
      this.metaTimer = setTimeout(() => {
        this.metaTimer = null;
        void this.loadServers();
      }, 1000);
    }
    this.emit("metrics", d);
  }

  private onFleet(d: FleetData): void {
    this.fleet = d;
    this.emit("fleet");
  }

  private onSystem(d: SystemData): void {
    this.system = d;
    const h = this.systemHistory;
    h.ts.push(d.ts / 1000);
    h.messages.push(d.messages_per_s);
    h.bytes.push(d.bytes_per_s);
    h.fanout.push(d.fanout_p99_ms);
    if (h.ts.length > SYSTEM_POINTS) {
      h.ts.shift();
      h.messages.shift();
      h.bytes.shift();
      h.fanout.shift();
    }
    this.emit("system");
  }

  private onAlert(e: AlertEvent): void {
    const a = e.alert;
    if (e.transition === "resolved" || a.state === "resolved") this.alerts.delete(a.id);
    else this.alerts.set(a.id, a);
    this.emit("alerts");
    this.emit("alert-event", e);
  }
}

/** Values of a server's CPU ring, oldest first. */
export function sparkValues(s: ServerState): number[] {
  const out: number[] = [];
  const start = (s.sparkPos - s.sparkLen + SPARK_POINTS) % SPARK_POINTS;
  for (let i = 0; i < s.sparkLen; i++) out.push(s.spark[(start + i) % SPARK_POINTS]);
  return out;
}

/**
 * A subscription that can be ended before the hub has confirmed it. Ending a confirmed one is
 * synchronous, so a new subscription of the same shape made right after it cannot be unsubscribed at
 * the hub by mistake.
 */
export class Held {
  private sub: Subscription | null = null;
  private ended = false;

  constructor(promise: Promise<Subscription>) {
    promise.then((s) => {
      this.sub = s;
      if (this.ended) void s.unsubscribe();
    }, () => {});
  }

  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.sub) void this.sub.unsubscribe();
  }
}

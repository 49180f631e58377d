// Wire shapes of the hub's REST API and topics (docs/protocol.md). Fields may be added by the hub.

export type Status = "healthy" | "warning" | "critical" | "offline" | "maintenance";
export type Severity = "info" | "warning" | "critical";
export type Role = "admin" | "operator" | "viewer";

export const STATUSES: Status[] = ["healthy", "warning", "critical", "offline", "maintenance"];
export const SEVERITIES: Severity[] = ["info", "warning", "critical"];
export const LEVELS = ["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"] as const;
export type Level = (typeof LEVELS)[number];

export interface Sample {
  cpu?: number;
  memory?: number;
  disk?: number;
  swap?: number;
  load1?: number;
  load5?: number;
  load15?: number;
  net_in?: number;
  net_out?: number;
  response_time?: number;
  error_rate?: number;
  connections?: number;
  processes?: number;
  uptime?: number;
  status?: Status;
}

export interface ServerInfo {
  id: string;
  hostname: string;
  role: string;
  environment: string;
  location: string;
  tags: Record<string, string>;
  source: string;
  status: Status;
  last_seen: number | null;
  sample: Sample;
  /** Labelled series of the latest sample by key (`disk:mount=/var`: docs/protocol.md "Labelled series"). */
  series?: Record<string, number>;
  series_dropped?: number;
  problem?: string;
}

export interface MetricsData {
  ts: number;
  servers: Record<string, Sample>;
}

export interface FleetData {
  ts: number;
  total: number;
  healthy: number;
  warning: number;
  critical: number;
  offline: number;
  maintenance: number;
  avg: { cpu: number | null; memory: number | null; disk: number | null };
}

export interface SystemData {
  ts: number;
  connections: { ws: number; sse: number };
  messages_per_s: number;
  bytes_per_s: number;
  compression_ratio: number | null;
  drops: number;
  conflations?: number;
  slow_consumer_closes: number;
  ingest_per_s: number;
  fanout_p99_ms: number | null;
}

export interface LogRecord {
  ts: number;
  server: string;
  level: string;
  service: string;
  message: string;
  [key: string]: unknown;
}

export interface Alert {
  id: string;
  rule: { id: string; name: string };
  server?: string;
  servers?: string[];
  severity: Severity;
  state: string;
  value: number | null;
  values?: Record<string, number>;
  started_at: number | null;
  fired_at: number | null;
  resolved_at: number | null;
  acknowledged: { by: string; at: number; comment: string } | null;
  silenced_by?: string | null;
  flapping?: boolean;
  /** The labelled series behind it (`disk{mount="/var"}`), and an `each` rule's alert's own labels. */
  series?: string[];
  labels?: Record<string, string>;
}

export interface AlertEvent {
  transition: string;
  ts: number;
  notify: boolean;
  reason?: string;
  alert: Alert;
}

export interface ChannelDelivery {
  status: string;
  attempts?: number;
  detail?: string;
  reason?: string;
}

export interface Notification {
  id: string;
  kind?: string;
  alert: string | null;
  title: string;
  body: string;
  severity: Severity;
  created_at: number;
  read_at: number | null;
  channels: Record<string, ChannelDelivery>;
}

export interface Rule {
  id?: string;
  name: string;
  condition: string;
  clear?: string | null;
  for?: string;
  cooldown?: string;
  repeat?: string | null;
  severity: Severity;
  action: string;
  scope?: string | null;
  fleet?: boolean;
  enabled?: boolean;
  description?: string | null;
  family?: string;
  group_by?: string[];
  escalation?: { steps: { after: string; users: string[]; channels?: string[] }[]; repeat?: string } | null;
  /** One alert per labelled series: mount, interface, device, core or sensor. */
  each?: string | null;
  created_at?: number;
  updated_at?: number;
  created_by?: string;
}

export interface Episode {
  labels?: Record<string, string>;
  server: string;
  fired_at: number | null;
  resolved_at: number | null;
  started_at: number | null;
  value: number | null;
  notified: boolean;
}

export interface Backtest {
  firings: number;
  notifications: number;
  servers: number;
  step_ms: number;
  evaluations: number;
  episodes: Episode[];
  truncated: boolean;
  history?: { enough: boolean; reason?: string };
}

export interface ChannelPrefs {
  enabled: boolean;
  min_severity: Severity;
  to?: string | string[];
  format?: string;
  url_set?: boolean;
  secret_set?: boolean;
  urls_set?: boolean;
  services?: string[];
}

export interface Preferences {
  channels: Record<string, ChannelPrefs>;
  servers: string[];
  tags: Record<string, string>;
  muted_rules: string[];
  quiet_hours: { start: string; end: string; timezone: string; critical_bypass: boolean } | null;
  digest: { mode: "off" | "hourly" | "daily"; at: string; timezone: string };
  grouping?: { group_by: string[] | null; critical_bypass: boolean };
}

export interface Me {
  user: string;
  role: Role;
}

export const SHAPES: Record<Status, string> = {
  healthy: "●",
  warning: "▲",
  critical: "■",
  offline: "○",
  maintenance: "◆",
};

export const SEVERITY_SHAPES: Record<Severity, string> = { info: "●", warning: "▲", critical: "■" };

export function canOperate(role: Role | undefined): boolean {
  return role === "admin" || role === "operator";
}

/** One open client session, as `GET /api/v1/connections` lists it (admin only). */
export interface ConnectionInfo {
  id: string;
  user: string;
  transport: string;
  remote: string;
  since: number;
  subscriptions: { sub: string; topic: string }[];
  messages_sent: number;
  bytes_sent: number;
  queue_depth: number;
  queue_bytes: number;
  conflations: number;
  rtt_ms: number | null;
  /** uncompressed frame bytes ÷ bytes written; null when the connection is not compressed (older hubs: absent) */
  compression_ratio?: number | null;
}

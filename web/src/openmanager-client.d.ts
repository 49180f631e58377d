// Types of the browser client `/static/openmanager.js` (docs/protocol.md, "Browser client"). The
// dashboard imports it as "openmanager-client"; the build rewrites that to the served module, which is
// kept as it is (no build step of its own) and shared with anyone else's page.
declare module "openmanager-client" {
  export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

  export interface StateDetail {
    state: ConnectionState;
    attempt: number;
    nextDelayMs: number | null;
    reason: string | null;
  }

  export interface StatsDetail {
    rtt: number | null;
    messagesPerSecond: number;
    bytesPerSecond: number;
  }

  export interface DeliveryMeta {
    sub: string;
    topic: string;
    cursor: string;
  }

  export type DataCallback<T> = (data: T, meta: DeliveryMeta) => void;

  export interface SubscribeOptions<T> {
    filter?: Record<string, unknown>;
    since?: string;
    /** `metrics` only: "delta" (the default unless the client has `delta: false`) or "json". */
    encoding?: "json" | "delta";
    onEvent?: DataCallback<T>;
    onSnapshot?: DataCallback<T>;
    onReset?: (info: DeliveryMeta) => void;
    onError?: (error: HubError) => void;
  }

  export interface HubClientOptions {
    url?: string;
    token?: string | null;
    backoffMin?: number;
    backoffMax?: number;
    pingInterval?: number;
    pingTimeout?: number;
    openTimeout?: number;
    /** after a close with 1012 (the hub is restarting): quick retries, uniform in [min, max] ms, for `restartWindow` ms */
    restartDelayMin?: number;
    restartDelayMax?: number;
    restartWindow?: number;
    random?: () => number;
    /** `metrics` subscriptions use the hub's delta encoding (default true); data is delivered in full either way. */
    delta?: boolean;
  }

  export class HubError extends Error {
    readonly code: string;
    readonly detail: Record<string, unknown>;
  }

  export class Subscription extends EventTarget {
    readonly client: HubClient;
    readonly topic: string;
    readonly filter: Record<string, unknown> | undefined;
    readonly encoding: "json" | "delta";
    readonly sub: string | null;
    readonly status: "pending" | "active" | "closed";
    readonly cursor: string | null;
    unsubscribe(): Promise<void>;
  }

  export class HubClient extends EventTarget {
    constructor(options?: HubClientOptions);
    readonly url: string;
    readonly delta: boolean;
    readonly state: ConnectionState;
    readonly attempt: number;
    readonly nextDelayMs: number | null;
    readonly reason: string | null;
    readonly rtt: number | null;
    readonly messagesPerSecond: number;
    readonly bytesPerSecond: number;
    readonly messagesReceived: number;
    readonly bytesReceived: number;
    readonly duplicatesDropped: number;
    readonly welcome: Record<string, unknown> | null;
    /** the WebSocket extensions of the open connection ("permessage-deflate; …"), "" when none or not open */
    readonly extensions: string;
    readonly subscriptions: Subscription[];
    on(type: "state", fn: (detail: StateDetail) => void): () => void;
    on(type: "stats", fn: (detail: StatsDetail) => void): () => void;
    on(type: "welcome" | "message", fn: (detail: Record<string, unknown>) => void): () => void;
    on(type: "error", fn: (detail: HubError) => void): () => void;
    connect(): Promise<void>;
    close(): void;
    /** The hub answers again (e.g. a REST call succeeded): a backed-off retry comes within about a second. */
    retrySoon(): void;
    subscribe<T = unknown>(topic: string, options?: SubscribeOptions<T>): Promise<Subscription>;
    dropForTest(reason?: string): void;
  }
}

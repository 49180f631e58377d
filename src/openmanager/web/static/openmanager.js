// OpenManager Vibe browser client: an ES module with no dependencies and no build step.
//
//   import { HubClient } from "/static/openmanager.js";
//   const client = new HubClient();              // same origin, session cookie
//   client.addEventListener("state", (e) => console.log(e.detail));
//   client.connect();
//   const sub = await client.subscribe("metrics", { filter: { where: "cpu > 90" }, onEvent: (data) => ... });
//
// Contract (docs/protocol.md, "Browser client"):
// - `state` is "connecting" | "open" | "reconnecting" | "closed"; "open" means the hub's `welcome`
//   arrived (a bad token is accepted and then closed with 4401, so the socket's own open means nothing).
// - An unexpected close reconnects after a delay drawn with full jitter from
//   [0, min(backoffMax, backoffMin * 2^(attempt-1))]. A close with 1012 (the hub is restarting) is
//   followed by quick retries instead, each uniform in [restartDelayMin, restartDelayMax] (250-1250 ms),
//   for `restartWindow` ms (60 s) after that close; later tries use the backoff above. The page's
//   `online` event (the network is back) brings a retry that would wait longer forward the same way, and
//   so does `retrySoon()`, for the page to call when it sees the hub answer (a REST call succeeded).
//   4401 (bad token) and 4403 (origin refused) end in "closed" with no retry: a retry cannot fix them.
//   `close()` ends in "closed" too.
// - After a reconnect every subscription is sent again with `since` = the last cursor it delivered, so
//   the hub replays what was missed (`recovered: true`) or sends a fresh snapshot (`recovered: false`,
//   reported to `onReset`). Events whose seq is at or below the last delivered one in the same epoch are
//   dropped, so callbacks never see an event twice.
// - `metrics` subscriptions use the hub's `"encoding": "delta"` unless `encoding: "json"` (per
//   subscription) or `delta: false` (per client) says otherwise; no other topic sends an encoding. The
//   client keeps each delta shape's full state (server id -> sample) and delivers what the json encoding
//   would: a snapshot `{ts, servers}` (which replaces the state, also mid-stream after the client fell
//   behind) and events `{ts, servers}` with the full (quantized) sample of every server listed. A delta
//   resume always answers `recovered: false` and a fresh snapshot; in the same hub run (same cursor
//   epoch) that is the normal path, not reported to `onReset`.
// - Subscriptions of one shape (topic + filter + encoding) on one client share the hub's stream: a second
//   one joins at the live position and gets no snapshot of its own.
// - Callbacks that throw are reported (`reportError`) and do not stop delivery to the others.

export const SUBPROTOCOL = "openmanager.v1.json";
export const CLOSE_SLOW_CONSUMER = 4008;
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_FORBIDDEN_ORIGIN = 4403;
export const CLOSE_RESTARTING = 1012;
/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE_CODES = new Set([CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN_ORIGIN]);
const CLOSE_REASONS = {
  1000: "normal closure",
  1001: "going away",
  1006: "connection lost",
  1009: "message too big",
  1011: "heartbeat timeout or server error",
  1012: "service restart",
  4008: "slow consumer",
  4401: "unauthorized",
  4403: "origin not allowed",
};

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "closed"} ConnectionState
 * @typedef {{state: ConnectionState, attempt: number, nextDelayMs: number | null, reason: string | null}} StateDetail
 * @typedef {{epoch: string, seq: number}} Cursor
 * @typedef {{sub: string, topic: string, cursor: string}} DeliveryMeta
 * @typedef {(data: any, meta: DeliveryMeta) => void} DataCallback
 * @typedef {{
 *   filter?: Record<string, any>,
 *   since?: string,
 *   encoding?: "json" | "delta",
 *   onEvent?: DataCallback,
 *   onSnapshot?: DataCallback,
 *   onReset?: (info: {sub: string, topic: string, cursor: string}) => void,
 *   onError?: (error: HubError) => void,
 * }} SubscribeOptions
 * @typedef {{
 *   url?: string,
 *   token?: string | null,
 *   backoffMin?: number,
 *   backoffMax?: number,
 *   pingInterval?: number,
 *   pingTimeout?: number,
 *   openTimeout?: number,
 *   restartDelayMin?: number,
 *   restartDelayMax?: number,
 *   restartWindow?: number,
 *   random?: () => number,
 *   delta?: boolean,
 * }} HubClientOptions
 */

/**
 * Parse a cursor `<epoch>-<seq>`; null when malformed.
 * @param {unknown} text
 * @returns {Cursor | null}
 */
export function parseCursor(text) {
  if (typeof text !== "string") return null;
  const m = /^([0-9a-z]{1,32})-([0-9]{1,19})$/.exec(text);
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
}

/** Bytes of a string in UTF-8 (what the hub sent), without allocating. */
function utf8Length(/** @type {string} */ s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff) { n += 2; i++; } // surrogate pair: 4 bytes for 2 units
    else n += 2;
  }
  return n;
}

function report(/** @type {unknown} */ error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else console.error(error);
}

function defaultUrl() {
  if (typeof location === "undefined") throw new TypeError("HubClient: `url` is required outside a page");
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

/** An `error` reply of the hub (`code` is its snake_case code), or a local failure (`closed`). */
export class HubError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {Record<string, any>} [detail] the whole `error` message, when the hub sent one
   */
  constructor(code, message, detail = {}) {
    super(`${code}: ${message}`);
    this.name = "HubError";
    this.code = code;
    this.detail = detail;
  }
}

/**
 * One subscription of a HubClient. Dispatches `snapshot`, `event` (detail: {data, sub, topic, cursor}),
 * `reset` and `error` besides calling the callbacks given to `subscribe`.
 */
export class Subscription extends EventTarget {
  /**
   * @param {HubClient} client
   * @param {string} topic
   * @param {SubscribeOptions} options
   */
  constructor(client, topic, options) {
    super();
    this.client = client;
    this.topic = topic;
    /** @type {Record<string, any> | undefined} */
    this.filter = options.filter;
    /** `"delta"` (the default for `metrics` unless the client has `delta: false`) or `"json"` */
    this.encoding = options.encoding ?? (topic === "metrics" && client.delta ? "delta" : "json");
    /** @type {string | null} the hub's id for this subscription's shape */
    this.sub = null;
    /** @type {"pending" | "active" | "closed"} */
    this.status = "pending";
    /** @type {string | undefined} */
    this._since = options.since;
    this._options = options;
    /** @type {((s: Subscription) => void) | null} */
    this._resolve = null;
    /** @type {((e: HubError) => void) | null} */
    this._reject = null;
  }

  /** @returns {string | null} the last cursor delivered to this subscription's shape */
  get cursor() {
    const shape = this.sub ? this.client._shapes.get(this.sub) : undefined;
    return shape ? shape.cursor : null;
  }

  /** Stop receiving; tells the hub once no other subscription of this client shares the shape. */
  unsubscribe() {
    return this.client._unsubscribe(this);
  }

  /**
   * @param {"snapshot" | "event"} kind
   * @param {any} data
   * @param {DeliveryMeta} meta
   */
  _deliver(kind, data, meta) {
    const fn = kind === "event" ? this._options.onEvent : this._options.onSnapshot;
    try {
      if (fn) fn(data, meta);
      this.dispatchEvent(new CustomEvent(kind, { detail: { data, ...meta } }));
    } catch (error) {
      report(error);
    }
  }

  /** @param {{sub: string, topic: string, cursor: string}} info */
  _reset(info) {
    try {
      if (this._options.onReset) this._options.onReset(info);
      this.dispatchEvent(new CustomEvent("reset", { detail: info }));
    } catch (error) {
      report(error);
    }
  }

  /** @param {HubError} error */
  _fail(error) {
    this.status = "closed";
    if (this._reject) {
      this._reject(error);
      this._resolve = this._reject = null;
      return;
    }
    try {
      if (this._options.onError) this._options.onError(error);
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
    } catch (e) {
      report(e);
    }
  }
}

/** The hub's stream for one shape, shared by the client's subscriptions of that shape. */
class Shape {
  /**
   * @param {string} sub
   * @param {string} topic
   * @param {Record<string, any> | undefined} filter
   * @param {string} encoding
   * @param {string} cursor
   */
  constructor(sub, topic, filter, encoding, cursor) {
    this.sub = sub;
    this.topic = topic;
    this.filter = filter;
    this.encoding = encoding;
    /** @type {Map<string, Record<string, any>> | null} a delta shape's full state: server id -> sample */
    this.state = encoding === "delta" ? new Map() : null;
    /** @type {string} last delivered cursor (or the position the subscription started from) */
    this.cursor = cursor;
    this.last = parseCursor(cursor);
    /** @type {Set<Subscription>} */
    this.members = new Set();
  }

  /** Advance to `cursor`; false when it is at or before the last delivered one (a duplicate). */
  advance(/** @type {string} */ cursor) {
    const c = parseCursor(cursor);
    if (c && this.last && c.epoch === this.last.epoch && c.seq <= this.last.seq) return false;
    this.cursor = cursor;
    this.last = c;
    return true;
  }

  /**
   * The data a json subscription would get, from a delta message's data: a snapshot replaces the state;
   * an event's changed fields are folded in (`null` removes a field) and every server it lists is
   * delivered in full. Delivered samples are copies: a callback that changes one cannot corrupt the state.
   * @param {"snapshot" | "event"} kind
   * @param {Record<string, any>} data
   */
  expand(kind, data) {
    const state = /** @type {Map<string, Record<string, any>>} */ (this.state);
    /** @type {Record<string, Record<string, any>>} */
    const servers = data.servers ?? {};
    if (kind === "snapshot") {
      state.clear();
      for (const [id, sample] of Object.entries(servers)) state.set(id, { ...sample });
      return data;
    }
    /** @type {[string, Record<string, any>][]} */
    const full = [];
    for (const [id, fields] of Object.entries(servers)) {
      let sample = state.get(id);
      if (!sample) state.set(id, (sample = {}));
      for (const [k, v] of Object.entries(fields ?? {})) {
        if (v === null) delete sample[k];
        else sample[k] = v;
      }
      full.push([id, { ...sample }]);
    }
    return { ...data, servers: Object.fromEntries(full) };
  }
}

/** Whether two cursors belong to the same run (epoch) of the hub. */
function sameEpoch(/** @type {string | null | undefined} */ a, /** @type {string | null | undefined} */ b) {
  const x = parseCursor(a), y = parseCursor(b);
  return x !== null && y !== null && x.epoch === y.epoch;
}

/**
 * A resilient connection to the hub's `/ws`.
 *
 * Events (all CustomEvent, also reachable with `on(type, fn)` which passes `detail`):
 * `state` ({state, attempt, nextDelayMs, reason}), `welcome` (the hub's welcome), `stats`
 * ({rtt, messagesPerSecond, bytesPerSecond}, once a second while connected), `error` (a HubError the
 * hub sent that answers no pending request), `message` (every decoded message, for diagnostics).
 */
export class HubClient extends EventTarget {
  /** @param {HubClientOptions} [options] */
  constructor({
    url = undefined,
    token = null,
    backoffMin = 500,
    backoffMax = 20000,
    pingInterval = 5000,
    pingTimeout = 15000,
    openTimeout = 10000,
    restartDelayMin = 250,
    restartDelayMax = 1250,
    restartWindow = 60000,
    random = Math.random,
    delta = true,
  } = {}) {
    super();
    let target = url ?? defaultUrl();
    if (token) target += `${target.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    this.url = target;
    this.backoffMin = backoffMin;
    this.backoffMax = Math.max(backoffMax, backoffMin);
    this.pingInterval = pingInterval;
    this.pingTimeout = pingTimeout;
    this.openTimeout = openTimeout;
    this.restartDelayMin = restartDelayMin;
    this.restartDelayMax = Math.max(restartDelayMax, restartDelayMin);
    this.restartWindow = restartWindow;
    /** @type {number | null} when (performance.now()) the hub closed with 1012, while the quick retries run */
    this._restartingSince = null;
    /** source of the jitter, in [0, 1); a test can make the delays predictable */
    this._random = random;
    /** `metrics` subscriptions use the delta encoding unless one asks for `encoding: "json"` */
    this.delta = delta;

    /** @type {ConnectionState} */
    this.state = "closed";
    this.attempt = 0;
    /** @type {number | null} */
    this.nextDelayMs = null;
    /** @type {string | null} why the last connection ended */
    this.reason = null;
    /** @type {number | null} round trip of the last ping/pong, ms */
    this.rtt = null;
    this.messagesPerSecond = 0;
    this.bytesPerSecond = 0;
    this.messagesReceived = 0;
    this.bytesReceived = 0;
    /** events dropped because their cursor was already delivered */
    this.duplicatesDropped = 0;
    /** @type {Record<string, any> | null} */
    this.welcome = null;
    /** the WebSocket extensions the hub accepted for the open connection ("permessage-deflate; ..."), or "" */
    this.extensions = "";

    /** @type {WebSocket | null} */
    this._ws = null;
    /** @type {Map<string, Shape>} */
    this._shapes = new Map();
    /** @type {Set<Subscription>} subscriptions not yet confirmed by the hub */
    this._pending = new Set();
    /** @type {Map<string, {kind: string, target?: any, sentAt?: number}>} requests of the current socket */
    this._requests = new Map();
    this._nextId = 1;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._retryTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._openTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._pingTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this._statsTimer = null;
    this._lastMessageAt = 0;
    this._window = { messages: 0, bytes: 0, since: 0 };
    /** @type {{promise: Promise<void>, resolve: () => void, reject: (e: Error) => void} | null} */
    this._opened = null;
    /** the page's `online` listener while connecting (see `_onOnline`) */
    this._onlineListener = () => this._onOnline();
  }

  /**
   * `addEventListener` that hands the listener the event's detail; returns a function that removes it.
   * @param {string} type
   * @param {(detail: any) => void} fn
   */
  on(type, fn) {
    const listener = (/** @type {Event} */ e) => fn(/** @type {CustomEvent} */ (e).detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  /**
   * Start connecting (and keep reconnecting). Resolves when the hub's welcome first arrives; rejects
   * with a HubError if the client ends in "closed" before that (4401, 4403, or `close()`).
   * @returns {Promise<void>}
   */
  connect() {
    if (this._opened && this.state !== "closed") return this._opened.promise;
    /** @type {any} */
    const opened = {};
    opened.promise = new Promise((resolve, reject) => Object.assign(opened, { resolve, reject }));
    opened.promise.catch(() => {}); // a caller that does not await must not get an unhandled rejection
    this._opened = opened;
    this.attempt = 0;
    this.reason = null;
    this._setState("connecting", null);
    this._statsTimer = setInterval(() => this._tickStats(), 1000);
    if (typeof window !== "undefined") window.addEventListener("online", this._onlineListener);
    this._window = { messages: 0, bytes: 0, since: performance.now() };
    this._open();
    return opened.promise;
  }

  /** Close for good: no reconnect; pending subscribe promises reject with code `closed`. */
  close() {
    if (this.state === "closed") return;
    this._shutdown("closed by client", true);
  }

  /**
   * Subscribe to a topic. Resolves with the Subscription once the hub confirms it; rejects with a
   * HubError whose `code` is the hub's error code (`invalid_filter`, `unknown_topic`, ...), or
   * `closed` when the client closes first. May be called before `connect()` or while reconnecting.
   * @param {string} topic
   * @param {SubscribeOptions} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe(topic, options = {}) {
    const s = new Subscription(this, topic, options);
    /** @type {Promise<Subscription>} */
    const promise = new Promise((resolve, reject) => {
      s._resolve = resolve;
      s._reject = reject;
    });
    if (this.state === "closed" && this._opened) {
      s._fail(new HubError("closed", `client is closed (${this.reason})`));
      return promise;
    }
    this._pending.add(s);
    if (this.state === "open") this._sendSubscribe(s);
    return promise;
  }

  /** All subscriptions, confirmed or pending. */
  get subscriptions() {
    const all = [...this._pending];
    for (const shape of this._shapes.values()) all.push(...shape.members);
    return all;
  }

  /**
   * Test hook: close the current socket as a network drop would; the client reconnects and resumes.
   * @param {string} [reason]
   */
  dropForTest(reason = "dropped for test") {
    if (this._ws) this._ws.close(4000, reason);
  }

  // -- internals --------------------------------------------------------------------------------

  /**
   * @param {ConnectionState} state
   * @param {string | null} reason
   */
  _setState(state, reason) {
    this.state = state;
    if (reason !== null) this.reason = reason;
    /** @type {StateDetail} */
    const detail = { state, attempt: this.attempt, nextDelayMs: this.nextDelayMs, reason };
    this.dispatchEvent(new CustomEvent("state", { detail }));
  }

  _open() {
    this._retryTimer = null;
    let ws;
    try {
      ws = new WebSocket(this.url, [SUBPROTOCOL]);
    } catch (error) {
      // A malformed URL: retrying cannot help.
      this._shutdown(`cannot open ${this.url}: ${error}`);
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._requests = new Map();
    this._openTimer = setTimeout(() => {
      if (this._ws === ws) this._lost(ws, `no welcome within ${this.openTimeout} ms`);
    }, this.openTimeout);
    ws.onmessage = (ev) => this._onFrame(ws, ev.data);
    ws.onclose = (ev) => {
      const known = /** @type {Record<number, string>} */ (CLOSE_REASONS)[ev.code];
      const why = ev.reason || known || "";
      this._onClose(ws, ev.code, why ? `${ev.code} ${why}` : String(ev.code));
    };
  }

  /**
   * @param {WebSocket} ws
   * @param {string | ArrayBuffer} raw
   */
  _onFrame(ws, raw) {
    if (ws !== this._ws) return;
    const size = typeof raw === "string" ? utf8Length(raw) : raw.byteLength;
    this.messagesReceived += 1;
    this.bytesReceived += size;
    this._window.messages += 1;
    this._window.bytes += size;
    this._lastMessageAt = performance.now();
    if (typeof raw !== "string") return; // this client speaks the JSON subprotocol only
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (error) {
      report(new HubError("invalid_json", `hub sent a frame that is not JSON: ${error}`));
      return;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    switch (msg.type) {
      case "welcome": return this._onWelcome(msg, ws);
      case "subscribed": return this._onSubscribed(msg);
      case "snapshot":
      case "event": return this._onData(msg);
      case "unsubscribed": this._requests.delete(String(msg.id)); return;
      case "pong": return this._onPong(msg);
      case "error": return this._onError(msg);
      default: return; // types added by later versions
    }
  }

  /**
   * @param {Record<string, any>} msg
   * @param {WebSocket} ws
   */
  _onWelcome(msg, ws) {
    if (this._openTimer) clearTimeout(this._openTimer);
    this._openTimer = null;
    this.welcome = msg;
    this.extensions = ws.extensions;
    this.attempt = 0;
    this.nextDelayMs = null;
    this._restartingSince = null;
    // Restore every confirmed shape from its last cursor, then send what is still pending.
    for (const shape of this._shapes.values()) {
      this._send({ type: "subscribe", id: this._request("resubscribe", shape), topic: shape.topic,
        ...(shape.filter !== undefined ? { filter: shape.filter } : {}),
        ...(shape.encoding !== "json" ? { encoding: shape.encoding } : {}), since: shape.cursor });
    }
    for (const s of this._pending) this._sendSubscribe(s);
    this._pingTimer = setInterval(() => this._ping(), this.pingInterval);
    this._ping();
    this.dispatchEvent(new CustomEvent("welcome", { detail: msg }));
    this._setState("open", null);
    if (this._opened) this._opened.resolve();
  }

  /** @param {Subscription} s */
  _sendSubscribe(s) {
    /** @type {Record<string, any>} */
    const msg = { type: "subscribe", id: this._request("subscribe", s), topic: s.topic };
    if (s.filter !== undefined) msg.filter = s.filter;
    if (s.encoding !== "json") msg.encoding = s.encoding;
    if (s._since !== undefined) msg.since = s._since;
    this._send(msg);
  }

  /** @param {Record<string, any>} msg */
  _onSubscribed(msg) {
    const req = this._requests.get(String(msg.id));
    if (!req) return;
    this._requests.delete(String(msg.id));
    const info = { sub: msg.sub, topic: msg.topic, cursor: msg.cursor };
    if (req.kind === "resubscribe") {
      /** @type {Shape} */
      const shape = req.target;
      if (this._shapes.get(shape.sub) !== shape) return; // unsubscribed meanwhile
      if (shape.sub !== msg.sub) { // a hub of another version may name the shape differently
        this._shapes.delete(shape.sub);
        shape.sub = msg.sub;
        this._shapes.set(shape.sub, shape);
        for (const s of shape.members) s.sub = msg.sub;
      }
      if (msg.recovered !== true) {
        // Events were missed for good (history gone or a restarted hub): start again from here. A delta
        // shape is never replayed: in the same run its fresh snapshot replaces the state, no loss.
        const lost = !(shape.state && sameEpoch(shape.cursor, msg.cursor));
        shape.cursor = msg.cursor;
        shape.last = parseCursor(msg.cursor);
        if (lost) for (const s of shape.members) s._reset(info);
      }
      return;
    }
    /** @type {Subscription} */
    const s = req.target;
    if (!this._pending.has(s)) return; // unsubscribed while pending
    this._pending.delete(s);
    let shape = this._shapes.get(msg.sub);
    if (!shape) {
      // Recovered from a caller's `since`: the replay follows, so start from that cursor, not the head.
      const from = msg.recovered === true && s._since !== undefined ? s._since : msg.cursor;
      shape = new Shape(msg.sub, s.topic, s.filter, s.encoding, from);
      this._shapes.set(msg.sub, shape);
      const lost = !(shape.state && sameEpoch(s._since, msg.cursor));
      if (s._since !== undefined && msg.recovered === false && lost) s._reset(info);
    }
    shape.members.add(s);
    s.sub = msg.sub;
    s.status = "active";
    const resolve = s._resolve;
    s._resolve = s._reject = null;
    if (resolve) resolve(s);
  }

  /** @param {Record<string, any>} msg */
  _onData(msg) {
    const shape = this._shapes.get(msg.sub);
    if (!shape) return; // unsubscribed, or not ours
    if (msg.type === "event") {
      if (!shape.advance(msg.cursor)) {
        this.duplicatesDropped += 1;
        return;
      }
    } else {
      shape.cursor = msg.cursor;
      shape.last = parseCursor(msg.cursor);
    }
    const meta = { sub: msg.sub, topic: shape.topic, cursor: msg.cursor };
    const data = shape.state ? shape.expand(msg.type, msg.data ?? {}) : msg.data;
    for (const s of [...shape.members]) s._deliver(msg.type, data, meta);
  }

  /** @param {Record<string, any>} msg */
  _onPong(msg) {
    const req = this._requests.get(String(msg.id));
    if (!req) return;
    this._requests.delete(String(msg.id));
    if (req.sentAt !== undefined) this.rtt = Math.round((performance.now() - req.sentAt) * 10) / 10;
  }

  /** @param {Record<string, any>} msg */
  _onError(msg) {
    const error = new HubError(String(msg.code), String(msg.message ?? ""), msg);
    const req = msg.id !== undefined ? this._requests.get(String(msg.id)) : undefined;
    if (req) this._requests.delete(String(msg.id));
    if (req && req.kind === "subscribe") {
      this._pending.delete(req.target);
      req.target._fail(error);
    } else if (req && req.kind === "resubscribe") {
      /** @type {Shape} */
      const shape = req.target;
      if (this._shapes.get(shape.sub) === shape) this._shapes.delete(shape.sub);
      for (const s of shape.members) s._fail(error);
    } else {
      this.dispatchEvent(new CustomEvent("error", { detail: error }));
    }
  }

  /** @param {Subscription} s */
  async _unsubscribe(s) {
    if (s.status === "closed") return;
    s.status = "closed";
    if (this._pending.delete(s)) {
      s._reject?.(new HubError("unsubscribed", "unsubscribed before the hub confirmed"));
      s._resolve = s._reject = null;
      return;
    }
    const shape = s.sub ? this._shapes.get(s.sub) : undefined;
    if (!shape || !shape.members.delete(s) || shape.members.size > 0) return;
    this._shapes.delete(shape.sub);
    if (this.state === "open") {
      this._send({ type: "unsubscribe", id: this._request("unsubscribe", shape), sub: shape.sub });
    }
  }

  _ping() {
    if (!this.welcome) return;
    const outstanding = [...this._requests.values()].some((r) => r.kind === "ping");
    if (outstanding && this.pingTimeout > 0 && performance.now() - this._lastMessageAt > this.pingTimeout) {
      if (this._ws) this._lost(this._ws, `no message for ${this.pingTimeout} ms`);
      return;
    }
    for (const [id, r] of this._requests) if (r.kind === "ping") this._requests.delete(id);
    const id = this._request("ping", null);
    const req = this._requests.get(id);
    if (req) req.sentAt = performance.now();
    this._send({ type: "ping", id });
  }

  _tickStats() {
    const now = performance.now();
    const seconds = (now - this._window.since) / 1000;
    if (seconds <= 0) return;
    this.messagesPerSecond = Math.round(this._window.messages / seconds);
    this.bytesPerSecond = Math.round(this._window.bytes / seconds);
    this._window = { messages: 0, bytes: 0, since: now };
    const detail = { rtt: this.rtt, messagesPerSecond: this.messagesPerSecond, bytesPerSecond: this.bytesPerSecond };
    this.dispatchEvent(new CustomEvent("stats", { detail }));
  }

  /**
   * @param {string} kind
   * @param {any} target
   * @returns {string} the request id
   */
  _request(kind, target) {
    const id = String(this._nextId++);
    this._requests.set(id, { kind, target });
    return id;
  }

  /** @param {Record<string, any>} msg */
  _send(msg) {
    if (this._ws && this._ws.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(msg));
  }

  /**
   * Give up on a socket that still looks open (no welcome, no traffic) and reconnect.
   * @param {WebSocket} ws
   * @param {string} reason
   */
  _lost(ws, reason) {
    ws.onclose = null;
    ws.onmessage = null;
    try { ws.close(4000, reason.slice(0, 100)); } catch { /* already closing */ }
    this._onClose(ws, 4000, reason);
  }

  /**
   * @param {WebSocket} ws
   * @param {number} code
   * @param {string} reason
   */
  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._stopConnectionTimers();
    this.welcome = null;
    this.extensions = "";
    if (this.state === "closed") return;
    if (FATAL_CLOSE_CODES.has(code)) {
      this._shutdown(`closed by hub: ${reason}`);
      return;
    }
    this.attempt += 1;
    const now = performance.now();
    if (code === CLOSE_RESTARTING) this._restartingSince ??= now;
    let delay;
    if (this._restartingSince !== null && now - this._restartingSince < this.restartWindow) {
      // The hub said it is restarting: it is back in seconds. Try again soon, spread over a second so
      // that every client of the hub does not come back at once.
      delay = Math.round(this.restartDelayMin + this._random() * (this.restartDelayMax - this.restartDelayMin));
    } else {
      this._restartingSince = null;
      const ceiling = Math.min(this.backoffMax, this.backoffMin * 2 ** Math.min(this.attempt - 1, 30));
      delay = Math.round(this._random() * ceiling); // full jitter
    }
    this.nextDelayMs = delay;
    this._setState("reconnecting", reason);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  /** The network is back (the page's `online` event): see `retrySoon`. */
  _onOnline() {
    this.retrySoon();
  }

  /** The hub is answering again (the network is back, or the page got an answer over HTTP): a retry
   * waiting out its backoff comes within about a second instead (the same jittered delay as after a 1012).
   * Does nothing unless the client is reconnecting, or when its retry is that soon already. */
  retrySoon() {
    if (this.state !== "reconnecting" || !this._retryTimer) return;
    const delay = Math.round(this.restartDelayMin + this._random() * (this.restartDelayMax - this.restartDelayMin));
    if (this.nextDelayMs !== null && delay >= this.nextDelayMs) return;
    clearTimeout(this._retryTimer);
    this.nextDelayMs = delay;
    this._setState("reconnecting", null);  // the close's reason stands
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  _stopConnectionTimers() {
    if (this._openTimer) clearTimeout(this._openTimer);
    if (this._pingTimer) clearInterval(this._pingTimer);
    this._openTimer = this._pingTimer = null;
    this._requests = new Map();
  }

  /**
   * End in "closed": no reconnect; every subscription ends (pending ones reject with code `closed`,
   * confirmed ones get `onError` unless the caller closed the client).
   * @param {string} reason
   * @param {boolean} [byCaller]
   */
  _shutdown(reason, byCaller = false) {
    if (this._retryTimer) clearTimeout(this._retryTimer);
    if (this._statsTimer) clearInterval(this._statsTimer);
    if (typeof window !== "undefined") window.removeEventListener("online", this._onlineListener);
    this._retryTimer = this._statsTimer = null;
    this._stopConnectionTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onclose = null;
      ws.onmessage = null;
      try { ws.close(1000, "client closed"); } catch { /* already closing */ }
    }
    this.welcome = null;
    this.nextDelayMs = null;
    this.messagesPerSecond = this.bytesPerSecond = 0;
    this._setState("closed", reason);
    const error = new HubError("closed", reason);
    for (const s of this._pending) s._fail(error);
    this._pending.clear();
    for (const shape of this._shapes.values()) {
      for (const s of shape.members) {
        if (byCaller) s.status = "closed";
        else s._fail(error);
      }
    }
    this._shapes.clear();
    if (this._opened) this._opened.reject(error);
  }
}

/** Shared by the stream helpers: use a given client, or own one made from the options. */
class _Stream {
  /** @param {HubClientOptions & {client?: HubClient}} [options] */
  constructor(options = {}) {
    const { client, ...rest } = options;
    this._owned = !client;
    this.client = client ?? new HubClient(rest);
  }

  /** Connect the client if this stream owns it; resolves once it is open. */
  connect() {
    return this._owned || this.client.state === "closed" ? this.client.connect() : Promise.resolve();
  }

  /** Close the client if this stream owns it. */
  close() {
    if (this._owned) this.client.close();
  }
}

/**
 * Live metrics: keeps `servers` (id → latest sample) up to date from snapshots and events.
 *
 *   const stream = new MetricsStream();
 *   await stream.subscribe("metrics", { where: "cpu > 90", callback: (data) => ... });
 *   await stream.connect();
 */
export class MetricsStream extends _Stream {
  /** @param {HubClientOptions & {client?: HubClient}} [options] */
  constructor(options = {}) {
    super(options);
    /** @type {Map<string, Record<string, any>>} */
    this.servers = new Map();
  }

  /**
   * @param {string} [topic] "metrics" (the default), "fleet" or "system"
   * @param {{servers?: string[] | string, tags?: Record<string, string> | string, metrics?: string[],
   *   where?: string, interval?: string, encoding?: "json" | "delta",
   *   callback?: (data: any, meta: DeliveryMeta) => void}} [options]
   * @returns {Promise<Subscription>}
   */
  subscribe(topic = "metrics", { callback, encoding, ...filter } = {}) {
    const keep = topic === "metrics";
    return this.client.subscribe(topic, {
      filter: Object.keys(filter).length ? filter : undefined,
      ...(encoding !== undefined ? { encoding } : {}),
      onSnapshot: (data, meta) => {
        if (keep) {
          this.servers.clear();
          for (const [id, sample] of Object.entries(data.servers ?? {})) this.servers.set(id, sample);
        }
        if (callback) callback(data, meta);
      },
      onEvent: (data, meta) => {
        if (keep) for (const [id, sample] of Object.entries(data.servers ?? {})) this.servers.set(id, sample);
        if (callback) callback(data, meta);
      },
    });
  }
}

/**
 * Live log records, one callback per record.
 *
 *   const logs = new LogStream({ level: "WARN" });
 *   logs.onLog((record) => ...);
 *   await logs.connect();
 */
export class LogStream extends _Stream {
  /**
   * @param {HubClientOptions & {client?: HubClient, servers?: string[] | string, level?: string,
   *   contains?: string}} [options]
   */
  constructor(options = {}) {
    const { servers, level, contains, ...rest } = options;
    super(rest);
    /** @type {Record<string, any>} */
    this.filter = Object.fromEntries(Object.entries({ servers, level, contains }).filter(([, v]) => v !== undefined));
    /** @type {Set<(record: Record<string, any>) => void>} */
    this._listeners = new Set();
    /** @type {Promise<Subscription> | null} */
    this._sub = null;
  }

  /**
   * Call `fn` with every record from now on; returns a function that stops it.
   * @param {(record: Record<string, any>) => void} fn
   */
  onLog(fn) {
    this._listeners.add(fn);
    if (!this._sub) {
      this._sub = this.client.subscribe("logs", {
        filter: Object.keys(this.filter).length ? this.filter : undefined,
        onEvent: (data) => {
          for (const record of data.records ?? []) {
            for (const listener of this._listeners) {
              try { listener(record); } catch (error) { report(error); }
            }
          }
        },
      });
      this._sub.catch(report);
    }
    return () => this._listeners.delete(fn);
  }
}

// Scenarios of the real socket.io-client against a hub's /socket.io/ endpoint, run by
// tests/socketio/test_socketio_client.py: `node scenarios.cjs <scenario> <base url> <token> [arg]`.
// Each prints one JSON line with what it observed (the Python test asserts on it) and exits 0; it
// exits 1 with {"error": ...} when its deadline passes first.
"use strict";
const { io } = require("socket.io-client");

const [scenario, base, token, arg] = process.argv.slice(2);
const DEADLINE_MS = Number(process.env.DEADLINE_MS || 25000);

function done(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(0);
}
setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: `deadline passed in ${scenario}` }) + "\n");
  process.exit(1);
}, DEADLINE_MS).unref();

const seqOf = (cursor) => Number(cursor.split("-").pop());

// Our namespace over one transport list: the ack, the snapshot, then three events.
function ours(transports) {
  const s = io(base + "/v1", { auth: { token }, transports, reconnection: false });
  const out = { transports: [], events: [], offsets: [] };
  s.io.on("open", () => {
    out.transports.push(s.io.engine.transport.name);
    s.io.engine.on("upgrade", (t) => out.transports.push(t.name));
  });
  s.on("connect", async () => {
    out.ack = await s.emitWithAck("subscribe", { id: "1", topic: "metrics" });
  });
  s.on("snapshot", (m) => { out.snapshot = { sub: m.sub, cursor: m.cursor, servers: Object.keys(m.data.servers) }; });
  s.on("event", (m, offset) => {
    out.events.push(m.cursor);
    out.offsets.push(offset);
    out.sub = m.sub;
    const upgraded = transports.length === 1 || out.transports.includes("websocket");
    if (out.events.length >= 3 && upgraded && out.snapshot) {
      out.final = s.io.engine.transport.name;
      done(out);
    }
  });
}

// The original dashboard's flow: its options, welcome, subscribe with a serverId filter, events,
// request-current-status, a cut, the reconnect and its re-subscription.
function original(serverId) {
  const s = io(base, {
    transports: ["websocket", "polling"], timeout: 10000, auth: { token },
    reconnectionAttempts: 5, reconnectionDelay: 100, reconnectionDelayMax: 500,
  });
  const out = { welcome: null, statuses: 0, connects: 0, before: [], after: [], recovered: [] };
  const subscribe = () => {
    s.emit("subscribe", { clientId: "dashboard-1", streamType: "server-metrics", filters: { serverId } });
    s.emit("subscribe", { clientId: "dashboard-1", streamType: "network", filters: { serverId, features: ["net_in"] } });
    s.emit("request-current-status");
  };
  s.on("welcome", (w) => { out.welcome = w; });
  s.on("connect", () => { out.connects += 1; out.recovered.push(s.recovered); subscribe(); });
  s.on("current-status", (c) => { out.statuses += 1; out.status = c; });
  s.on("network", (e) => { out.network = e; });
  s.on("server-metrics", (e) => {
    const list = out.connects === 1 ? out.before : out.after;
    list.push(e);
    if (out.connects === 1 && out.before.length === 3) {
      s.io.engine.close(); // a cut: the client reconnects by itself
    } else if (out.connects === 2 && out.after.length === 3 && out.network) {
      done(out);
    }
  });
}

// Our namespace with forced cuts: every reconnect subscribes again, from the last cursor seen
// (`explicit`), or without it, letting the connection-state-recovery offset say where to resume.
function cuts(count, explicit) {
  const s = io(base + "/v1", {
    auth: { token }, transports: ["websocket"], reconnectionDelay: 20, reconnectionDelayMax: 100,
  });
  const out = { seqs: [], recovered: [], acks: [], cuts: 0, socketRecovered: [] };
  let last = null;
  let sinceCut = 0;
  s.on("connect", async () => {
    out.socketRecovered.push(s.recovered);
    const request = { id: "r", topic: "metrics" };
    if (explicit && last) request.since = last;
    const ack = await s.emitWithAck("subscribe", request);
    out.acks.push(ack.type);
    if ("recovered" in ack) out.recovered.push(ack.recovered);
  });
  s.on("snapshot", (m) => { out.snapshots = (out.snapshots || 0) + 1; if (!last) last = m.cursor; });
  s.on("event", (m) => {
    out.seqs.push(seqOf(m.cursor));
    last = m.cursor;
    sinceCut += 1;
    if (out.cuts < count && sinceCut >= 1 + (out.cuts % 3)) {
      sinceCut = 0;
      out.cuts += 1;
      s.io.engine.close();
    } else if (out.cuts >= count && sinceCut >= 3) {
      done(out);
    }
  });
}

// Recovery on another hub process: a client of process A is cut, then reconnects to process B with
// the pid and offset it had (what a load balancer without sticky sessions does to it); an observer on
// A that is never cut says what it should have received.
function cross(other) {
  const out = { observed: [], before: [], after: [] };
  const observer = io(base + "/v1", { auth: { token }, transports: ["websocket"], reconnection: false });
  observer.on("connect", () => observer.emit("subscribe", { topic: "metrics" }));
  observer.on("event", (m) => out.observed.push(m.cursor));
  const first = io(base + "/v1", { auth: { token }, transports: ["websocket"], reconnection: false });
  let offset = null;
  first.on("connect", () => first.emit("subscribe", { topic: "metrics" }));
  first.on("event", (m, off) => {
    if (out.before.length >= 5) return;
    out.before.push(m.cursor);
    offset = off;
    if (out.before.length === 5) {
      first.disconnect();
      setTimeout(resume, 600); // events go on meanwhile: those are the missed ones
    }
  });
  function resume() {
    const second = io(other + "/v1", { auth: { token }, transports: ["websocket"], reconnection: false,
                                       autoConnect: false });
    second._pid = first._pid; // what the client keeps across its own reconnects
    second._lastOffset = offset;
    second.on("connect", async () => {
      out.recovered = second.recovered;
      out.ack = await second.emitWithAck("subscribe", { topic: "metrics" });
    });
    second.on("event", (m) => {
      out.after.push(m.cursor);
      if (out.after.length >= 12 && out.observed.includes(m.cursor)) done(out);
    });
    second.connect();
  }
}

function refused() {
  const s = io(base + "/v1", { auth: { token: "not-a-token" }, transports: ["websocket"], reconnection: false });
  s.on("connect", () => done({ connected: true }));
  s.on("connect_error", (err) => done({ message: err.message, data: err.data }));
}

({
  websocket: () => ours(["websocket"]),
  polling: () => ours(["polling"]),
  upgrade: () => ours(["polling", "websocket"]),
  original: () => original(arg),
  resume: () => cuts(Number(arg || 20), true),
  recover: () => cuts(Number(arg || 20), false),
  cross: () => cross(arg),
  refused,
})[scenario]();

'use strict';
// Load generator of the side-by-side benchmark: N WebSocket clients in one Node process.
//
//   node loadgen.js --url ws://127.0.0.1:8000/ws?token=... --clients 5000 --kind hub|plain|sio
//                   [--subscribe '{"type":"subscribe","id":"1","topic":"metrics"}'] [--compression 1]
//                   [--concurrency 200] [--connect-budget <s>] --deadline <epoch s>
//
// Kinds: `hub` waits for the welcome, sends the subscribe message and counts from `subscribed`; `plain`
// (the floor, Node ws) just reads; `sio` speaks Engine.IO v4 / Socket.IO over a raw WebSocket (open,
// "40" connect, "3" pongs); `hubsio` the same against the hub's /socket.io/ (namespace /v1 with --token,
// then a `subscribe` event to metrics, counted from `subscribed`). Every `event` frame is stamped when the client's `message` fires: latency
// = that time - data.ts (same clock), also kept as each tick's (cursor seq's) slowest frame; lost = gaps in
// the cursor's seq per client. Prints JSON lines:
// {"kind":"ready",...} once every client tried to connect, then waits for "start <w0> <w1>" (epoch s)
// on stdin and prints {"kind":"result",...} after the window. Exits by itself at --deadline.
const WebSocket = require('ws');

const a = {};
for (let i = 2; i + 1 < process.argv.length; i += 2) a[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const N = parseInt(a.clients, 10);
const kind = a.kind || 'hub';
const compression = a.compression === '1';
const concurrency = parseInt(a.concurrency || '200', 10);
const subscribe = a.subscribe || '{"type":"subscribe","id":"1","topic":"metrics"}';
const deadline = parseFloat(a.deadline) * 1000;
const BUCKET_MS = 0.1;
const hist = new Map(); // latency bucket -> count
const tickMax = new Map(); // seq -> the slowest of that tick's frames, ms
const st = { connected: 0, failures: {}, pending: N, messages: 0, lost: 0, dup: 0, payload: 0, dropped: {},
  perClientMin: Infinity, perClientMax: 0 };
let win0 = Infinity;
let win1 = Infinity;
let stopping = false;
const clients = [];
const now = () => performance.timeOrigin + performance.now();
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n');
setTimeout(() => { emit({ kind: 'result', timed_out: true, ...result() }); process.exit(3); },
  Math.max(0, deadline - Date.now()));

const CURSOR = Buffer.from('"cursor":"');
const TS = Buffer.from('"ts":');
const EVENT_HUB = Buffer.from('{"type":"event"');
const EVENT_SIO = Buffer.from('42["event"');
const EVENT_HUBSIO = Buffer.from('42/v1,["event"');

function fail(reason) { st.failures[reason] = (st.failures[reason] || 0) + 1; }

function onEvent(c, buf, rx) {
  const ci = buf.indexOf(CURSOR);
  const ti = buf.indexOf(TS);
  if (ci < 0 || ti < 0) return;
  const cend = buf.indexOf(34, ci + 10); // closing quote
  const cursor = buf.toString('latin1', ci + 10, cend);
  const dash = cursor.lastIndexOf('-');
  const seq = parseInt(cursor.slice(dash + 1), 10);
  let te = ti + 5;
  while (buf[te] >= 48 && buf[te] <= 57) te++;
  const ts = parseInt(buf.toString('latin1', ti + 5, te), 10);
  if (c.expected !== 0) {
    if (seq > c.expected) st.lost += seq - c.expected;
    else if (seq < c.expected) st.dup += 1;
  }
  c.expected = Math.max(c.expected, seq + 1);
  if (rx >= win0 && rx < win1) {
    st.messages += 1;
    st.payload += buf.length;
    c.count += 1;
    const b = Math.max(0, Math.round((rx - ts) / BUCKET_MS));
    hist.set(b, (hist.get(b) || 0) + 1);
    if (!(tickMax.get(seq) >= rx - ts)) tickMax.set(seq, rx - ts);
  }
}

function open(done) {
  const c = { ws: null, expected: 0, count: 0, ready: false, bytes0: 0 };
  let settled = false;
  const settle = (ok, reason) => {
    if (settled) return;
    settled = true;
    if (ok) { st.connected += 1; clients.push(c); c.ready = true; } else { fail(reason); }
    done();
  };
  const ws = new WebSocket(a.url, kind === 'hub' ? ['openmanager.v1.json'] : [],
    { perMessageDeflate: compression, handshakeTimeout: 60000, maxPayload: 64 * 1024 * 1024 });
  c.ws = ws;
  ws.on('message', (buf, isBinary) => {
    const rx = now();
    if (kind === 'hubsio') { // the hub's /socket.io/, namespace /v1
      if (buf.length === 1 && buf[0] === 50) { ws.send('3'); return; }
      if (buf.subarray(0, EVENT_HUBSIO.length).equals(EVENT_HUBSIO)) { onEvent(c, buf, rx); return; }
      const text = buf.toString();
      if (text[0] === '0') { ws.send(`40/v1,${JSON.stringify({ token: a.token })}`); return; }
      if (text.startsWith('40/v1,')) { ws.send('42/v1,["subscribe",{"topic":"metrics"}]'); return; }
      if (text.startsWith('42/v1,["subscribed"')) {
        const m = JSON.parse(text.slice(6))[1];
        c.expected = parseInt(m.cursor.slice(m.cursor.lastIndexOf('-') + 1), 10) + 1;
        settle(true);
      } else if (text.startsWith('44') || text.startsWith('42/v1,["error"')) settle(false, 'connect or subscribe error');
      return;
    }
    if (kind === 'sio') {
      if (buf.length === 1 && buf[0] === 50) { ws.send('3'); return; } // "2" ping -> "3" pong
      if (buf[0] === 48) { ws.send('40'); return; } // Engine.IO open -> Socket.IO connect
      if (buf[0] === 52 && buf[1] === 48) { settle(true); return; } // "40{...}" connected
      if (buf.subarray(0, EVENT_SIO.length).equals(EVENT_SIO)) onEvent(c, buf, rx);
      return;
    }
    if (buf.subarray(0, EVENT_HUB.length).equals(EVENT_HUB)) { onEvent(c, buf, rx); return; }
    if (kind === 'hub') {
      const text = buf.toString();
      if (text.startsWith('{"type":"welcome"')) { ws.send(subscribe); return; }
      if (text.startsWith('{"type":"subscribed"')) {
        const m = JSON.parse(text);
        c.expected = parseInt(m.cursor.slice(m.cursor.lastIndexOf('-') + 1), 10) + 1;
        settle(true);
      } else if (text.startsWith('{"type":"error"')) settle(false, 'subscribe error');
    }
  });
  ws.on('open', () => { if (kind === 'plain') settle(true); });
  ws.on('error', (e) => settle(false, String(e.code || e.message).slice(0, 60)));
  ws.on('close', (code) => {
    settle(false, `closed ${code}`);
    if (!stopping && c.ready) st.dropped[code] = (st.dropped[code] || 0) + 1;
  });
}

function result() {
  let min = Infinity;
  let max = 0;
  for (const c of clients) { min = Math.min(min, c.count); max = Math.max(max, c.count); }
  let wire = 0;
  for (const c of clients) if (c.ws._socket) wire += c.ws._socket.bytesRead - c.bytes0;
  return { connected: st.connected, failures: st.failures, messages: st.messages, lost: st.lost, duplicates: st.dup,
    dropped: st.dropped, payload_bytes: st.payload, wire_bytes: wire, per_client_min: clients.length ? min : 0,
    per_client_max: max, hist: Array.from(hist.entries()), bucket_ms: BUCKET_MS,
    tick_max: Array.from(tickMax.entries(), ([seq, ms]) => [seq, Math.round(ms * 10) / 10]) };
}

const started = Date.now();
let launched = 0;
let finished = 0;
let readySent = false;
function ready() {
  if (readySent) return;
  readySent = true;
  const failures = { ...st.failures };
  if (finished < N) failures['not connected within the connect budget'] = N - finished;
  emit({ kind: 'ready', connected: st.connected, failures, connect_s: (Date.now() - started) / 1000 });
}
// --connect-budget s: report what is connected by then (the rest keep trying, uncounted)
if (a['connect-budget']) setTimeout(ready, parseFloat(a['connect-budget']) * 1000);
function launch() {
  while (launched < N && launched - finished < concurrency) {
    launched += 1;
    open(() => {
      finished += 1;
      if (finished === N) ready();
      else launch();
    });
  }
}
launch();

let input = '';
process.stdin.on('data', (d) => {
  input += d;
  const nl = input.indexOf('\n');
  if (nl < 0) return;
  const [cmd, w0, w1] = input.slice(0, nl).split(' ');
  if (cmd !== 'start') process.exit(4);
  const cpu0 = process.cpuUsage();
  setTimeout(() => { for (const c of clients) if (c.ws._socket) c.bytes0 = c.ws._socket.bytesRead; win0 = parseFloat(w0) * 1000; },
    Math.max(0, parseFloat(w0) * 1000 - Date.now()));
  win1 = parseFloat(w1) * 1000;
  setTimeout(() => {
    const cpu = process.cpuUsage(cpu0);
    let wire = 0;
    for (const c of clients) if (c.ws._socket) wire += c.ws._socket.bytesRead - c.bytes0;
    setTimeout(() => {
      stopping = true;
      const r = result();
      r.wire_bytes = wire;
      emit({ kind: 'result', timed_out: false, cpu_s: (cpu.user + cpu.system) / 1e6, ...r });
      for (const c of clients) c.ws.terminate();
      setTimeout(() => process.exit(0), 200);
    }, 500);
  }, Math.max(0, win1 - Date.now()));
});
process.stdin.on('end', () => { if (win0 === Infinity) process.exit(4); });

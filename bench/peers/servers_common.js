'use strict';
// What the Node peers share: arguments, the fleet payload, the tick loop, /readyz.
const fs = require('fs');

function args(defaults) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i + 1 < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

// Calls fn(seq) every `tick` seconds, on a schedule that does not drift.
function every(tick, fn) {
  const start = Date.now();
  let seq = 0;
  const step = () => {
    seq += 1;
    fn(seq);
    const next = start + (seq + 1) * tick * 1000;
    setTimeout(step, Math.max(0, next - Date.now()));
  };
  setTimeout(step, tick * 1000);
}

function loadServers(path) {
  return fs.readFileSync(path, 'utf8');
}

function onStop(fn) {
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { fn(); process.exit(0); });
}

module.exports = { args, every, loadServers, onStop, epoch: Math.floor(Date.now() / 1000).toString(16) };

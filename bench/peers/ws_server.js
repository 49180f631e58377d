'use strict';
// Node `ws` peer: every tick one frame, serialised once, sent to every client.
//   node ws_server.js --port 8766 --servers servers.json --tick 1.0 [--compression 1]
const http = require('http');
const { WebSocketServer } = require('ws');
const { args, every, loadServers, onStop, epoch } = require('./servers_common');

const a = args({ tick: '1.0', compression: '0' });
const servers = loadServers(a.servers);
const server = http.createServer((req, res) => { res.writeHead(200); res.end('ok\n'); });
const wss = new WebSocketServer({ server, perMessageDeflate: a.compression === '1', maxPayload: 65536 });
wss.on('connection', (ws) => { ws.on('error', () => {}); });

every(parseFloat(a.tick), (seq) => {
  const frame = Buffer.from(
    `{"type":"event","sub":"sws","cursor":"${epoch}-${seq}","data":{"ts":${Date.now()},"servers":${servers}}}`);
  for (const ws of wss.clients) if (ws.readyState === 1) ws.send(frame, { binary: false });
});
server.listen(parseInt(a.port, 10), '127.0.0.1', 4096, () => console.log(`node-ws 127.0.0.1:${a.port} ready`));
onStop(() => server.close());

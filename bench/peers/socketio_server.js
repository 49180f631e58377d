'use strict';
// Socket.IO 4.8 peer: every tick one `io.emit("event", ...)` to every client (encoded once per emit).
//   node socketio_server.js --port 8767 --servers servers.json --tick 1.0 [--compression 1]
const http = require('http');
const { Server } = require('socket.io');
const { args, every, loadServers, onStop, epoch } = require('./servers_common');

const a = args({ tick: '1.0', compression: '0' });
const servers = JSON.parse(loadServers(a.servers));
const server = http.createServer((req, res) => {
  if (!req.url.startsWith('/socket.io')) { res.writeHead(200); res.end('ok\n'); }
});
const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: a.compression === '1' });

every(parseFloat(a.tick), (seq) => {
  io.emit('event', { type: 'event', sub: 'ssio', cursor: `${epoch}-${seq}`, data: { ts: Date.now(), servers } });
});
server.listen(parseInt(a.port, 10), '127.0.0.1', 4096, () => console.log(`socket.io 127.0.0.1:${a.port} ready`));
onStop(() => io.close());

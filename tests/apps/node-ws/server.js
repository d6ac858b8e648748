// A WebSocket service that knows nothing of wsctl's protocol, on Debian's
// `ws` library: what a team's own Node service looks like to wsctl.
//   GET /up     200 once listening (wsctl's health path)
//   GET /       200, names the colour
//   /echo/      WebSocket: every text frame comes back as "COLOR: TEXT"
// SIGTERM: every socket is closed with 1001 (going away), then the process
// exits 0. FAIL_UPGRADE_EVERY=N answers every Nth upgrade with a 500 (the
// first is fine, so a smoke test passes): a canary that fails under real
// traffic, as Nginx sees it.
'use strict';
const http = require('http');
const { WebSocketServer } = require('/usr/share/nodejs/ws');

const color = process.env.COLOR || 'unknown';
const port = Number(process.env.PORT || 8000);
const failUpgradeEvery = Number(process.env.FAIL_UPGRADE_EVERY || 0);
let upgrades = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/up') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
  } else if (req.url === '/') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end(`node-ws ${color}\n`);
  } else {
    res.writeHead(404);
    res.end();
  }
});
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/echo/')) {
    socket.destroy();
    return;
  }
  upgrades += 1;
  if (failUpgradeEvery > 0 && upgrades % failUpgradeEvery === 0) {
    socket.end('HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => ws.send(`${color}: ${data}`));
  });
});
server.listen(port, () => console.log(JSON.stringify({ msg: 'listening', port, color })));

process.on('SIGTERM', () => {
  console.log(JSON.stringify({ msg: 'SIGTERM', sockets: wss.clients.size }));
  for (const ws of wss.clients) ws.close(1001, 'going away');
  server.close(() => process.exit(0));
  // Sockets whose clients never answer the close.
  setTimeout(() => process.exit(0), 3000).unref();
});

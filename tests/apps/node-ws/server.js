// A WebSocket service that knows nothing of wsctl's protocol, on Debian's
// `ws` library: what a team's own Node service looks like to wsctl.
//   GET /up     200 once listening (wsctl's health path)
//   GET /       200, names the colour
//   /echo/      WebSocket: every text frame comes back as "COLOR: TEXT"
// SIGTERM: every socket is closed with 1001 (going away), then the process
// exits 0. FAIL_EVERY=N answers every Nth WebSocket frame with an error
// frame and closes with 1011 (for a canary that fails under traffic).
'use strict';
const http = require('http');
const { WebSocketServer } = require('/usr/share/nodejs/ws');

const color = process.env.COLOR || 'unknown';
const port = Number(process.env.PORT || 8000);
const failEvery = Number(process.env.FAIL_EVERY || 0);
let frames = 0;

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
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data) => {
      frames += 1;
      if (failEvery > 0 && frames % failEvery === 0) {
        ws.close(1011, 'failing on purpose');
        return;
      }
      ws.send(`${color}: ${data}`);
    });
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

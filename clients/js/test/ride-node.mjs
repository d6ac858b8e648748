// Node driver of the riders: `node ride-node.mjs URL CLIENTS STOP_FILE`.
// Prints `ready` once every client has its first answer, rides until
// STOP_FILE exists (bounded: 10 minutes), then prints one JSON line:
// {"kind": "node", "clients": [...]} (rider.js's records).
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { ride } from "./rider.js";

const [url, clients, stopFile] = process.argv.slice(2);
// Node 22 has a WebSocket of its own; Node 20 takes the `ws` package
// (Debian's node-ws: NODE_PATH=/usr/share/nodejs).
const WebSocket = globalThis.WebSocket ?? createRequire(import.meta.url)("ws");
const deadline = Date.now() + 10 * 60 * 1000;
const records = await ride({
  url,
  clients: Number(clients),
  WebSocket,
  stopped: () => existsSync(stopFile) || Date.now() > deadline,
  onReady: () => console.log("ready"),
});
console.log(JSON.stringify({ kind: "node", clients: records }));

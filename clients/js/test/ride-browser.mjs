// Browser driver of the riders: `node ride-browser.mjs URL CLIENTS STOP_FILE`.
// Serves clients/js/ on a loopback port, opens test/ride.html in headless
// Chromium (Debian's `chromium`), prints `ready` once every rider has its
// first answer, tells the page to stop once STOP_FILE exists, and prints
// the page's report as one JSON line: {"kind": "browser", "clients": [...]}.
// Chromium runs with a profile of its own and is killed at the end, also
// when the page never reports (bounded: 10 minutes).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const [url, clients, stopFile] = process.argv.slice(2);
const root = dirname(dirname(fileURLToPath(import.meta.url)));
const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".html": "text/html" };

let finish;
const reported = new Promise((resolve) => (finish = resolve));
const server = createServer((request, response) => {
  const path = new URL(request.url, "http://x").pathname;
  if (path === "/stop") return response.end(existsSync(stopFile) ? "1" : "0");
  if (request.method === "POST") {
    let body = "";
    request.on("data", (chunk) => (body += chunk));
    request.on("end", () => {
      response.end("ok");
      if (path === "/ready") console.log("ready");
      if (path === "/report") finish(body);
    });
    return;
  }
  const file = normalize(join(root, path));
  if (!file.startsWith(root) || !existsSync(file)) {
    response.statusCode = 404;
    return response.end();
  }
  response.setHeader("content-type", types[file.slice(file.lastIndexOf("."))] ?? "text/plain");
  response.end(readFileSync(file));
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const page = `http://127.0.0.1:${server.address().port}/test/ride.html?url=${encodeURIComponent(url)}&clients=${clients}`;

const profile = mkdtempSync(join(tmpdir(), "wsctl-chromium-"));
const chromium = spawn(
  process.env.CHROMIUM ?? "chromium",
  [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    `--user-data-dir=${profile}`,
    page,
  ],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let chromiumLog = "";
chromium.stderr.on("data", (chunk) => (chromiumLog = (chromiumLog + chunk).slice(-4000)));
const exited = new Promise((resolve) => chromium.on("exit", resolve));

const timeout = new Promise((resolve) => setTimeout(() => resolve(null), 10 * 60 * 1000));
const report = await Promise.race([reported, timeout, exited.then(() => null)]);
chromium.kill("SIGKILL");
await exited;
server.close();
rmSync(profile, { recursive: true, force: true });
if (report === null) {
  console.error(`chromium gave no report; its last output:\n${chromiumLog}`);
  process.exit(1);
}
// Exit only once the whole line is written: stdout is a pipe, and
// process.exit would cut a long report at 64 KiB.
process.stdout.write(`${report}\n`, () => process.exit(0));

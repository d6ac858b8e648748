// wsctl.js against a real `wsctl serve` (the binary in $WSCTL), run with
// `node --test clients/js/test/`. A TCP proxy of the test's own stands
// between them where a link must be cut or frozen.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import net from "node:net";
import { after, test } from "node:test";

import { WsctlError, backoffDelay, connect } from "../wsctl.js";

const WebSocket = globalThis.WebSocket ?? createRequire(import.meta.url)("ws");
const WSCTL = process.env.WSCTL ?? "wsctl";
const servers = [];
after(() => servers.forEach((server) => server.kill("SIGKILL")));

async function freePort() {
  const listener = net.createServer();
  await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
  const { port } = listener.address();
  await new Promise((resolve) => listener.close(resolve));
  return port;
}

/** A `wsctl serve` on a free loopback port; resolves once it accepts. */
async function serve(env = {}) {
  const port = await freePort();
  const child = spawn(WSCTL, ["serve", "--host", "127.0.0.1", "--port", String(port)], {
    env: { ...process.env, ...env },
    stdio: "ignore",
  });
  servers.push(child);
  for (let i = 0; i < 100; i += 1) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) return { port, child };
    } catch {
      // not yet
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`wsctl serve did not start on ${port}`);
}

/** A TCP proxy to `port` that can cut its connections or freeze them. */
async function proxy(port) {
  const links = new Set();
  let frozen = false;
  const listener = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    const link = { client, upstream, frozen: false };
    links.add(link);
    const pipe = (from, to) =>
      from.on("data", (chunk) => {
        if (!link.frozen) to.write(chunk);
      });
    pipe(client, upstream);
    pipe(upstream, client);
    const end = () => {
      links.delete(link);
      client.destroy();
      upstream.destroy();
    };
    client.on("close", end).on("error", end);
    upstream.on("close", end).on("error", end);
  });
  await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
  return {
    url: `ws://127.0.0.1:${listener.address().port}/ws/chat/`,
    /** Resets every open connection (the client sees 1006). */
    cut: () => links.forEach((link) => link.client.resetAndDestroy()),
    /** Open connections pass nothing more, either way; new ones work. */
    freeze: () => links.forEach((link) => (link.frozen = true)),
    links: () => links.size,
    close: () => listener.close(),
  };
}

const events = (client, type) => {
  const seen = [];
  client.addEventListener(type, (event) => seen.push(event.detail));
  return seen;
};

test("full-jitter backoff stays under its cap and below base * 2^attempt", { timeout: 30_000 }, () => {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const ceiling = Math.min(5000, 100 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, { random: () => 0 }), 0);
    const top = backoffDelay(attempt, { random: () => 0.999999 });
    assert.ok(top < ceiling && top >= ceiling - 1, `${attempt}: ${top}`);
  }
  // Random, not lockstep: 200 draws at one attempt are spread out.
  const draws = new Set(Array.from({ length: 200 }, () => backoffDelay(5)));
  assert.ok(draws.size > 100, `only ${draws.size} distinct delays`);
});

test("send answers with the count, ids make every frame once, close says bye", { timeout: 30_000 }, async () => {
  const { port } = await serve({ BROADCAST_RATE: "100" });
  const client = connect(`ws://127.0.0.1:${port}/ws/chat/`, { WebSocket });
  const counts = events(client, "count");
  const goodbyes = events(client, "goodbye");
  const broadcasts = events(client, "broadcast");
  assert.deepEqual(await client.send("one"), { count: 1, duplicate: false, id: `${client.idPrefix}-0` });
  assert.equal((await client.send({ two: 2 })).count, 2);
  assert.equal((await client.broadcast("to all")).count, 3);
  assert.equal(client.state, "open");
  assert.match(client.sessionUuid, /^[0-9a-f-]{36}$/);
  await client.close();
  assert.equal(client.state, "closed");
  assert.equal(goodbyes.length, 1);
  assert.equal(goodbyes[0].reason, "client_request");
  assert.equal(goodbyes[0].count, 3);
  assert.deepEqual(counts.map((c) => c.count), [1, 2, 3]);
  assert.equal(broadcasts.length, 1);
  await assert.rejects(client.send("after close"), WsctlError);

  // The session resumes where it stopped.
  const again = connect(`ws://127.0.0.1:${port}/ws/chat/`, { WebSocket, session: client.sessionUuid });
  assert.equal((await again.send("four")).count, 4);
  await again.close();
});

test("a refused frame rejects its promise and the client stays open", { timeout: 30_000 }, async () => {
  const { port } = await serve({ BROADCAST_MAX_SIZE: "10" });
  const client = connect(`ws://127.0.0.1:${port}/ws/chat/`, { WebSocket });
  await assert.rejects(client.broadcast("x".repeat(100)), (error) => error.code === "message_too_large");
  assert.equal((await client.send("fine")).count, 1);
  await client.close();
});

test("a message over MAX_MESSAGE_SIZE ends the client (close 1009), its promise rejected", { timeout: 30_000 }, async () => {
  const { port } = await serve({ MAX_MESSAGE_SIZE: "1000" });
  const client = connect(`ws://127.0.0.1:${port}/ws/chat/`, { WebSocket });
  await client.send("small");
  await assert.rejects(client.send("x".repeat(5000)), WsctlError);
  assert.equal(client.state, "closed");
});

test("a cut link (1006) reconnects, resumes and loses nothing", { timeout: 30_000 }, async () => {
  const { port } = await serve();
  const link = await proxy(port);
  const client = connect(link.url, { WebSocket, backoff: { base: 50, cap: 500 } });
  const states = events(client, "state");
  const session = (await client.send(0), client.sessionUuid);
  const sent = [];
  for (let i = 1; i <= 30; i += 1) {
    sent.push(client.send(i));
    if (i === 10 || i === 20) link.cut();
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const answers = await Promise.all(sent);
  assert.deepEqual(
    answers.map((a) => a.count).sort((a, b) => a - b),
    Array.from({ length: 30 }, (_, i) => i + 2),
  );
  assert.equal(client.sessionUuid, session);
  assert.equal(client.count, 31);
  assert.ok(client.reconnects >= 2, `${client.reconnects} reconnects`);
  assert.ok(states.some((s) => s.state === "reconnecting"));
  await client.close();
  link.close();
});

test("the watchdog drops a frozen link after twice heartbeat_interval and resends", { timeout: 30_000 }, async () => {
  const { port } = await serve({ HEARTBEAT_INTERVAL: "0.5" });
  const link = await proxy(port);
  const client = connect(link.url, { WebSocket, backoff: { base: 50, cap: 200 } });
  const errors = events(client, "error");
  assert.equal((await client.send("before")).count, 1);
  link.freeze();
  const started = Date.now();
  const answer = await client.send("while frozen");
  const waited = Date.now() - started;
  assert.equal(answer.count, 2);
  assert.ok(errors.some((e) => e.code === "watchdog"), JSON.stringify(errors));
  assert.ok(waited >= 500 && waited < 4000, `answered after ${waited} ms`);
  assert.equal(client.reconnects, 1);
  await client.close();
  link.close();
});

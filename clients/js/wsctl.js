// wsctl.js: the official JavaScript client of the wsctl service
// (docs/protocol.md). One dependency-free ES module for browsers and
// Node 22+ (Node 20: pass `WebSocket` from the `ws` package).
//
//   import { connect } from "./wsctl.js";
//   const client = connect("wss://chat.example.com/ws/chat/");
//   const { count, duplicate } = await client.send({ text: "hello" });
//
// What it does for you, as the protocol asks of every client:
// - resumes its session (`session_uuid`) on every reconnect;
// - reconnects at once after a server's goodbye, else with full-jitter
//   backoff (a random wait between 0 and min(cap, base * 2^attempt)), so a
//   fleet of clients never comes back in lockstep;
// - close codes: 1000 ends the client; 1001, 1006, 1011, 1012, 1013 (and
//   any other) reconnect; 1002, 1003, 1007, 1008, 1009 and 1010 end it (the
//   same frames would be refused again);
// - gives every message an id, and resends whatever was not answered after a
//   goodbye, a drop or an `unavailable`: the server answers a resend that had
//   counted as a duplicate with its original count, so nothing is counted
//   twice and nothing is lost;
// - a watchdog: no frame for twice `heartbeat_interval` means a dead link,
//   which is dropped and reconnected.

const TERMINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);
const RETRY_ERRORS = new Set(["unavailable", "rate_limited"]);
const OPEN = 1;

/** Full-jitter backoff: a random wait in [0, min(cap, base * 2^attempt)) ms. */
export function backoffDelay(attempt, { base = 100, cap = 5000, random = Math.random } = {}) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** An error the server gave a frame (`code`, `detail`), or the client's end. */
export class WsctlError extends Error {
  constructor(code, detail) {
    super(`${code}: ${detail}`);
    this.name = "WsctlError";
    this.code = code;
    this.detail = detail;
  }
}

function randomId() {
  const crypto = globalThis.crypto;
  if (crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * Opens a client of `url` (`ws://host/ws/chat/`). Options:
 * - `session`: a `session_uuid` to resume;
 * - `WebSocket`: the WebSocket class (default `globalThis.WebSocket`);
 * - `backoff`: `{ base, cap }` in ms (100 and 5000);
 * - `retryDelay`: ms before a frame answered `unavailable` or `rate_limited`
 *   is sent again (the first wait; it doubles to 2 s, with jitter);
 * - `watchdog`: false to turn the heartbeat watchdog off.
 */
export function connect(url, options = {}) {
  return new WsctlClient(url, options);
}

export class WsctlClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError(
        "no WebSocket here: pass { WebSocket } (in Node 20: import WebSocket from 'ws')",
      );
    }
    this.backoff = { base: 100, cap: 5000, ...(options.backoff ?? {}) };
    this.retryDelay = options.retryDelay ?? 100;
    this.watchdogOn = options.watchdog !== false;
    /** The session, known after the first greeting (or given). */
    this.sessionUuid = options.session ?? null;
    /** The session's count as last answered. */
    this.count = 0;
    /** `connecting`, `open`, `reconnecting`, `closing` or `closed`. */
    this.state = "connecting";
    this.connectionId = null;
    this.color = null;
    this.heartbeatInterval = null;
    /** Connections after the first that greeted. */
    this.reconnects = 0;
    this.idPrefix = randomId().slice(0, 8);
    this.nextId = 0;
    /** Frames not answered yet, by id, in the order they were sent. */
    this.pending = new Map();
    this.socket = null;
    this.greeted = false;
    /** The server's goodbye on the current connection, if it said one. */
    this.goodbye = null;
    this.attempt = 0;
    this.timers = new Set();
    this.watchdogTimer = null;
    this.closeWaiters = [];
    this.open();
  }

  /** Sends a message; resolves to the server's answer `{count, duplicate, id}`. */
  send(message) {
    return this.submit("message", message);
  }

  /** Broadcasts to every connection; resolves like `send`. */
  broadcast(message) {
    return this.submit("broadcast", message);
  }

  /**
   * Calls `listener(detail)` on each `type` event (the same as
   * addEventListener, with the event's detail); returns the unsubscriber.
   */
  on(type, listener) {
    const handler = (event) => listener(event.detail);
    this.addEventListener(type, handler);
    return () => this.removeEventListener(type, handler);
  }

  /** Says `bye`; resolves once the server's goodbye and close came. */
  close() {
    if (this.state === "closed") return Promise.resolve();
    const done = new Promise((resolve) => this.closeWaiters.push(resolve));
    if (this.state !== "closing") {
      this.setState("closing");
      if (this.greeted && this.socket?.readyState === OPEN) {
        this.socket.send(JSON.stringify({ type: "bye" }));
        // A server that never answers the bye does not hold us forever.
        this.later(() => this.end(new WsctlError("closed", "the client closed")), 5000);
      } else {
        this.end(new WsctlError("closed", "the client closed"));
      }
    }
    return done;
  }

  // The rest is the machinery.

  submit(type, message) {
    if (this.state === "closing" || this.state === "closed") {
      return Promise.reject(new WsctlError("closed", "the client is closed"));
    }
    const id = `${this.idPrefix}-${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const entry = { frame: JSON.stringify({ type, message, id }), resolve, reject, retries: 0 };
      this.pending.set(id, entry);
      this.transmit(entry);
    });
  }

  transmit(entry) {
    if (this.greeted && this.socket?.readyState === OPEN) {
      this.socket.send(entry.frame);
    }
    // Otherwise it goes out after the next greeting.
  }

  open() {
    let target = this.url;
    if (this.sessionUuid) {
      const url = new URL(this.url);
      url.searchParams.set("session_uuid", this.sessionUuid);
      target = url.toString();
    }
    let socket;
    try {
      socket = new this.WebSocket(target);
    } catch (error) {
      this.emit("error", { code: "connect", detail: String(error) });
      this.scheduleReconnect(false);
      return;
    }
    this.socket = socket;
    this.greeted = false;
    socket.onmessage = (event) => {
      if (this.socket !== socket) return;
      this.feedWatchdog();
      this.receive(typeof event.data === "string" ? event.data : String(event.data));
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.dropped(event.code);
    };
    socket.onerror = () => {
      // A close event follows; that is where the decision is made.
    };
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.type) {
      case "connection_established":
        this.greeting(frame);
        break;
      case "message_response":
        this.answered(frame);
        this.emit("message", frame);
        break;
      case "broadcast":
        this.emit("broadcast", frame);
        break;
      case "heartbeat":
        this.emit("heartbeat", frame);
        break;
      case "goodbye":
        this.goodbye = frame;
        this.countIs(frame.count);
        this.emit("goodbye", frame);
        break;
      case "error":
        this.refused(frame);
        break;
      default:
        break;
    }
  }

  greeting(frame) {
    const again = this.everGreeted === true;
    this.everGreeted = true;
    this.sessionUuid = frame.session_uuid;
    this.connectionId = frame.connection_id;
    this.color = frame.color;
    this.heartbeatInterval = frame.heartbeat_interval;
    this.greeted = true;
    this.attempt = 0;
    this.goodbye = null;
    if (frame.resumed !== true) {
      // A new session, or one that expired: the server starts it at 0.
      this.count = 0;
    }
    if (again) this.reconnects += 1;
    this.countIs(frame.count);
    this.feedWatchdog();
    // Everything unanswered goes again, in order: what had counted is
    // answered as a duplicate with its count.
    for (const entry of this.pending.values()) this.socket.send(entry.frame);
    if (this.state === "closing") {
      this.socket.send(JSON.stringify({ type: "bye" }));
    } else {
      this.setState("open");
    }
    this.emit("open", frame);
  }

  answered(frame) {
    const entry = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    this.countIs(frame.count);
    if (!entry) return;
    this.pending.delete(frame.id);
    entry.resolve({ count: frame.count, duplicate: frame.duplicate === true, id: frame.id });
  }

  refused(frame) {
    const entry = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    this.emit("error", { code: frame.code, detail: frame.detail, id: frame.id });
    if (!entry) return;
    if (RETRY_ERRORS.has(frame.code)) {
      const wait = this.retryDelay + backoffDelay(entry.retries++, { base: this.retryDelay, cap: 2000 });
      this.later(() => {
        if (this.pending.has(frame.id)) this.transmit(entry);
      }, wait);
      return;
    }
    this.pending.delete(frame.id);
    entry.reject(new WsctlError(frame.code, frame.detail));
  }

  countIs(count) {
    if (typeof count !== "number" || count === this.count) return;
    if (count > this.count) {
      this.count = count;
      this.emit("count", { count });
    }
  }

  dropped(code) {
    this.stopWatchdog();
    this.socket = null;
    this.greeted = false;
    const saidGoodbye = this.goodbye !== null;
    if (this.state === "closing") {
      this.end(new WsctlError("closed", "the client closed"));
      return;
    }
    if (TERMINAL_CLOSE_CODES.has(code) && !(code === 1000 && saidGoodbye && this.goodbye.reason !== "client_request")) {
      this.end(new WsctlError("closed", `the server closed the connection (${code})`));
      return;
    }
    this.scheduleReconnect(saidGoodbye, code);
  }

  scheduleReconnect(atOnce, code = 1006) {
    if (this.state === "closing" || this.state === "closed") return;
    this.setState("reconnecting", { code });
    // After a goodbye the server asked us to move: go at once (the server
    // already spread its goodbyes); after that, and after a drop, back off.
    const wait = atOnce ? 0 : backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.goodbye = null;
    this.later(() => this.open(), wait);
  }

  feedWatchdog() {
    if (!this.watchdogOn || !this.heartbeatInterval) return;
    this.stopWatchdog();
    const limit = this.heartbeatInterval * 2000;
    this.watchdogTimer = setTimeout(() => {
      const socket = this.socket;
      if (!socket) return;
      // A dead link: drop it without waiting for a close handshake that
      // cannot come, and reconnect.
      this.emit("error", { code: "watchdog", detail: `no frame for ${limit} ms` });
      this.socket = null;
      try {
        socket.close();
      } catch {
        // already closing
      }
      this.dropped(1006);
    }, limit);
  }

  stopWatchdog() {
    if (this.watchdogTimer !== null) clearTimeout(this.watchdogTimer);
    this.watchdogTimer = null;
  }

  later(action, wait) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      action();
    }, wait);
    this.timers.add(timer);
  }

  end(why) {
    if (this.state === "closed") return;
    this.stopWatchdog();
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= OPEN) {
      try {
        socket.close(1000);
      } catch {
        // already closing
      }
    }
    for (const entry of this.pending.values()) entry.reject(why);
    this.pending.clear();
    this.setState("closed");
    for (const resolve of this.closeWaiters.splice(0)) resolve();
  }

  /** `why`: `{code}`, the close code that ended the last connection. */
  setState(state, why = {}) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state, ...why });
  }

  emit(type, detail) {
    // CustomEvent is global in browsers and Node 19+; older Nodes get an
    // Event with the same `detail`.
    let event;
    if (typeof CustomEvent === "function") {
      event = new CustomEvent(type, { detail });
    } else {
      event = new Event(type);
      Object.defineProperty(event, "detail", { value: detail });
    }
    this.dispatchEvent(event);
  }
}

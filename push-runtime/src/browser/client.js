// The browser client of a push channel, served at `{base}/client.js`.
// One API over the five transports of docs/protocol.md; no dependencies.
//
//   import { subscribe } from "/chat/client.js";
//   const sub = subscribe("lobby", { transport: "auto", persist: true });
//   sub.on("message", (data, item) => console.log(item.cursor, data));
//   sub.onGap((gap) => console.warn("lost", gap.missed));
//
// Credentials: `credentials: "include"` sends the user's cookies to a channel
// of another origin (which must list the page's origin with
// `OriginPolicy::allow_credentials`); `auth` is called before every connect and
// reconnect and answers what to send: headers on polls, a short-lived ticket in
// the query on the transports that cannot set headers (EventSource, WebSocket,
// the frame). Never put a long-lived secret in a URL: proxies and logs keep URLs.

/** The channel's base path and wire names, filled in by the server. */
export const PATH = /*PUSH_PATH*/"";
export const NAMES = /*PUSH_NAMES*/[];

/** The transports, and the order `auto` tries them in. */
export const TRANSPORTS = ["websocket", "sse", "long-poll", "poll", "iframe"];
const AUTO_ORDER = ["websocket", "sse", "long-poll", "poll"];

/** What `credentials` may be, as `fetch` names them. */
const CREDENTIALS = ["omit", "same-origin", "include"];
/** The transports that can send headers of their own. */
const HEADERS_ALLOWED = ["long-poll", "poll"];

const encoder = new TextEncoder();
const byteLength = (text) => encoder.encode(text).length;

/** Subscribes to `topic`; see client.d.ts for the options. */
export function subscribe(topic, options = {}) {
  return new Subscription(topic, options);
}

export class Subscription {
  constructor(topic, options) {
    const base = options.base ?? new URL(".", import.meta.url).href.replace(/\/$/, "");
    this.topic = topic;
    this.options = options;
    this.base = base;
    this.mode = options.transport ?? "auto";
    if (this.mode !== "auto" && !TRANSPORTS.includes(this.mode)) {
      throw new Error(`unknown transport ${this.mode}; use auto or one of ${TRANSPORTS.join(", ")}`);
    }
    this.transport = this.mode === "auto" ? AUTO_ORDER[0] : this.mode;
    this.credentials = options.credentials ?? "same-origin";
    if (!CREDENTIALS.includes(this.credentials)) {
      throw new Error(`unknown credentials ${this.credentials}; use one of ${CREDENTIALS.join(", ")}`);
    }
    if (options.auth !== undefined && typeof options.auth !== "function") {
      throw new Error("auth must be a function returning { headers?, query? } (or a promise of it)");
    }
    // What the credentials provider answered for the current connection.
    this.grant = null;
    // Why the provider is asked next (set by a refusal or an expiry).
    this.asking = null;
    this.error = null;
    this.status = "connecting";
    this.stats = { requests: 0, bytes: 0, events: 0, gaps: 0, reconnects: 0 };
    this.storageKey = options.persist === true ? `push:${base}/${topic}` : options.persist || null;
    this.cursor = options.after ?? this.#stored() ?? null;
    this.listeners = new Map();
    this.anyListeners = [];
    this.gapListeners = options.onGap ? [options.onGap] : [];
    this.attempt = 0;
    this.connection = null;
    this.timer = null;
    this.closed = false;
    this.#connect();
  }

  /** Calls `callback(data, item)` for each event with this wire name. */
  on(name, callback) {
    if (!this.listeners.has(name)) this.listeners.set(name, []);
    this.listeners.get(name).push(callback);
    return this;
  }

  /** Calls `callback(item)` for every event, whatever its name. */
  onEvent(callback) {
    this.anyListeners.push(callback);
    return this;
  }

  /** Calls `callback(gap)` when events were lost (`push.gap`). */
  onGap(callback) {
    this.gapListeners.push(callback);
    return this;
  }

  /** Cuts the current connection, as a network failure would; the client resumes on its own. */
  disconnect() {
    if (this.closed) return;
    this.#drop();
    this.#retry("disconnected");
  }

  /** Stops for good. */
  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.#drop();
    this.#setStatus("closed");
  }

  #stored() {
    if (!this.storageKey) return null;
    try {
      return sessionStorage.getItem(this.storageKey);
    } catch {
      return null;
    }
  }

  #store() {
    if (!this.storageKey || this.cursor === null) return;
    try {
      sessionStorage.setItem(this.storageKey, this.cursor);
    } catch {
      // Storage full or disabled: resumption then only lasts the page.
    }
  }

  #setStatus(status, detail, error) {
    this.status = status;
    this.options.onStatus?.(status, error ? { transport: this.transport, detail, error } : { transport: this.transport, detail });
  }

  /** The URL of `route` for the current position (used by the transports). */
  url(route, extra = {}) {
    const url = new URL(`${this.base}/${encodeURIComponent(this.topic)}/${route}`);
    // The provider's parameters first: the protocol's own take precedence.
    for (const [key, value] of Object.entries(this.grant?.query ?? {})) url.searchParams.set(key, String(value));
    if (this.cursor !== null) url.searchParams.set("after", this.cursor);
    if (this.options.events?.length) url.searchParams.set("events", this.options.events.join(","));
    for (const [key, value] of Object.entries(extra)) url.searchParams.set(key, String(value));
    return url;
  }

  /** The headers the provider gave for this connection (polls only). */
  headers() {
    return this.grant?.headers ?? {};
  }

  #connect() {
    if (this.closed) return;
    this.ready = false;
    const first = this.attempt === 0 && this.stats.requests === 0;
    this.#setStatus(first ? "connecting" : "reconnecting");
    const token = {};
    this.token = token;
    // Each handler ignores calls from a connection that was since replaced.
    const live = () => this.token === token && !this.closed;
    const auth = this.options.auth;
    if (!auth) {
      this.#open(live);
      return;
    }
    // Asked before every connect and reconnect: credentials once configured
    // are sent every time, never silently dropped.
    const asking = this.asking ?? { reason: this.everLive ? "reconnect" : "connect" };
    this.asking = null;
    const context = { transport: this.transport, reason: asking.reason };
    if (asking.status !== undefined) context.status = asking.status;
    new Promise((resolve) => resolve(auth(context))).then(
      (grant) => {
        if (!live()) return;
        if (grant === null || grant === undefined) {
          this.#fail({ ...context, message: `the credentials provider declined (${asking.detail ?? asking.reason})` });
          return;
        }
        if (grant.headers && Object.keys(grant.headers).length && !HEADERS_ALLOWED.includes(this.transport)) {
          this.#fail({
            reason: "unsupported",
            message: `the ${this.transport} transport cannot send headers: give it a short-lived ticket in \`query\``,
          });
          return;
        }
        this.grant = grant;
        this.#open(live);
      },
      (error) => {
        if (!live()) return;
        // A provider that failed (its server unreachable) is tried again later,
        // for the same reason; the transport is not to blame.
        this.asking = asking;
        this.#retry(`the credentials provider failed: ${error?.message ?? error}`, false);
      },
    );
  }

  #open(live) {
    const open = OPENERS[this.transport];
    this.connection = open(this, {
      request: () => live() && (this.stats.requests += 1),
      bytes: (n) => live() && (this.stats.bytes += n),
      item: (item) => live() && this.#item(item),
      failed: (reason) => {
        if (!live()) return;
        this.#drop();
        this.#retry(reason);
      },
      // The authorization expired (WebSocket close 4401, a poll's 401
      // `authorization expired`): ask for fresh credentials, resume at once.
      expired: () => live() && this.#reauthorize("expired", undefined, "authorization expired"),
      // A 401 or 403 (polls: the only transports whose status a page can read).
      refused: (status, detail) => live() && this.#reauthorize("refused", status, detail),
      // The server ended the response (`push.end`): reopen at once after
      // progress; after the reconnection delay when it brought nothing, so
      // that client and server never spin without progress.
      ended: (progressed) => {
        if (!live()) return;
        this.#drop();
        if (progressed) {
          this.#connect();
          return;
        }
        const min = this.options.retry?.min ?? 250;
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.#connect(), min * (0.5 + Math.random() / 2));
      },
    });
  }

  #drop() {
    this.token = null;
    const connection = this.connection;
    this.connection = null;
    connection?.close();
  }

  /** Ends for good with `error` (status `closed`, `sub.error`). */
  #fail(error) {
    this.error = error;
    this.closed = true;
    clearTimeout(this.timer);
    this.#drop();
    this.#setStatus("closed", error.message, error);
  }

  /**
   * After an expiry or a refusal: the provider decides (asked with the
   * reason and status) whether the subscription goes on, from its cursor. At
   * once after progress; with the backoff when refusals repeat.
   */
  #reauthorize(reason, status, detail) {
    if (this.closed) return;
    this.#drop();
    if (!this.options.auth) {
      const error = { reason, message: detail };
      if (status !== undefined) error.status = status;
      this.#fail(error);
      return;
    }
    this.asking = { reason, status, detail };
    const delay = this.attempt === 0 ? 0 : this.#backoff();
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.#setStatus("reconnecting", detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#connect(), delay);
  }

  #backoff() {
    const retry = this.options.retry ?? {};
    const min = retry.min ?? 250;
    const max = retry.max ?? 30000;
    return Math.min(max, min * 2 ** this.attempt) * (0.5 + Math.random() / 2);
  }

  #retry(reason, fallback = true) {
    if (this.closed) return;
    // `auto` moves on when a transport fails before it ever said `push.ready`.
    if (fallback && this.mode === "auto" && !this.ready) {
      const next = AUTO_ORDER.indexOf(this.transport) + 1;
      if (next < AUTO_ORDER.length) {
        this.transport = AUTO_ORDER[next];
        this.#setStatus("reconnecting", `${reason}; falling back to ${this.transport}`);
        this.#connect();
        return;
      }
    }
    const delay = this.#backoff();
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.#setStatus("reconnecting", reason);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#connect(), delay);
  }

  #item(item) {
    switch (item.event) {
      case "push.ready":
        this.ready = true;
        this.everLive = true;
        this.attempt = 0;
        this.cursor = item.cursor;
        this.#store();
        this.#setStatus("live");
        this.options.onReady?.(item.cursor);
        return;
      case "push.gap":
        this.cursor = item.cursor;
        this.#store();
        this.stats.gaps += 1;
        for (const callback of this.gapListeners) callback(item.data, item);
        return;
      case "push.end":
        this.cursor = item.cursor;
        this.#store();
        return;
      case "push.expired":
        // Nothing at or after the expiry was delivered: resume from here.
        this.cursor = item.cursor;
        this.#store();
        this.#reauthorize("expired", undefined, "authorization expired");
        return;
      default:
        if (item.event.startsWith("push.")) return; // unknown control events are ignored
        this.cursor = item.cursor;
        this.#store();
        this.stats.events += 1;
        for (const callback of this.anyListeners) callback(item);
        for (const callback of this.listeners.get(item.event) ?? []) callback(item.data, item);
    }
  }

  /** After a poll answer: the next position, which may be past filtered-out events. */
  advance(cursor) {
    this.cursor = cursor;
    this.#store();
  }
}

function openWebSocket(sub, on) {
  const url = sub.url("ws");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  on.request();
  const socket = new WebSocket(url);
  socket.onmessage = (message) => {
    on.bytes(byteLength(message.data));
    on.item(JSON.parse(message.data));
  };
  // 4401: the authorization expired (after `push.expired`, which already
  // asked for fresh credentials; alone if that message was lost).
  socket.onclose = (close) => (close.code === 4401 ? on.expired() : on.failed(`websocket closed (${close.code})`));
  return { close: () => socket.close() };
}

function openSse(sub, on) {
  on.request();
  const source = new EventSource(sub.url("sse"), { withCredentials: sub.credentials === "include" });
  on.bytes(byteLength("retry: 2000\n\n"));
  const handle = (message) => {
    const id = message.lastEventId;
    on.bytes(byteLength(`id: ${id}\nevent: ${message.type}\ndata: ${message.data}\n\n`));
    on.item({ cursor: id, event: message.type, data: JSON.parse(message.data) });
  };
  for (const name of ["push.ready", "push.gap", "push.expired", ...NAMES]) source.addEventListener(name, handle);
  // EventSource would reconnect by itself, from its own URL and without our
  // backoff; reconnecting here resumes from the cursor and counts the request.
  source.onerror = () => on.failed("event stream failed");
  return { close: () => source.close() };
}

function openPoll(route, pause) {
  return (sub, on) => {
    const abort = new AbortController();
    let first = true;
    const loop = async () => {
      while (!abort.signal.aborted) {
        // The first long poll of a connection answers at once (`timeout=0`), so
        // the subscription is known to be live without waiting for an event.
        const timeout = first ? 0 : sub.options.longPollTimeout ?? 25;
        const extra = route === "long-poll" ? { timeout } : {};
        on.request();
        const response = await fetch(sub.url(route, extra), {
          signal: abort.signal,
          cache: "no-store",
          credentials: sub.credentials,
          headers: sub.headers(),
        });
        const text = await response.text();
        on.bytes(byteLength(text));
        if (response.status === 401 && text === "authorization expired") {
          on.expired();
          return;
        }
        if (response.status === 401 || response.status === 403) {
          on.refused(response.status, `${route} answered ${response.status}: ${text.slice(0, 200)}`);
          return;
        }
        if (!response.ok) throw new Error(`${route} answered ${response.status}`);
        const answer = JSON.parse(text);
        if (first) {
          // Polls have no `push.ready`: the first answer plays its part.
          first = false;
          on.item({ cursor: sub.cursor ?? answer.cursor, event: "push.ready", data: {} });
        }
        for (const item of answer.events) on.item(item);
        sub.advance(answer.cursor);
        if (!answer.more && pause > 0) await sleep(sub.options.pollInterval ?? pause, abort.signal);
      }
    };
    loop().catch((error) => {
      if (!abort.signal.aborted) on.failed(String(error.message ?? error));
    });
    return { close: () => abort.abort() };
  };
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function openIframe(sub, on) {
  const extra = sub.options.iframeOrigin ? { origin: sub.options.iframeOrigin } : {};
  const url = sub.url("iframe", extra);
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.title = "push";
  let ended = false;
  let first = true;
  // An event or a gap arrived since `push.ready`.
  let progressed = false;
  const listener = (message) => {
    if (message.source !== frame.contentWindow || message.origin !== url.origin) return;
    const item = message.data;
    // The prelude (about 1 KiB of padding and a script) precedes the first item.
    on.bytes(byteLength(`<script>m(${JSON.stringify(item)})</script>\n`) + (first ? 1200 : 0));
    first = false;
    if (item.event === "push.end" || item.event === "push.expired") ended = true;
    else if (item.event !== "push.ready") progressed = true;
    on.item(item);
    if (ended) on.ended(progressed);
  };
  window.addEventListener("message", listener);
  // The document finishing to load means the response ended: without
  // `push.end`, the connection was lost (or refused). The frame's last
  // messages may still be queued behind the load event: let them arrive first.
  frame.addEventListener("load", () => {
    setTimeout(() => {
      if (!ended) on.failed("frame ended");
    }, 100);
  });
  // A frame added before the page's load event would hold that event (and
  // the browser's loading indicator) until the frame ends: wait for it.
  let closed = false;
  const start = () => {
    if (closed) return;
    on.request();
    frame.src = url.href;
    document.body.append(frame);
  };
  if (document.readyState === "complete") start();
  else window.addEventListener("load", start, { once: true });
  return {
    close: () => {
      closed = true;
      window.removeEventListener("message", listener);
      frame.remove();
    },
  };
}

const OPENERS = {
  websocket: openWebSocket,
  sse: openSse,
  "long-poll": openPoll("long-poll", 0),
  poll: openPoll("poll", 1000),
  iframe: openIframe,
};

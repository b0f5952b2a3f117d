// The browser client of a push channel, served at `{base}/client.js`.
// One API over the five transports of docs/protocol.md; no dependencies.
//
//   import { subscribe } from "/chat/client.js";
//   const sub = subscribe("lobby", { transport: "auto", persist: true });
//   sub.on("message", (data, item) => console.log(item.cursor, data));
//   sub.onGap((gap) => console.warn("lost", gap.missed));
//
// `auto` tries websocket, sse, long-poll, then poll, leaving a transport only
// while it has never worked on this page; it reconnects with backoff, and on a
// lesser transport probes the better ones and upgrades without loss.
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

/** An option's number (`fallback` when absent): at least `min`, whole if `whole`, or an error naming it. */
function number(name, value, fallback, min, whole = false) {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || value < min || (whole && !Number.isInteger(value))) {
    throw new Error(`${name} must be a ${whole ? "whole " : ""}number of at least ${min}, not ${JSON.stringify(value)}`);
  }
  return value;
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
    const retry = options.retry ?? {};
    this.retry = {
      min: number("retry.min", retry.min, 250, 1),
      max: number("retry.max", retry.max, 30000, 1),
      maxRetryAfter: number("retry.maxRetryAfter", retry.maxRetryAfter, 300000, 0),
    };
    this.fallbackAfter = number("fallbackAfter", options.fallbackAfter, 3, 1, true);
    this.probeInterval = number("probeInterval", options.probeInterval, 10000, 0);
    // Why the provider is asked next (set by a refusal or an expiry).
    this.asking = null;
    this.error = null;
    this.status = "connecting";
    this.stats = { requests: 0, bytes: 0, events: 0, gaps: 0, reconnects: 0, fallbacks: 0, probes: 0, upgrades: 0 };
    this.storageKey = options.persist === true ? `push:${base}/${topic}` : options.persist || null;
    this.cursor = options.after ?? this.#stored() ?? null;
    this.listeners = new Map();
    this.anyListeners = [];
    this.gapListeners = options.onGap ? [options.onGap] : [];
    // Failed attempts in a row since the last `push.ready` (the backoff's exponent).
    this.attempt = 0;
    // `auto`: the transports that delivered `push.ready` on this page (never
    // left again), and the failed attempts in a row on the current one while
    // it has not.
    this.worked = new Set();
    this.failures = 0;
    // The connection in use, and the better transport being tried alongside it.
    this.main = null;
    this.probe = null;
    this.probeTimer = null;
    // After an upgrade: the positions the replaced connection reached while
    // the new one was being opened (from the cursor before them), skipped
    // when the new one brings them again.
    this.seen = null;
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

  #moveTo(cursor) {
    this.cursor = cursor;
    if (!this.storageKey || cursor === null) return;
    try {
      sessionStorage.setItem(this.storageKey, cursor);
    } catch {
      // Storage full or disabled: resumption then only lasts the page.
    }
  }

  #setStatus(status, detail, error) {
    this.status = status;
    this.options.onStatus?.(status, error ? { transport: this.transport, detail, error } : { transport: this.transport, detail });
  }

  /**
   * One connection attempt on `transport`: what its opener reads (the URL for
   * the current position, the provider's grant for this connection) and,
   * once opened, how to close it.
   */
  #link(transport) {
    const sub = this;
    const link = {
      transport,
      grant: null,
      connection: null,
      options: this.options,
      credentials: this.credentials,
      get cursor() {
        return sub.cursor;
      },
      url(route, extra = {}) {
        const url = new URL(`${sub.base}/${encodeURIComponent(sub.topic)}/${route}`);
        // The provider's parameters first: the protocol's own take precedence.
        for (const [key, value] of Object.entries(link.grant?.query ?? {})) url.searchParams.set(key, String(value));
        if (sub.cursor !== null) url.searchParams.set("after", sub.cursor);
        if (sub.options.events?.length) url.searchParams.set("events", sub.options.events.join(","));
        for (const [key, value] of Object.entries(extra)) url.searchParams.set(key, String(value));
        return url;
      },
      // The headers the provider gave for this connection (polls only).
      headers: () => link.grant?.headers ?? {},
    };
    return link;
  }

  /**
   * Asks the credentials provider for `link`: resolves with the grant,
   * `null` when it declined, or a message when the grant cannot be used on
   * this transport; rejects when the provider failed.
   */
  #authorize(link, context) {
    const auth = this.options.auth;
    return new Promise((resolve) => resolve(auth(context))).then((grant) => {
      if (grant === null || grant === undefined) return null;
      if (grant.headers && Object.keys(grant.headers).length && !HEADERS_ALLOWED.includes(link.transport)) {
        return `the ${link.transport} transport cannot send headers: give it a short-lived ticket in \`query\``;
      }
      return grant;
    });
  }

  #connect() {
    if (this.closed) return;
    const first = this.attempt === 0 && this.stats.requests === 0;
    this.#setStatus(first ? "connecting" : "reconnecting");
    const link = this.#link(this.transport);
    this.main = link;
    // A new connection starts from the cursor: it repeats nothing.
    this.seen = null;
    if (!this.options.auth) {
      this.#open(link);
      return;
    }
    // Asked before every connect and reconnect: credentials once configured
    // are sent every time, never silently dropped.
    const asking = this.asking ?? { reason: this.everLive ? "reconnect" : "connect" };
    this.asking = null;
    const context = { transport: link.transport, reason: asking.reason };
    if (asking.status !== undefined) context.status = asking.status;
    this.#authorize(link, context).then(
      (grant) => {
        if (this.main !== link || this.closed) return;
        if (grant === null) {
          this.#fail({ ...context, message: `the credentials provider declined (${asking.detail ?? asking.reason})` });
        } else if (typeof grant === "string") {
          this.#fail({ reason: "unsupported", message: grant });
        } else {
          link.grant = grant;
          this.#open(link);
        }
      },
      (error) => {
        if (this.main !== link || this.closed) return;
        // A provider that failed (its server unreachable) is tried again later,
        // for the same reason; the transport is not to blame.
        this.asking = asking;
        this.main = null;
        this.#retry(`the credentials provider failed: ${error?.message ?? error}`, 0, false);
      },
    );
  }

  /** Opens `link`, the main connection or a probe; its calls count only while it is one of them. */
  #open(link) {
    const live = () => !this.closed && (this.main === link || this.probe === link);
    const probing = () => this.probe === link;
    link.connection = OPENERS[link.transport](link, {
      request: () => live() && (this.stats.requests += 1),
      bytes: (n) => live() && (this.stats.bytes += n),
      item: (item) => {
        if (!live()) return;
        if (!probing()) this.#item(item);
        else if (item.event === "push.ready") this.#upgrade(link);
      },
      // A poll answer's next position, which may be past filtered-out events.
      advance: (cursor) => live() && !probing() && this.#advance(cursor),
      // `retryAfter`: the server's `Retry-After` in ms (polls only: the
      // other transports cannot read the status of a refused connection).
      failed: (reason, retryAfter = 0) => {
        if (!live()) return;
        if (probing()) {
          this.#probeFailed(retryAfter);
          return;
        }
        this.#drop();
        this.#retry(reason, retryAfter);
      },
      // The authorization expired (WebSocket close 4401, a poll's 401
      // `authorization expired`): ask for fresh credentials, resume at once.
      expired: () => {
        if (!live()) return;
        if (probing()) this.#probeFailed(0);
        else this.#reauthorize("expired", undefined, "authorization expired");
      },
      // A 401 or 403 (polls: the only transports whose status a page can read).
      refused: (status, detail) => {
        if (!live()) return;
        if (probing()) this.#probeFailed(0);
        else this.#reauthorize("refused", status, detail);
      },
      // The server ended the response (`push.end`): reopen at once after
      // progress; after the reconnection delay when it brought nothing, so
      // that client and server never spin without progress.
      ended: (progressed) => {
        if (!live()) return;
        if (probing()) {
          this.#probeFailed(0);
          return;
        }
        this.#drop();
        if (progressed) {
          this.#connect();
          return;
        }
        clearTimeout(this.timer);
        this.timer = setTimeout(() => this.#connect(), this.retry.min * (0.5 + Math.random() / 2));
      },
    });
  }

  /** Closes the main connection and any probe. */
  #drop() {
    this.#stopProbing();
    const link = this.main;
    this.main = null;
    link?.connection?.close();
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

  /** `retry.min` doubling with each failed attempt up to `retry.max`, times a random 0.5–1. */
  #backoff() {
    return Math.min(this.retry.max, this.retry.min * 2 ** Math.min(this.attempt, 30)) * (0.5 + Math.random() / 2);
  }

  /**
   * The main connection failed or dropped: connect again after the backoff
   * (at least `retryAfter`). `auto` moves on to the next transport after
   * `fallbackAfter` failed attempts in a row on one that never delivered
   * `push.ready` on this page, and never leaves one that did.
   */
  #retry(reason, retryAfter = 0, fallback = true) {
    if (this.closed) return;
    this.#stopProbing();
    let detail = reason;
    if (fallback && this.mode === "auto" && !this.worked.has(this.transport)) {
      this.failures += 1;
      if (this.failures >= this.fallbackAfter) {
        this.failures = 0;
        const from = this.transport;
        // After short polling, start over: a server that was down at first
        // is still reached over WebSocket when it comes back.
        this.transport = AUTO_ORDER[(AUTO_ORDER.indexOf(from) + 1) % AUTO_ORDER.length];
        this.stats.fallbacks += 1;
        detail = `${reason}; falling back from ${from} to ${this.transport}`;
      }
    }
    // (setTimeout takes at most 2^31 − 1 ms.)
    const delay = Math.min(Math.max(this.#backoff(), Math.min(retryAfter, this.retry.maxRetryAfter)), 2 ** 31 - 1);
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.#setStatus("reconnecting", detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.#connect(), delay);
  }

  /** The transports `auto` would rather use than the current one. */
  #better() {
    if (this.mode !== "auto") return [];
    return AUTO_ORDER.slice(0, AUTO_ORDER.indexOf(this.transport));
  }

  /** Tries the better transports again in `delay` ms (`probeInterval`, 0: never). */
  #scheduleProbe(delay = this.probeInterval) {
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    if (this.closed || this.probeInterval === 0 || this.#better().length === 0) return;
    this.probeTimer = setTimeout(() => this.#startProbe(0), Math.min(Math.max(delay, this.probeInterval), 2 ** 31 - 1));
  }

  /**
   * Opens the `index`th better transport alongside the live connection,
   * from the current cursor. The live one goes on delivering meanwhile.
   */
  #startProbe(index) {
    this.probeTimer = null;
    const better = this.#better();
    if (this.closed || this.main === null || this.status !== "live" || index >= better.length) {
      this.#scheduleProbe();
      return;
    }
    const link = this.#link(better[index]);
    link.index = index;
    // Positions the live connection reaches while this one opens.
    link.seen = new Set();
    this.probe = link;
    this.stats.probes += 1;
    if (!this.options.auth) {
      this.#open(link);
      return;
    }
    this.#authorize(link, { transport: link.transport, reason: "upgrade" }).then(
      (grant) => {
        if (this.probe !== link || this.closed) return;
        if (grant === null || typeof grant === "string") {
          // Declined or unusable: no upgrade to this one now; the live
          // connection is not affected.
          this.#probeFailed(0);
          return;
        }
        link.grant = grant;
        this.#open(link);
      },
      () => this.probe === link && this.#probeFailed(0),
    );
  }

  /** The probe failed: try the next better transport, or all again later. */
  #probeFailed(retryAfter) {
    const link = this.probe;
    this.probe = null;
    link?.connection?.close();
    if (this.closed || this.main === null) return;
    const next = (link?.index ?? 0) + 1;
    if (retryAfter === 0 && next < this.#better().length) {
      this.#startProbe(next);
      return;
    }
    this.#scheduleProbe(Math.min(retryAfter, this.retry.maxRetryAfter));
  }

  #stopProbing() {
    clearTimeout(this.probeTimer);
    this.probeTimer = null;
    const link = this.probe;
    this.probe = null;
    link?.connection?.close();
  }

  /**
   * The probe said `push.ready`: it becomes the connection and the old one
   * is closed. It started from the cursor of when it was opened; what the
   * old one delivered since is skipped when it comes again.
   */
  #upgrade(link) {
    const old = this.main;
    const from = this.transport;
    this.probe = null;
    this.main = link;
    this.seen = link.seen.size ? link.seen : null;
    old?.connection?.close();
    this.transport = link.transport;
    this.worked.add(link.transport);
    this.failures = 0;
    this.attempt = 0;
    this.stats.upgrades += 1;
    this.#setStatus("live", `upgraded from ${from} to ${link.transport}`);
    this.options.onReady?.(this.cursor);
    this.#scheduleProbe();
  }

  /**
   * Whether a position brought by the main connection was already reached
   * (the replaced connection delivered it before an upgrade): then it is
   * skipped. The first new one ends the overlap, as items come in order.
   */
  #repeated(cursor) {
    if (this.seen === null) return false;
    if (this.seen.has(cursor)) return true;
    this.seen = null;
    return false;
  }

  /** The main connection reached `cursor`: a probe remembers it. */
  #reached(cursor) {
    this.probe?.seen?.add(cursor);
    this.#moveTo(cursor);
  }

  #advance(cursor) {
    if (this.#repeated(cursor)) return;
    this.#reached(cursor);
  }

  #item(item) {
    if (item.event === "push.ready") {
      this.everLive = true;
      this.worked.add(this.transport);
      this.failures = 0;
      this.attempt = 0;
      this.#moveTo(item.cursor);
      this.#setStatus("live");
      this.options.onReady?.(item.cursor);
      this.#scheduleProbe();
      return;
    }
    if (this.#repeated(item.cursor)) return;
    switch (item.event) {
      case "push.gap":
        this.#reached(item.cursor);
        this.stats.gaps += 1;
        for (const callback of this.gapListeners) callback(item.data, item);
        return;
      case "push.end":
        this.#reached(item.cursor);
        return;
      case "push.expired":
        // Nothing at or after the expiry was delivered: resume from here.
        this.#moveTo(item.cursor);
        this.#reauthorize("expired", undefined, "authorization expired");
        return;
      default:
        if (item.event.startsWith("push.")) return; // unknown control events are ignored
        this.#reached(item.cursor);
        this.stats.events += 1;
        for (const callback of this.anyListeners) callback(item);
        for (const callback of this.listeners.get(item.event) ?? []) callback(item.data, item);
    }
  }
}

/** `Retry-After` (seconds or an HTTP date) in ms; 0 when absent or unreadable. */
function retryAfter(value) {
  if (value === null) return 0;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? 0 : Math.max(0, date - Date.now());
}

// Each opener gets the connection's `link` (its URL for the current position,
// headers, options) and `on`, the subscription's callbacks.

function openWebSocket(link, on) {
  const url = link.url("ws");
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

function openSse(link, on) {
  on.request();
  const source = new EventSource(link.url("sse"), { withCredentials: link.credentials === "include" });
  on.bytes(byteLength("retry: 2000\n\n"));
  const handle = (message) => {
    const id = message.lastEventId;
    on.bytes(byteLength(`id: ${id}\nevent: ${message.type}\ndata: ${message.data}\n\n`));
    on.item({ cursor: id, event: message.type, data: JSON.parse(message.data) });
  };
  for (const name of ["push.ready", "push.gap", "push.expired", ...NAMES]) source.addEventListener(name, handle);
  // EventSource would reconnect by itself, from its own URL and without our
  // backoff; reconnecting here resumes from the cursor and counts the request.
  // A refusal (a 503 with `Retry-After` included) looks the same: a page
  // cannot read the status of an EventSource or a WebSocket handshake.
  source.onerror = () => on.failed("event stream failed");
  return { close: () => source.close() };
}

function openPoll(route, pause) {
  return (link, on) => {
    const abort = new AbortController();
    let first = true;
    const loop = async () => {
      while (!abort.signal.aborted) {
        // The first long poll of a connection answers at once (`timeout=0`), so
        // the subscription is known to be live without waiting for an event.
        const timeout = first ? 0 : link.options.longPollTimeout ?? 25;
        const extra = route === "long-poll" ? { timeout } : {};
        on.request();
        const response = await fetch(link.url(route, extra), {
          signal: abort.signal,
          cache: "no-store",
          credentials: link.credentials,
          headers: link.headers(),
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
        if (response.status === 503 || response.status === 429) {
          // Busy (a limit reached, shutting down): not before `Retry-After`.
          on.failed(`${route} answered ${response.status}`, retryAfter(response.headers.get("retry-after")));
          return;
        }
        if (!response.ok) throw new Error(`${route} answered ${response.status}`);
        const answer = JSON.parse(text);
        if (first) {
          // Polls have no `push.ready`: the first answer plays its part.
          first = false;
          on.item({ cursor: link.cursor ?? answer.cursor, event: "push.ready", data: {} });
        }
        for (const item of answer.events) on.item(item);
        on.advance(answer.cursor);
        if (!answer.more && pause > 0) await sleep(link.options.pollInterval ?? pause, abort.signal);
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

function openIframe(link, on) {
  const extra = link.options.iframeOrigin ? { origin: link.options.iframeOrigin } : {};
  const url = link.url("iframe", extra);
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

/** A transport of docs/protocol.md, named as in `subscribe`'s `transport` option. */
export type Transport = "websocket" | "sse" | "long-poll" | "poll" | "iframe";

/** The channel's wire names. */
export declare const NAMES: readonly (keyof Events & string)[];
/** Every transport; `auto` tries websocket, sse, long-poll, then poll. */
export declare const TRANSPORTS: readonly Transport[];

/** One event as it arrives: its cursor, wire name and payload. */
export type Item<K extends keyof Events = keyof Events> = {
  [N in K]: { cursor: string; event: N; data: Events[N] };
}[K];

/** Events between `from` and `to` will never be delivered; `missed` is `null` across epochs. */
export interface Gap {
  from: string;
  to: string;
  missed: number | null;
}

/**
 * Whether the browser attaches the user's cookies (as `fetch` names it): the
 * polls' `fetch` `credentials` and `EventSource`'s `withCredentials`
 * (`"include"`; `"omit"` is `"same-origin"` there, which is all an
 * `EventSource` can do). A WebSocket handshake and the forever frame follow
 * the browser's own cookie rules (`SameSite`) whatever this says. Cookies to
 * another origin need that origin in the server's credentials list
 * (`OriginPolicy::allow_credentials`); the server withholds them otherwise.
 */
export type Credentials = "omit" | "same-origin" | "include";

/** Why the credentials provider is asked. */
export type AuthReason =
  /** The first connection. */
  | "connect"
  /** Any reconnection after a network failure or a server's `push.end`. */
  | "reconnect"
  /** The authorization expired (`push.expired`, WebSocket close 4401, a poll's 401 `authorization expired`). */
  | "expired"
  /** A 401 or 403 answer (`status`); only polls can see one: EventSource, WebSocket and frames hide the status from pages. */
  | "refused"
  /**
   * `auto` tries a better transport alongside the live one (see
   * `probeInterval`). Declining (or failing) skips this upgrade; the live
   * connection goes on.
   */
  | "upgrade";

/** What the credentials provider is told. */
export interface AuthContext {
  /** The transport about to connect: only `long-poll` and `poll` can send `headers`. */
  transport: Transport;
  reason: AuthReason;
  /** The HTTP status, for `refused`. */
  status?: number;
}

/**
 * What to send with the next connection. `headers` (e.g. `Authorization:
 * Bearer …`) only on polls; elsewhere a `query` ticket: obtain it from your
 * server just before (the provider is called before every connect),
 * valid for seconds, single-use if you can. Never a long-lived secret in a
 * URL: proxies and logs keep URLs.
 */
export interface AuthGrant {
  headers?: Record<string, string>;
  query?: Record<string, string>;
}

/**
 * Called before every connect and reconnect. `null` or `undefined` declines:
 * the subscription then closes with an `error` (it never goes on without
 * the credentials once configured). A rejected promise is retried later.
 */
export type AuthProvider = (context: AuthContext) => AuthGrant | null | undefined | Promise<AuthGrant | null | undefined>;

/** Why a subscription closed by itself (status `closed`). */
export interface SubscriptionError {
  /** `expired` or `refused` without a provider, the provider's reason when it declined, or `unsupported` (headers for a transport that cannot send them). */
  reason: Exclude<AuthReason, "upgrade"> | "unsupported";
  /** The HTTP status of a refusal, when the transport could see it. */
  status?: number;
  message: string;
}

/** Where a subscription stands. */
export type Status = "connecting" | "live" | "reconnecting" | "closed";

/** What a subscription has cost so far (bytes are response bodies, without HTTP headers). */
export interface Stats {
  requests: number;
  bytes: number;
  events: number;
  gaps: number;
  reconnects: number;
  /** `auto` moved on to the next transport (after `fallbackAfter` failed attempts on one that never worked). */
  fallbacks: number;
  /** Better transports tried alongside the live one (`probeInterval`). */
  probes: number;
  /** Probes that worked: the subscription moved to the better transport. */
  upgrades: number;
}

export interface SubscribeOptions<K extends keyof Events = keyof Events> {
  /**
   * `auto` (default) tries websocket, then sse, long-poll and poll; `iframe`
   * only when asked. It leaves a transport only when that one never
   * delivered `push.ready` on this page, after `fallbackAfter` failed
   * attempts in a row (after poll it starts over at websocket); one that
   * worked once is kept through any outage, reconnecting with the backoff.
   * On a lesser transport it tries the better ones every `probeInterval`
   * and moves to the first that works, without losing or repeating an event.
   */
  transport?: Transport | "auto";
  /** Start after this cursor (default: the stored cursor, else "from now"). */
  after?: string;
  /** Only these events (control events always arrive). */
  events?: K[];
  /** Keep the cursor in `sessionStorage` (under this key, or a key made of base and topic for `true`), so a reload resumes. */
  persist?: boolean | string;
  /** The channel's base URL; default: where `client.js` was loaded from. */
  base?: string;
  /**
   * Reconnect delay in ms: `min` doubling with each failed attempt up to
   * `max`, each times a random 0.5–1 (default 250 and 30000); back to `min`
   * once a connection says `push.ready`. A forever frame the server ended
   * (`push.end`) is reopened at once when it brought events, after `min`
   * when it brought nothing. A poll answered `503` or `429` waits at least
   * its `Retry-After` (capped at `maxRetryAfter`, default 300000); an
   * EventSource or a WebSocket refused that way cannot tell (a page cannot
   * read their status) and just backs off.
   */
  retry?: { min?: number; max?: number; maxRetryAfter?: number };
  /** `auto`: failed attempts in a row on a transport that never worked before trying the next (default 3). */
  fallbackAfter?: number;
  /**
   * `auto` on a lesser transport: how often, in ms, to try the better ones
   * (default 10000; 0: never). The better one is opened alongside from the
   * current cursor; once it says `push.ready` the old one is closed.
   */
  probeInterval?: number;
  /** Pause between short polls in ms (default 1000). */
  pollInterval?: number;
  /** How long the server may hold a long poll, in seconds (default 25). */
  longPollTimeout?: number;
  /** Forever frame: the allowed origin the frame posts to (`origin=`). */
  iframeOrigin?: string;
  /** Cookies on the requests (default `"same-origin"`). */
  credentials?: Credentials;
  /** The credentials provider, asked before every connect and reconnect, and after an expiry or a refusal. */
  auth?: AuthProvider;
  onGap?: (gap: Gap, item: { cursor: string; event: "push.gap"; data: Gap }) => void;
  onStatus?: (status: Status, info: { transport: Transport; detail?: string; error?: SubscriptionError }) => void;
  onReady?: (cursor: string) => void;
}

export declare class Subscription<K extends keyof Events = keyof Events> {
  readonly topic: string;
  /** The transport in use (changes when `auto` falls back or upgrades). */
  readonly transport: Transport;
  readonly status: Status;
  /** The cursor of the last item received, to resume from. */
  readonly cursor: string | null;
  readonly stats: Readonly<Stats>;
  /** Why it closed by itself, if it did (`null` while going, or after `close()`). */
  readonly error: SubscriptionError | null;
  /** Calls `callback` for each event with wire name `name`. */
  on<N extends K>(name: N, callback: (data: Events[N], item: Item<N>) => void): this;
  /** Calls `callback` for every event. */
  onEvent(callback: (item: Item<K>) => void): this;
  /** Calls `callback` when events were lost. */
  onGap(callback: (gap: Gap) => void): this;
  /** Cuts the connection as a network failure would; the subscription resumes by itself. */
  disconnect(): void;
  /** Stops for good. */
  close(): void;
}

/** Subscribes to `topic`. */
export declare function subscribe<K extends keyof Events = keyof Events>(
  topic: string,
  options?: SubscribeOptions<K>,
): Subscription<K>;

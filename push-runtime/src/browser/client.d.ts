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

/** Where a subscription stands. */
export type Status = "connecting" | "live" | "reconnecting" | "closed";

/** What a subscription has cost so far (bytes are response bodies, without HTTP headers). */
export interface Stats {
  requests: number;
  bytes: number;
  events: number;
  gaps: number;
  reconnects: number;
}

export interface SubscribeOptions<K extends keyof Events = keyof Events> {
  /** `auto` (default) falls back websocket → sse → long-poll → poll; `iframe` only when asked. */
  transport?: Transport | "auto";
  /** Start after this cursor (default: the stored cursor, else "from now"). */
  after?: string;
  /** Only these events (control events always arrive). */
  events?: K[];
  /** Keep the cursor in `sessionStorage` (under this key, or a key made of base and topic for `true`), so a reload resumes. */
  persist?: boolean | string;
  /** The channel's base URL; default: where `client.js` was loaded from. */
  base?: string;
  /** Reconnect delay in ms: `min` doubling up to `max`, each with jitter (default 250 and 30000). A forever frame the server ended (`push.end`) is reopened at once when it brought events, after `min` when it brought nothing. */
  retry?: { min?: number; max?: number };
  /** Pause between short polls in ms (default 1000). */
  pollInterval?: number;
  /** How long the server may hold a long poll, in seconds (default 25). */
  longPollTimeout?: number;
  /** Forever frame: the allowed origin the frame posts to (`origin=`). */
  iframeOrigin?: string;
  onGap?: (gap: Gap, item: { cursor: string; event: "push.gap"; data: Gap }) => void;
  onStatus?: (status: Status, info: { transport: Transport; detail?: string }) => void;
  onReady?: (cursor: string) => void;
}

export declare class Subscription<K extends keyof Events = keyof Events> {
  readonly topic: string;
  /** The transport in use (changes while `auto` falls back). */
  readonly transport: Transport;
  readonly status: Status;
  /** The cursor of the last item received, to resume from. */
  readonly cursor: string | null;
  readonly stats: Readonly<Stats>;
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

// Typings of herald.js, the ES module. herald.umd.js (a classic script) defines the global `Herald`:
// the same class, with `Herald.publish` and `Herald.TRANSPORTS` attached.

/** A way to reach the server, tried in the order of `transports`. */
export type TransportName = 'eventsource' | 'websocket' | 'longpolling';

/**
 * `idle`: not started or no channel; `connecting`: a connection is being opened; `open`: subscribed;
 * `reconnecting`: the connection dropped or failed, the next attempt comes after `delay` ms;
 * `closed`: close() was called (or no transport is available in this browser).
 */
export type HeraldStatus = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

/** One message, as published. */
export interface HeraldMessage {
  /** The message as published. */
  text: string;
  /** The channel it was published to (null only when the location's template does not say). */
  channel: string | null;
  /** Per-channel sequence number (from 1). */
  id: number | null;
  /** The publisher's `Event-Id` header, if any. */
  eventId: string | null;
  /** The publisher's `Event-Type` header, if any. */
  eventType: string | null;
  /** Publish time as an HTTP date (whole seconds), e.g. "Sat, 28 Nov 2026 16:15:28 GMT". */
  time: string | null;
  /** Orders messages published within the same second. */
  tag: number | null;
  /** The transport that delivered it. */
  transport: TransportName;
}

export interface HeraldStatusEvent {
  status: HeraldStatus;
  /** The transport in use (or about to be tried). */
  transport: TransportName | null;
  /** Consecutive failed attempts so far (0 once a connection has been stable). */
  attempt: number;
  /** Milliseconds until the next attempt (`reconnecting` only). */
  delay?: number;
}

export interface HeraldErrorEvent {
  error: Error;
  transport: TransportName | null;
}

export interface HeraldDeletedEvent {
  /** The channel that was deleted (the client stays subscribed: it is joined again at once). */
  channel: string;
  /** The channel-deleted message. */
  text: string;
}

export interface HeraldEventMap {
  message: HeraldMessage;
  status: HeraldStatusEvent;
  error: HeraldErrorEvent;
  deleted: HeraldDeletedEvent;
}

export interface BackoffOptions {
  /** First delay in ms (default 500). */
  initial?: number;
  /** Longest delay in ms (default 15000). */
  max?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /** Fraction of each delay that is random, 0..1 (default 0.5). */
  jitter?: number;
}

export interface HeraldPaths {
  /** Default 'ev/'. */
  eventsource?: string;
  /** Default 'ws/'. */
  websocket?: string;
  /** Default 'lp/'. */
  longpolling?: string;
  /** Default 'point/'; null when the server has no such location (join points are then unknown). */
  point?: string | null;
}

export interface HeraldOptions {
  /** Base URL of the client locations, relative to the page (default '/client/'). */
  url?: string;
  /** Channels to subscribe to. */
  channels?: string[];
  /** Order in which transports are tried (default ['eventsource', 'websocket', 'longpolling']). */
  transports?: TransportName[];
  /** Location paths under `url`. */
  paths?: HeraldPaths;
  /** Query arguments added to every request, e.g. `{ token: jwt }` for a location that wants a signed token. */
  params?: Record<string, string>;
  backoff?: BackoffOptions;
  /** When joining a channel, first deliver its last N stored messages (default 0). */
  backtrack?: number;
  /**
   * Event-Type values published on these channels: EventSource only hands messages that carry an
   * Event-Type to listeners of that very type, so they must be known in advance.
   */
  eventTypes?: string[];
  /** Ms an EventSource or WebSocket may take to open before it counts as failed (default 10000). */
  connectTimeout?: number;
  /** Ms a connection must stay open before the backoff starts over (default 3000). */
  stableAfter?: number;
  /** Connect at once (default true); else call connect(). */
  autoConnect?: boolean;
  /** EventSource constructor to use (default the global one; null to disable). */
  EventSource?: unknown;
  /** WebSocket constructor to use (default the global one; null to disable). */
  WebSocket?: unknown;
  /** fetch function to use (default the global one). */
  fetch?: typeof fetch;
}

export interface PublishOptions {
  /** Sent as the Event-Id header. */
  eventId?: string;
  /** Sent as the Event-Type header. */
  eventType?: string;
  /** Sent as the Idempotency-Key header: a repeated call with the same key publishes at most once per channel. */
  idempotencyKey?: string;
  fetch?: typeof fetch;
}

/** All transports, in the default order. */
export const TRANSPORTS: TransportName[];

/**
 * Publishes `text` to `channel` (several: 'a/b') through a publisher location such as '/pub';
 * resolves to the channel info the server answers with, rejects with the server's explanation.
 */
export function publish(url: string, channel: string, text: string, options?: PublishOptions): Promise<any>;

/**
 * A subscriber to Herald channels over EventSource, WebSocket or long-polling, with fallback,
 * reconnection with backoff and jitter, and exact resume by (time, tag).
 */
export class Herald {
  constructor(options?: HeraldOptions);
  /** The connection status. */
  readonly status: HeraldStatus;
  /** The transport in use (or being tried), null when not connected. */
  readonly transport: TransportName | null;
  /** The channels subscribed to. */
  readonly channels: string[];
  /** The transport order. */
  readonly transports: TransportName[];
  on<K extends keyof HeraldEventMap>(type: K, listener: (event: HeraldEventMap[K]) => void): this;
  off<K extends keyof HeraldEventMap>(type: K, listener: (event: HeraldEventMap[K]) => void): this;
  /** Subscribes to one more channel (reconnecting so that the connection includes it). */
  addChannel(channel: string): this;
  /** Unsubscribes from a channel (reconnecting without it). */
  removeChannel(channel: string): this;
  /** Sets the transport order and reconnects with it, resuming where the previous connection stopped. */
  setTransports(transports: TransportName[]): this;
  /** Connects (after close(), connects again). */
  connect(): this;
  /** Drops the connection and connects again at once, resuming where it stopped. */
  reconnect(): this;
  /** Closes the connection for good (connect() starts again). */
  close(): void;
}

export default Herald;

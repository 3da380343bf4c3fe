// @ts-check
/**
 * herald.js: the browser client for Herald (README.md, "In the browser").
 *
 * Dependency-free ES module. `/herald.umd.js` is the same code for `<script>` users (build.rs wraps
 * this file in a UMD function when Herald is built).
 *
 *     import { Herald } from '/herald.js';
 *     const herald = new Herald({ url: '/client/', channels: ['news', 'sport'] });
 *     herald.on('message', (m) => console.log(m.channel, m.id, m.text));
 *     herald.on('status', (s) => console.log(s.status, s.transport));
 *
 * Transports, in the order of `transports`: EventSource, WebSocket, long-polling. One that the browser
 * lacks is skipped; one that fails before it ever opened is left for the next one. A connection that
 * drops is retried with exponential backoff and jitter, resuming from the (time, tag) of the last
 * message received on each channel, so that nothing is lost or repeated within the server's stored
 * window. The server side is the default config's `/client/ev/`, `/client/ws/`, `/client/lp/` and
 * `/client/point/` locations: JSON messages, and the recovery point read from `?time=&tag=`.
 */

/** @typedef {'eventsource' | 'websocket' | 'longpolling'} TransportName */
/** @typedef {'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed'} HeraldStatus */

/**
 * @typedef {object} HeraldMessage
 * @property {string} text The message as published.
 * @property {string | null} channel The channel it was published to (null when the location's template does not say).
 * @property {number | null} id Per-channel sequence number (from 1).
 * @property {string | null} eventId The publisher's Event-Id header, if any.
 * @property {string | null} eventType The publisher's Event-Type header, if any.
 * @property {string | null} time Publish time as an HTTP date (whole seconds).
 * @property {number | null} tag Orders messages published within the same second.
 * @property {TransportName} transport The transport that delivered it.
 */

/**
 * @typedef {object} HeraldStatusEvent
 * @property {HeraldStatus} status
 * @property {TransportName | null} transport The transport in use (or about to be tried).
 * @property {number} attempt Consecutive failed attempts so far (0 once a connection is stable).
 * @property {number} [delay] Milliseconds until the next attempt ('reconnecting' only).
 */

/**
 * @typedef {object} HeraldErrorEvent
 * @property {Error} error
 * @property {TransportName | null} transport
 */

/**
 * @typedef {object} HeraldDeletedEvent
 * @property {string} channel
 * @property {string} text The channel-deleted message.
 */

/**
 * @typedef {object} HeraldEventMap
 * @property {HeraldMessage} message
 * @property {HeraldStatusEvent} status
 * @property {HeraldErrorEvent} error
 * @property {HeraldDeletedEvent} deleted
 */

/**
 * @typedef {object} BackoffOptions
 * @property {number} [initial] First delay in ms (default 500).
 * @property {number} [max] Longest delay in ms (default 15000).
 * @property {number} [factor] Growth per failed attempt (default 2).
 * @property {number} [jitter] Fraction of the delay that is random, 0..1 (default 0.5).
 */

/**
 * @typedef {object} HeraldPaths
 * @property {string} [eventsource] Default 'ev/'.
 * @property {string} [websocket] Default 'ws/'.
 * @property {string} [longpolling] Default 'lp/'.
 * @property {string | null} [point] Default 'point/'; null when the server has no such location.
 */

/**
 * @typedef {object} HeraldOptions
 * @property {string} [url] Base URL of the client locations (default '/client/'), relative to the page.
 * @property {string[]} [channels] Channels to subscribe to.
 * @property {TransportName[]} [transports] Order in which transports are tried (default all three, in that order).
 * @property {HeraldPaths} [paths] Location paths under `url`.
 * @property {Record<string, string>} [params] Query arguments added to every request, e.g. `{token: jwt}`
 *   for a location that wants a signed token.
 * @property {BackoffOptions} [backoff]
 * @property {number} [backtrack] When joining a channel, first deliver its last N stored messages (default 0).
 * @property {string[]} [eventTypes] Event-Type values published on these channels: EventSource only
 *   delivers messages with an Event-Type to listeners of that type, so they must be known in advance.
 * @property {number} [connectTimeout] Ms a connection may take to open before it counts as failed (default 10000).
 * @property {number} [stableAfter] Ms a connection must stay open before the backoff starts over (default 3000).
 * @property {boolean} [autoConnect] Connect at once (default true); else call connect().
 * @property {any} [EventSource] EventSource constructor to use (default the global one).
 * @property {any} [WebSocket] WebSocket constructor to use (default the global one).
 * @property {typeof fetch} [fetch] fetch function to use (default the global one).
 */

/** @typedef {{time: number, tag: number}} Key */

/**
 * @typedef {object} ChannelState
 * @property {Key | null} point The newest message delivered on this channel (or the join point).
 * @property {number | null} lastId Id of the newest message delivered on this channel.
 * @property {number} backtrack Stored messages still to ask for with `.bN` when next connecting.
 * @property {boolean} replaying This connection asked for `.bN`: don't filter by the join point.
 */

/**
 * @typedef {object} ConnectionHandlers
 * @property {() => void} open
 * @property {(raw: string, eventType?: string) => void} frame
 * @property {(error: Error) => void} fail
 * @property {(point: Key | null) => void} [caughtUp]
 */

/** @typedef {{close(): void}} Connection */

/** All transports, in the default order. */
export const TRANSPORTS = /** @type {TransportName[]} */ (['eventsource', 'websocket', 'longpolling']);

const DEFAULT_PATHS = { eventsource: 'ev/', websocket: 'ws/', longpolling: 'lp/', point: 'point/' };

/** Ids of the server's special messages. */
const PING_ID = -1;
const DELETED_ID = -2;
const TIMED_OUT_ID = -3;

/**
 * Orders two recovery points.
 * @param {Key} a
 * @param {Key} b
 */
function compareKeys(a, b) {
  return a.time - b.time || a.tag - b.tag;
}

/**
 * An HTTP date ("Sat, 28 Nov 2026 16:15:28 GMT") as seconds since the epoch, or null.
 * @param {unknown} text
 */
function parseHttpDate(text) {
  if (typeof text !== 'string' || text === '') return null;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? Math.floor(ms / 1000) : null;
}

/**
 * An Etag such as `W/5` or `"5"` as a number, or null.
 * @param {string | null} text
 */
function parseEtag(text) {
  if (!text) return null;
  const match = /(\d+)/.exec(text);
  return match ? Number(match[1]) : null;
}

/**
 * Seconds since the epoch as an HTTP date.
 * @param {number} seconds
 */
function httpDate(seconds) {
  return new Date(seconds * 1000).toUTCString();
}

/**
 * The key of Last-Modified + Etag response headers, or null.
 * @param {Response} response
 * @returns {Key | null}
 */
function keyFromHeaders(response) {
  const time = parseHttpDate(response.headers.get('Last-Modified'));
  const tag = parseEtag(response.headers.get('Etag'));
  return time === null || tag === null ? null : { time, tag };
}

/**
 * @param {string} url
 */
function resolveUrl(url) {
  const base = typeof document !== 'undefined' && document.baseURI ? document.baseURI
    : typeof location !== 'undefined' ? location.href : undefined;
  return new URL(url, base).href;
}

/**
 * Reads a text frame of a client location: JSON with channel, text, id, time, tag, eventId and
 * eventType; anything else is kept as plain text.
 * @param {string} raw
 * @param {string | null} fallbackChannel
 * @param {string | undefined} eventType
 * @param {TransportName} transport
 * @returns {HeraldMessage}
 */
function parseFrame(raw, fallbackChannel, eventType, transport) {
  /** @type {any} */
  let data = null;
  const trimmed = raw.trim();
  if (trimmed.startsWith('{')) {
    try {
      data = JSON.parse(trimmed);
    } catch {
      data = null;
    }
  }
  if (data && typeof data === 'object' && typeof data.text === 'string' && typeof data.channel === 'string') {
    const time = typeof data.time === 'string' && data.time !== '' ? data.time : null;
    return {
      text: data.text,
      channel: data.channel,
      id: typeof data.id === 'number' ? data.id : null,
      eventId: typeof data.eventId === 'string' && data.eventId !== '' ? data.eventId : null,
      eventType: typeof data.eventType === 'string' && data.eventType !== ''
        ? data.eventType : eventType && eventType !== 'message' ? eventType : null,
      time,
      tag: typeof data.tag === 'number' ? data.tag : null,
      transport,
    };
  }
  return {
    text: raw,
    channel: fallbackChannel,
    id: null,
    eventId: null,
    eventType: eventType && eventType !== 'message' ? eventType : null,
    time: null,
    tag: null,
    transport,
  };
}

/**
 * The message's recovery point, or null when its template does not carry time and tag.
 * @param {HeraldMessage} message
 * @returns {Key | null}
 */
function messageKey(message) {
  const time = parseHttpDate(message.time);
  return time === null || message.tag === null ? null : { time, tag: message.tag };
}

/**
 * Publishes `text` to `channel` through a publisher location (e.g. the default config's `/pub`).
 * Resolves to the channel info the server answers with. With `idempotencyKey`, repeating the call
 * (say after a network error) publishes at most once per channel.
 * @param {string} url The publisher location, e.g. '/pub'; `?id=<channel>` is added.
 * @param {string} channel One channel, or several separated by '/'.
 * @param {string} text
 * @param {{eventId?: string, eventType?: string, idempotencyKey?: string, fetch?: typeof fetch}} [options]
 * @returns {Promise<any>}
 */
export async function publish(url, channel, text, options = {}) {
  const target = new URL(resolveUrl(url));
  target.searchParams.set('id', channel);
  /** @type {Record<string, string>} */
  const headers = { 'Content-Type': 'text/plain; charset=utf-8' };
  if (options.eventId) headers['Event-Id'] = options.eventId;
  if (options.eventType) headers['Event-Type'] = options.eventType;
  if (options.idempotencyKey) headers['Idempotency-Key'] = options.idempotencyKey;
  const doFetch = options.fetch || globalThis.fetch.bind(globalThis);
  const response = await doFetch(target.href, { method: 'POST', headers, body: text, cache: 'no-store' });
  const body = await response.text();
  if (!response.ok) {
    throw new Error(response.headers.get('X-Nginx-PushStream-Explain') || body || `HTTP ${response.status}`);
  }
  try {
    return JSON.parse(body);
  } catch {
    return body;
  }
}

/**
 * A subscriber to Herald channels over EventSource, WebSocket or long-polling, with fallback,
 * reconnection and exact resume.
 */
export class Herald {
  /**
   * @param {HeraldOptions} [options]
   */
  constructor(options = {}) {
    /** @private */
    this._url = resolveUrl(options.url ?? '/client/');
    /** @private */
    this._paths = { ...DEFAULT_PATHS, ...(options.paths || {}) };
    /** @private @type {TransportName[]} */
    this._transports = checkTransports(options.transports ?? TRANSPORTS);
    /** @private */
    this._backoff = { initial: 500, max: 15000, factor: 2, jitter: 0.5, ...(options.backoff || {}) };
    /** @private @type {Record<string, string>} */
    this._params = { ...(options.params || {}) };
    /** @private */
    this._backtrack = Math.max(0, Math.floor(options.backtrack ?? 0));
    /** @private */
    this._eventTypes = [...(options.eventTypes || [])];
    /** @private */
    this._connectTimeout = options.connectTimeout ?? 10000;
    /** @private */
    this._stableAfter = options.stableAfter ?? 3000;
    /** @private */
    this._env = {
      EventSource: options.EventSource !== undefined ? options.EventSource : globalThis.EventSource,
      WebSocket: options.WebSocket !== undefined ? options.WebSocket : globalThis.WebSocket,
      fetch: options.fetch || (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : undefined),
    };
    /** @private @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
    /** @private @type {Map<string, ChannelState>} */
    this._channels = new Map();
    /** @private @type {HeraldStatus} */
    this._status = 'idle';
    /** @private @type {TransportName | null} */
    this._transport = null;
    /** @private @type {Connection | null} */
    this._connection = null;
    /** @private Bumped whenever the current connection is abandoned. */
    this._generation = 0;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    /** @private @type {ReturnType<typeof setTimeout> | null} */
    this._stableTimer = null;
    /** @private */
    this._restartQueued = false;
    /** @private Failed attempts since the last stable connection. */
    this._attempt = 0;
    /** @private Index in `_transports` of the transport to use next. */
    this._index = 0;
    /** @private @type {Set<TransportName>} Transports that opened at least once. */
    this._worked = new Set();
    /** @private @type {Set<TransportName>} Transports found to lose messages (EventSource and unknown event types). */
    this._lossy = new Set();
    /** @private Transports tried (and failed before opening) in the current round. */
    this._failedThisRound = 0;
    /** @private */
    this._started = false;
    /** @private */
    this._pointSupported = this._paths.point !== null && this._paths.point !== undefined;
    /** @private The browser is back online: don't wait for the backoff. */
    this._onOnline = () => {
      if (this._status === 'reconnecting') this._restart();
    };
    for (const channel of options.channels || []) this._addState(channel);
    if (options.autoConnect !== false) {
      // Let the caller attach listeners first.
      Promise.resolve().then(() => {
        if (!this._started) this.connect();
      });
    }
  }

  /** The connection status. @returns {HeraldStatus} */
  get status() {
    return this._status;
  }

  /** The transport in use (or being tried), null when not connected. @returns {TransportName | null} */
  get transport() {
    return this._transport;
  }

  /** The channels subscribed to. @returns {string[]} */
  get channels() {
    return [...this._channels.keys()];
  }

  /** The transport order. @returns {TransportName[]} */
  get transports() {
    return [...this._transports];
  }

  /**
   * Adds a listener: 'message', 'status', 'error' or 'deleted'.
   * @template {keyof HeraldEventMap} K
   * @param {K} type
   * @param {(event: HeraldEventMap[K]) => void} listener
   * @returns {this}
   */
  on(type, listener) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(listener);
    return this;
  }

  /**
   * Removes a listener added with on().
   * @template {keyof HeraldEventMap} K
   * @param {K} type
   * @param {(event: HeraldEventMap[K]) => void} listener
   * @returns {this}
   */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
    return this;
  }

  /**
   * Subscribes to one more channel (reconnecting so that the connection includes it). Messages of
   * that channel are delivered from now on (or its last `backtrack` stored ones first).
   * @param {string} channel
   * @returns {this}
   */
  addChannel(channel) {
    if (this._addState(channel)) this._queueRestart();
    return this;
  }

  /**
   * Unsubscribes from a channel (reconnecting without it).
   * @param {string} channel
   * @returns {this}
   */
  removeChannel(channel) {
    if (this._channels.delete(channel)) this._queueRestart();
    return this;
  }

  /**
   * Sets the transport order (e.g. ['websocket'] to use only WebSocket) and reconnects with it,
   * resuming where the previous connection stopped.
   * @param {TransportName[]} transports
   * @returns {this}
   */
  setTransports(transports) {
    this._transports = checkTransports(transports);
    this._index = 0;
    this._worked.clear();
    this._lossy.clear();
    this._failedThisRound = 0;
    this._attempt = 0;
    if (this._started) this._restart();
    return this;
  }

  /** Connects (after close(), connects again). @returns {this} */
  connect() {
    this._started = true;
    if (this._status === 'closed') this._status = 'idle';
    if (typeof window !== 'undefined') window.addEventListener('online', this._onOnline);
    this._restart();
    return this;
  }

  /** Drops the connection and connects again at once, resuming where it stopped. @returns {this} */
  reconnect() {
    if (this._started && this._status !== 'closed') this._restart();
    return this;
  }

  /** Closes the connection for good (connect() starts again). */
  close() {
    this._started = true;
    if (typeof window !== 'undefined') window.removeEventListener('online', this._onOnline);
    this._stop();
    this._transport = null;
    this._setStatus('closed');
  }

  // ---- internals -------------------------------------------------------------------------------

  /**
   * @private
   * @param {string} channel
   */
  _addState(channel) {
    if (typeof channel !== 'string' || channel === '' || channel.includes('/')) {
      throw new TypeError(`invalid channel id: ${JSON.stringify(channel)}`);
    }
    if (this._channels.has(channel)) return false;
    this._channels.set(channel, { point: null, lastId: null, backtrack: this._backtrack, replaying: false });
    return true;
  }

  /**
   * @private
   * @template {keyof HeraldEventMap} K
   * @param {K} type
   * @param {HeraldEventMap[K]} event
   */
  _emit(type, event) {
    for (const listener of [...(this._listeners.get(type) || [])]) {
      try {
        listener.call(this, event);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  /**
   * @private
   * @param {HeraldStatus} status
   * @param {number} [delay]
   */
  _setStatus(status, delay) {
    this._status = status;
    /** @type {HeraldStatusEvent} */
    const event = { status, transport: this._transport, attempt: this._attempt };
    if (delay !== undefined) event.delay = delay;
    this._emit('status', event);
  }

  /**
   * @private
   * @param {Error} error
   */
  _error(error) {
    this._emit('error', { error, transport: this._transport });
  }

  /** Batches channel changes made in one go into one reconnect. @private */
  _queueRestart() {
    if (!this._started || this._status === 'closed' || this._restartQueued) return;
    this._restartQueued = true;
    Promise.resolve().then(() => {
      this._restartQueued = false;
      if (this._status !== 'closed') this._restart();
    });
  }

  /** Ends the current connection and any pending retry. @private */
  _stop() {
    this._generation += 1;
    if (this._timer !== null) clearTimeout(this._timer);
    if (this._stableTimer !== null) clearTimeout(this._stableTimer);
    this._timer = null;
    this._stableTimer = null;
    const connection = this._connection;
    this._connection = null;
    if (connection) {
      try {
        connection.close();
      } catch {
        // already closed
      }
    }
  }

  /** Reconnects now with the current transport choice. @private */
  _restart() {
    this._stop();
    if (this._channels.size === 0) {
      this._transport = null;
      if (this._status !== 'idle') this._setStatus('idle');
      return;
    }
    this._attemptConnect();
  }

  /** The next transport this browser has, starting at `_index`; null when it has none. @private */
  _pickTransport() {
    for (let i = 0; i < this._transports.length; i++) {
      const index = (this._index + i) % this._transports.length;
      const name = this._transports[index];
      if (this._available(name)) {
        this._index = index;
        return name;
      }
    }
    return null;
  }

  /**
   * @private
   * @param {TransportName} name
   */
  _available(name) {
    if (this._lossy.has(name)) return false;
    if (name === 'eventsource') return typeof this._env.EventSource === 'function';
    if (name === 'websocket') return typeof this._env.WebSocket === 'function';
    return typeof this._env.fetch === 'function';
  }

  /** @private */
  async _attemptConnect() {
    const generation = ++this._generation;
    const transport = this._pickTransport();
    if (transport === null) {
      this._transport = null;
      this._error(new Error(`none of the transports ${this._transports.join(', ')} is available in this browser`));
      this._setStatus('closed');
      return;
    }
    this._transport = transport;
    this._setStatus('connecting');
    try {
      await this._fetchJoinPoints(transport === 'longpolling');
    } catch (error) {
      if (generation !== this._generation) return;
      this._failed(transport, false, asError(error));
      return;
    }
    if (generation !== this._generation) return;
    const names = [...this._channels.keys()];
    if (names.length === 0) {
      this._restart();
      return;
    }
    let opened = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let openTimer = null;
    const current = () => generation === this._generation;
    /** @type {ConnectionHandlers} */
    const handlers = {
      open: () => {
        if (!current() || opened) return;
        opened = true;
        if (openTimer !== null) clearTimeout(openTimer);
        this._opened(transport);
      },
      frame: (raw, eventType) => {
        if (current()) this._frame(raw, eventType, transport, names);
      },
      fail: (error) => {
        if (!current()) return;
        if (openTimer !== null) clearTimeout(openTimer);
        this._failed(transport, opened, error);
      },
      caughtUp: (point) => {
        if (current() && point) this._caughtUp(point);
      },
    };
    const url = this._subscribeUrl(transport, names);
    try {
      if (transport === 'eventsource') this._connection = this._openEventSource(url, handlers);
      else if (transport === 'websocket') this._connection = this._openWebSocket(url, handlers);
      else this._connection = this._openLongPolling(url, names, handlers);
    } catch (error) {
      this._failed(transport, false, asError(error));
      return;
    }
    // A long-poll may rightly wait for a message as long as the location's TTL: no open timeout.
    if (transport === 'longpolling' || opened) return;
    openTimer = setTimeout(() => {
      if (!opened) handlers.fail(new Error(`${transport} did not open within ${this._connectTimeout} ms`));
    }, this._connectTimeout);
  }

  /**
   * Channels never joined yet get the server's current point, so that a reconnect resumes from the
   * moment they were joined. For long-polling this request is also the reachability check.
   * @private
   * @param {boolean} always
   */
  async _fetchJoinPoints(always) {
    const missing = [...this._channels].filter(([, s]) => s.point === null).map(([name]) => name);
    if (!this._pointSupported || !this._env.fetch || (missing.length === 0 && !always)) return;
    const names = missing.length > 0 ? missing : [...this._channels.keys()];
    const url = new URL(/** @type {string} */ (this._paths.point) + channelsPath(names), this._url);
    this._addParams(url);
    /** @type {Response} */
    let response;
    try {
      response = await this._env.fetch(url.href, { cache: 'no-store' });
    } catch (error) {
      throw new Error(`cannot reach ${url.origin}: ${asError(error).message}`);
    }
    if (response.status === 404) {
      // This server has no point location: join points stay unknown.
      this._pointSupported = false;
      return;
    }
    if (response.status !== 200 && response.status !== 304) {
      throw new Error(httpError(response));
    }
    const point = keyFromHeaders(response);
    if (point === null) return;
    for (const name of missing) {
      const state = this._channels.get(name);
      if (state && state.point === null) state.point = point;
    }
  }

  /**
   * The subscribe URL: channels (with `.bN` for those that want backtrack) and the oldest point of
   * the others as `?time=&tag=`.
   * @private
   * @param {TransportName} transport
   * @param {string[]} names
   */
  _subscribeUrl(transport, names) {
    /** @type {Key | null} */
    let oldest = null;
    const parts = names.map((name) => {
      const state = /** @type {ChannelState} */ (this._channels.get(name));
      state.replaying = state.backtrack > 0;
      if (state.replaying) return `${name}.b${state.backtrack}`;
      if (state.point && (!oldest || compareKeys(state.point, oldest) < 0)) oldest = state.point;
      return name;
    });
    const url = new URL(String(this._paths[transport]) + channelsPath(parts), this._url);
    this._addParams(url);
    if (oldest) setPoint(url, oldest);
    if (transport === 'websocket') url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return url;
  }

  /**
   * @private
   * @param {URL} url
   */
  _addParams(url) {
    for (const [name, value] of Object.entries(this._params)) url.searchParams.set(name, value);
  }

  /**
   * @private
   * @param {TransportName} transport
   */
  _opened(transport) {
    this._worked.add(transport);
    this._failedThisRound = 0;
    for (const state of this._channels.values()) state.backtrack = 0;
    if (this._stableTimer !== null) clearTimeout(this._stableTimer);
    this._stableTimer = setTimeout(() => {
      this._stableTimer = null;
      this._attempt = 0;
    }, this._stableAfter);
    this._setStatus('open');
  }

  /**
   * The connection failed (before or after it opened): try the next transport, or retry later.
   * @private
   * @param {TransportName} transport
   * @param {boolean} opened
   * @param {Error} error
   */
  _failed(transport, opened, error) {
    this._stop();
    if (!opened && !this._worked.has(transport)) {
      // Blocked or missing on this server: fall back to the next transport, at once, until each has
      // been tried once in this round.
      this._failedThisRound += 1;
      const available = this._transports.filter((t) => this._available(t)).length;
      if (this._failedThisRound < available) {
        this._error(new Error(`${transport} failed (${error.message}); falling back`));
        this._index = (this._index + 1) % this._transports.length;
        this._attemptConnect();
        return;
      }
      // Every transport failed: wait, then start over from the preferred one.
      this._failedThisRound = 0;
      this._index = 0;
    }
    this._error(error);
    const delay = this._nextDelay();
    this._setStatus('reconnecting', delay);
    this._timer = setTimeout(() => {
      this._timer = null;
      this._attemptConnect();
    }, delay);
  }

  /** @private */
  _nextDelay() {
    const { initial, max, factor, jitter } = this._backoff;
    const base = Math.min(max, initial * Math.pow(factor, this._attempt));
    this._attempt += 1;
    const spread = Math.min(1, Math.max(0, jitter));
    return Math.round(base * (1 - spread) + Math.random() * base * spread);
  }

  /**
   * One frame from the server: deliver it unless it is a ping or was delivered before.
   * @private
   * @param {string} raw
   * @param {string | undefined} eventType
   * @param {TransportName} transport
   * @param {string[]} names
   */
  _frame(raw, eventType, transport, names) {
    if (raw.trim() === '') return;
    const message = parseFrame(raw, names.length === 1 ? names[0] : null, eventType, transport);
    if (message.id === PING_ID || message.id === TIMED_OUT_ID) return;
    const state = message.channel === null ? undefined : this._channels.get(message.channel);
    if (message.channel !== null && !state) return; // a channel removed meanwhile
    if (message.id === DELETED_ID) {
      if (state) state.lastId = null; // the channel starts over from id 1
      this._emit('deleted', { channel: /** @type {string} */ (message.channel), text: message.text });
      // The server no longer follows this channel on this connection: join it again.
      this._queueRestart();
      return;
    }
    const key = messageKey(message);
    if (state && key) {
      // Delivered before (or published before this channel was joined). A `.bN` replay is wanted
      // even though it is older than the join point.
      if (state.point && !state.replaying && compareKeys(key, state.point) <= 0) return;
      if (transport === 'eventsource' && this._missedTypedEvent(state, message)) return;
      state.point = key;
      state.replaying = false;
    }
    if (state && message.id !== null) state.lastId = message.id;
    this._emit('message', message);
  }

  /**
   * EventSource hands a message with an Event-Type only to listeners of that type: a message whose
   * type is not in `eventTypes` never reaches us, and shows as a gap in the channel's ids. Then this
   * client stops using EventSource (while another transport is available) and reconnects from the
   * message before the gap, so the missed one is delivered after all, in order and once.
   * @private
   * @param {ChannelState} state
   * @param {HeraldMessage} message
   */
  _missedTypedEvent(state, message) {
    if (state.replaying || state.lastId === null || message.id === null || message.id <= state.lastId + 1) return false;
    const others = this._transports.filter((t) => t !== 'eventsource' && this._available(t));
    this._error(new Error(
      `EventSource missed message ${state.lastId + 1} on ${message.channel} (published with an Event-Type not in eventTypes?)` +
        (others.length ? `; switching to ${others[0]}` : ''),
    ));
    if (others.length === 0) return false;
    this._lossy.add('eventsource');
    this._restart();
    return true;
  }

  /**
   * Long-polling answered: every channel has everything up to `point`.
   * @private
   * @param {Key} point
   */
  _caughtUp(point) {
    for (const state of this._channels.values()) {
      if (!state.point || compareKeys(point, state.point) > 0) state.point = point;
      state.replaying = false;
    }
  }

  /**
   * @private
   * @param {URL} url
   * @param {ConnectionHandlers} handlers
   * @returns {Connection}
   */
  _openEventSource(url, handlers) {
    const source = new this._env.EventSource(url.href);
    /** @param {MessageEvent} event */
    const onMessage = (event) => handlers.frame(String(event.data), event.type);
    source.addEventListener('open', () => handlers.open());
    source.addEventListener('message', onMessage);
    for (const type of this._eventTypes) source.addEventListener(type, onMessage);
    source.addEventListener('error', () => {
      // The browser would reconnect by itself with Last-Event-ID only; close it and resume by
      // (time, tag) instead.
      source.close();
      handlers.fail(new Error('EventSource connection failed or ended'));
    });
    return { close: () => source.close() };
  }

  /**
   * @private
   * @param {URL} url
   * @param {ConnectionHandlers} handlers
   * @returns {Connection}
   */
  _openWebSocket(url, handlers) {
    const socket = new this._env.WebSocket(url.href);
    let closedByUs = false;
    socket.addEventListener('open', () => handlers.open());
    socket.addEventListener('message', (/** @type {MessageEvent} */ event) => {
      if (typeof event.data === 'string') handlers.frame(event.data);
    });
    socket.addEventListener('close', (/** @type {CloseEvent} */ event) => {
      if (closedByUs) return;
      let reason = event.reason;
      if (event.code === 1008) {
        // A refused subscription: {"http_status": 403, "explain": "..."}
        try {
          const refusal = JSON.parse(reason);
          reason = `${refusal.http_status}: ${refusal.explain}`;
        } catch {
          // keep the raw reason
        }
      }
      handlers.fail(new Error(`WebSocket closed (${event.code}${reason ? ` ${reason}` : ''})`));
    });
    return {
      close: () => {
        closedByUs = true;
        socket.close();
      },
    };
  }

  /**
   * Long-polling: one request at a time, each from the point the previous answer ended at.
   * @private
   * @param {URL} url
   * @param {string[]} names
   * @param {ConnectionHandlers} handlers
   * @returns {Connection}
   */
  _openLongPolling(url, names, handlers) {
    const controller = new AbortController();
    const doFetch = /** @type {typeof fetch} */ (this._env.fetch);
    let target = url;
    const run = async () => {
      // The join point request has just answered: the server is there.
      if (this._pointSupported) handlers.open();
      while (!controller.signal.aborted) {
        /** @type {Response} */
        let response;
        let body = '';
        try {
          response = await doFetch(target.href, { cache: 'no-store', signal: controller.signal });
          body = await response.text();
        } catch (error) {
          if (controller.signal.aborted) return;
          handlers.fail(new Error(`long-polling request failed: ${asError(error).message}`));
          return;
        }
        if (controller.signal.aborted) return;
        if (response.status !== 200 && response.status !== 304) {
          handlers.fail(new Error(httpError(response, body)));
          return;
        }
        handlers.open();
        for (const line of body.split('\n')) handlers.frame(line);
        handlers.caughtUp?.(keyFromHeaders(response));
        // The next request: plain channels (no more `.bN`), from where this answer ended.
        target = this._subscribeUrl('longpolling', names);
      }
    };
    run();
    return { close: () => controller.abort() };
  }

}

/**
 * @param {string[]} names
 */
function channelsPath(names) {
  return names.map((name) => encodeURIComponent(name)).join('/');
}

/**
 * @param {URL} url
 * @param {Key} point
 */
function setPoint(url, point) {
  url.searchParams.set('time', httpDate(point.time));
  url.searchParams.set('tag', String(point.tag));
}

/**
 * @param {Response} response
 * @param {string} [body]
 */
function httpError(response, body) {
  const explain = response.headers.get('X-Nginx-PushStream-Explain') || (body || '').trim();
  return `HTTP ${response.status}${explain ? `: ${explain}` : ''}`;
}

/**
 * @param {unknown} error
 * @returns {Error}
 */
function asError(error) {
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * @param {unknown} transports
 * @returns {TransportName[]}
 */
function checkTransports(transports) {
  if (!Array.isArray(transports) || transports.length === 0) {
    throw new TypeError(`transports must be a non-empty list of ${TRANSPORTS.join(', ')}`);
  }
  for (const name of transports) {
    if (!TRANSPORTS.includes(name)) throw new TypeError(`unknown transport ${JSON.stringify(name)}`);
  }
  return [...new Set(/** @type {TransportName[]} */ (transports))];
}

export default Herald;

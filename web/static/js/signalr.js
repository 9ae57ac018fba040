// A small SignalR client for the browser: negotiate, WebSocket transport,
// the JSON hub protocol (records ended by 0x1E), handshake, invocations and
// callbacks, keep-alive pings, server Close with allowReconnect, and
// automatic reconnect with back-off.
//
//   const hub = new HubClient('/hubs/orchestrator', { query: { user: 'alice' } });
//   hub.on('ReceiveSessionMessage', (m) => ...);
//   hub.addEventListener('state', (e) => e.detail.state);   // see States
//   await hub.start();
//   const res = await hub.invoke('CreateSession', { name: 'x', type: 1, agentIds: [], workingDirectory: '' });

const RS = '\u001e';

/** Message types of the hub protocol. */
const T = { Invocation: 1, StreamItem: 2, Completion: 3, StreamInvocation: 4, CancelInvocation: 5, Ping: 6, Close: 7 };

/** Connection states, as reported by the 'state' event. */
export const States = Object.freeze({
  Disconnected: 'disconnected',
  Connecting: 'connecting',
  Connected: 'connected',
  Reconnecting: 'reconnecting',
});

/** Delay before reconnect attempt n (0-based): quick first, then doubling to a cap, with jitter. */
export function backoffDelay(attempt, { base = 500, cap = 15000 } = {}) {
  if (attempt === 0) return 0;
  const d = Math.min(cap, base * 2 ** (attempt - 1));
  return Math.round(d * (0.8 + Math.random() * 0.4));
}

/** An error from the server: a Completion error or a refused handshake. */
export class HubError extends Error {
  constructor(message) {
    super(message);
    this.name = 'HubError';
  }
}

/**
 * One hub connection that keeps itself connected until stop().
 * Events (EventTarget): 'state' {state, attempt, error}, 'connected' {connectionId},
 * 'reconnected' {connectionId}, 'disconnected' {error}.
 */
export class HubClient extends EventTarget {
  /**
   * @param {string} url  hub path or URL, e.g. '/hubs/agent'
   * @param {{query?: Record<string,string>, accessToken?: () => string|undefined,
   *          keepAliveMs?: number, serverTimeoutMs?: number, label?: string}} [opts]
   */
  constructor(url, opts = {}) {
    super();
    this.url = new URL(url, globalThis.location?.href);
    for (const [k, v] of Object.entries(opts.query || {})) if (v) this.url.searchParams.set(k, v);
    this.accessToken = opts.accessToken || (() => undefined);
    this.keepAliveMs = opts.keepAliveMs ?? 15000;
    this.serverTimeoutMs = opts.serverTimeoutMs ?? 30000;
    this.label = opts.label || this.url.pathname;
    this.handlers = new Map(); // lower-case target -> Set<fn>
    this.pending = new Map(); // invocationId -> {resolve, reject}
    this.nextId = 0;
    this.state = States.Disconnected;
    this.connectionId = null;
    this.ws = null;
    this.stopped = true;
    this.attempt = 0;
    this.wakeUp = null; // resolves the current back-off wait early
    this.onOnline = () => this.wakeUp?.();
  }

  /** Registers a callback handler for target (matched without regard to case). */
  on(target, fn) {
    const key = target.toLowerCase();
    if (!this.handlers.has(key)) this.handlers.set(key, new Set());
    this.handlers.get(key).add(fn);
    return () => this.handlers.get(key)?.delete(fn);
  }

  /**
   * Connects, and keeps reconnecting after losses until stop(). Resolves on
   * the first successful connection; rejects if that attempt fails for a
   * reason a retry cannot fix (a refused handshake or negotiate).
   */
  async start() {
    if (!this.stopped) return;
    this.stopped = false;
    globalThis.addEventListener?.('online', this.onOnline);
    this.setState(States.Connecting);
    try {
      await this.connect();
    } catch (err) {
      if (err instanceof HubError) {
        this.stopped = true;
        this.setState(States.Disconnected, err);
        throw err;
      }
      this.connectionLost(err);
    }
  }

  /** Closes the connection and stops reconnecting. */
  async stop() {
    this.stopped = true;
    globalThis.removeEventListener?.('online', this.onOnline);
    this.wakeUp?.();
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      try {
        ws.send(JSON.stringify({ type: T.Close }) + RS);
      } catch {
        // closing anyway
      }
    }
    ws?.close(1000);
    this.teardown(new Error('connection stopped'));
    this.setState(States.Disconnected);
  }

  /** Calls a hub method and resolves with its result. */
  invoke(target, ...args) {
    if (this.state !== States.Connected) {
      return Promise.reject(new Error(`not connected (${this.state}); try again when the connection is back`));
    }
    const invocationId = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(invocationId, { resolve, reject, target });
      try {
        this.write({ type: T.Invocation, invocationId, target, arguments: args });
      } catch (err) {
        this.pending.delete(invocationId);
        reject(err);
      }
    });
  }

  /** Calls a hub method without waiting for (or getting) an answer. */
  send(target, ...args) {
    if (this.state !== States.Connected) return false;
    try {
      this.write({ type: T.Invocation, target, arguments: args });
      return true;
    } catch {
      return false;
    }
  }

  // ---- internals --------------------------------------------------------

  setState(state, error) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, attempt: this.attempt, error } }));
  }

  write(msg) {
    this.ws.send(JSON.stringify(msg) + RS);
    this.lastSent = Date.now();
  }

  /** One connection attempt: negotiate, WebSocket, handshake. */
  async connect() {
    const token = this.accessToken();
    const negotiateUrl = new URL(this.url);
    negotiateUrl.pathname = negotiateUrl.pathname.replace(/\/?$/, '/negotiate');
    negotiateUrl.searchParams.set('negotiateVersion', '1');
    const headers = { 'X-Requested-With': 'XMLHttpRequest' };
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(negotiateUrl, { method: 'POST', headers, credentials: 'same-origin', cache: 'no-store' });
    } catch (err) {
      throw new Error(`negotiate failed: ${err.message}`);
    }
    if (res.status === 401 || res.status === 403) {
      throw new HubError(`the farm refused this sign-in (HTTP ${res.status}: ${(await res.text()).trim()})`);
    }
    if (!res.ok) throw new Error(`negotiate failed: HTTP ${res.status}`);
    const neg = await res.json();
    if (neg.error) throw new HubError(neg.error);
    const id = neg.negotiateVersion >= 1 ? neg.connectionToken : neg.connectionId;
    if (!(neg.availableTransports || []).some((t) => t.transport === 'WebSockets')) {
      throw new HubError('the server offers no WebSocket transport');
    }

    const wsUrl = new URL(this.url);
    wsUrl.protocol = wsUrl.protocol === 'https:' ? 'wss:' : 'ws:';
    wsUrl.searchParams.set('id', id);
    if (token) wsUrl.searchParams.set('access_token', token);
    const ws = new WebSocket(wsUrl);
    this.ws = ws;
    await new Promise((resolve, reject) => {
      let handshaken = false;
      let buffer = '';
      const timer = setTimeout(() => fail(new Error('handshake timed out')), 15000);
      const fail = (err) => {
        clearTimeout(timer);
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          // already closed
        }
        reject(err);
      };
      ws.onopen = () => {
        ws.send(JSON.stringify({ protocol: 'json', version: 1 }) + RS);
      };
      ws.onerror = () => {}; // onclose follows with the details
      ws.onclose = (ev) => fail(new Error(`WebSocket closed during the handshake (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`));
      ws.onmessage = (ev) => {
        if (handshaken) return;
        buffer += typeof ev.data === 'string' ? ev.data : '';
        const end = buffer.indexOf(RS);
        if (end < 0) return;
        let reply;
        try {
          reply = JSON.parse(buffer.slice(0, end));
        } catch {
          fail(new HubError('malformed handshake reply'));
          return;
        }
        if (reply.error) {
          fail(new HubError(`handshake refused: ${reply.error}`));
          return;
        }
        handshaken = true;
        clearTimeout(timer);
        this.opened(ws, neg.connectionId, buffer.slice(end + 1));
        resolve();
      };
    });
  }

  /** The handshake succeeded: wire the socket up and announce the connection. */
  opened(ws, connectionId, rest) {
    const reconnect = this.attempt > 0 || this.everConnected;
    this.connectionId = connectionId;
    this.everConnected = true;
    this.attempt = 0;
    this.lastSent = Date.now();
    this.lastReceived = Date.now();
    let closeError = null;
    ws.onmessage = (ev) => {
      this.lastReceived = Date.now();
      if (typeof ev.data !== 'string') return;
      for (const text of ev.data.split(RS)) {
        if (!text) continue;
        let msg;
        try {
          msg = JSON.parse(text);
        } catch {
          continue;
        }
        if (msg.type === T.Close) {
          closeError = new Error(msg.error ? `server closed the connection: ${msg.error}` : 'server closed the connection');
          closeError.allowReconnect = !!msg.allowReconnect;
          ws.close();
          return;
        }
        this.dispatch(msg);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      const err = closeError || new Error(`connection lost (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`);
      if (closeError && !closeError.allowReconnect) {
        this.teardown(err);
        this.stopped = true;
        this.setState(States.Disconnected, err);
        this.dispatchEvent(new CustomEvent('disconnected', { detail: { error: err } }));
        return;
      }
      this.connectionLost(err);
    };
    this.keepAlive = setInterval(() => this.tick(), 1000);
    // Callbacks that arrived with the handshake reply come after 'connected'
    // handlers ran, so that state is set up to take them.
    this.setState(States.Connected);
    this.dispatchEvent(new CustomEvent(reconnect ? 'reconnected' : 'connected', { detail: { connectionId } }));
    if (rest) ws.onmessage({ data: rest });
  }

  tick() {
    const now = Date.now();
    if (now - this.lastReceived > this.serverTimeoutMs) {
      this.ws?.close(4000, 'server timeout');
      return;
    }
    if (now - this.lastSent >= this.keepAliveMs && this.ws?.readyState === WebSocket.OPEN) {
      try {
        this.write({ type: T.Ping });
      } catch {
        // onclose will follow
      }
    }
  }

  dispatch(msg) {
    switch (msg.type) {
      case T.Invocation: {
        const fns = this.handlers.get(String(msg.target).toLowerCase());
        for (const fn of fns || []) {
          try {
            fn(...(msg.arguments || []));
          } catch (err) {
            console.error(`${this.label}: handler of ${msg.target} failed`, err);
          }
        }
        break;
      }
      case T.Completion: {
        const p = this.pending.get(msg.invocationId);
        if (!p) break;
        this.pending.delete(msg.invocationId);
        if (msg.error) p.reject(new HubError(msg.error));
        else p.resolve(msg.result);
        break;
      }
      default:
        break; // Ping and anything unknown
    }
  }

  /** Rejects pending invocations and stops the keep-alive timer. */
  teardown(err) {
    clearInterval(this.keepAlive);
    this.keepAlive = null;
    for (const p of this.pending.values()) p.reject(new Error(`${p.target}: ${err.message}`));
    this.pending.clear();
    this.ws = null;
  }

  /** Lost the connection (or failed to make one): retry with back-off until stop(). */
  async connectionLost(err) {
    this.teardown(err);
    if (this.stopped) return;
    if (this.reconnecting) return;
    this.reconnecting = true;
    try {
      while (!this.stopped) {
        this.setState(States.Reconnecting, err);
        const delay = backoffDelay(this.attempt);
        this.attempt++;
        if (delay > 0) {
          await new Promise((resolve) => {
            const timer = setTimeout(resolve, delay);
            this.wakeUp = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.wakeUp = null;
        }
        if (this.stopped) return;
        try {
          await this.connect();
          return;
        } catch (e) {
          err = e;
        }
      }
    } finally {
      this.reconnecting = false;
    }
  }
}

// Harness of the fault tests: a real farm on loopback started by
// deploy/local/farm.sh (redis-server, `hubfarm serve` nodes, nginx in front),
// official @microsoft/signalr clients that reconnect and catch up the way the
// README's "After a reconnect" section recommends, and the bookkeeping that
// counts every session event sent, accepted, received live and recovered.
//
// Environment:
//   HUBFARM_BIN                the hubfarm binary (run.sh builds one when unset)
//   HUBFARM_FAULTS_CLIENT_LOG  echo SignalR client log lines at this level or above
//                              (trace|debug|information|warning|error)

import { spawn, spawnSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as signalR from '@microsoft/signalr';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, '..', '..');
const farmScript = join(repoRoot, 'deploy', 'local', 'farm.sh');
export const artifactsDir = join(repoRoot, 'e2e', 'artifacts', 'faults');

// ---------------------------------------------------------------------------
// Small utilities

export function withTimeout(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const pause = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls cond (sync or async) every `every` ms until it returns a truthy value,
 * which it resolves with; rejects after ms with `what` and the last value.
 */
export async function until(cond, ms, what, every = 100) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await cond();
    if (last) return last;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}${last === undefined ? '' : ` (last: ${JSON.stringify(last)})`}`);
    }
    await pause(every);
  }
}

export function log(...args) {
  process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${args.join(' ')}\n`);
}

/** An HS256 JWT like `hubfarm token --jwt-secret S --sub U` mints. */
export function mintToken(secret, sub, ttlSeconds = 3600) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttlSeconds })}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/** Runs a command; resolves {code, stdout, stderr}. Never blocks the event loop. */
export function run(cmd, args, opts = {}) {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b) => (stdout += b));
    child.stderr.on('data', (b) => (stderr += b));
    child.on('error', reject);
    child.on('close', (code) => resolveRun({ code, stdout, stderr }));
  });
}

/** Mints a token with the binary: `hubfarm token --jwt-secret S --sub U`. */
export async function cliToken(sub, secret = JWT_SECRET) {
  const res = await run(process.env.HUBFARM_BIN, ['token', '--jwt-secret', secret, '--sub', sub]);
  if (res.code !== 0) throw new Error(`hubfarm token: ${res.stderr}`);
  return res.stdout.trim();
}

/** Compares Redis stream ids ("ms-seq"). */
export function compareIds(a, b) {
  const [am, as] = a.split('-').map(BigInt);
  const [bm, bs] = b.split('-').map(BigInt);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

// ---------------------------------------------------------------------------
// The farm

export const JWT_SECRET = 'fault-tests-only-secret';

/**
 * A farm started by deploy/local/farm.sh in its own state directory under
 * e2e/artifacts/faults/<name> (logs are kept there).
 */
export class LocalFarm {
  /** @param {{name: string, nodes?: number, serveArgs?: string[]}} opts */
  constructor(opts) {
    this.name = opts.name;
    this.nodes = opts.nodes ?? 3;
    this.serveArgs = opts.serveArgs ?? [];
    this.dir = join(artifactsDir, this.name);
    this.env = {};
    this.clients = new Set();
    this.clientLog = [];
  }

  async sh(cmd, ...args) {
    const res = await run('bash', [farmScript, cmd, '--dir', this.dir, ...args], { cwd: repoRoot });
    if (res.code !== 0) {
      throw new Error(`farm.sh ${cmd} ${args.join(' ')} failed (exit ${res.code}):\n${res.stdout}${res.stderr}`);
    }
    return res.stdout;
  }

  async start() {
    rmSync(this.dir, { recursive: true, force: true });
    mkdirSync(this.dir, { recursive: true });
    const bin = process.env.HUBFARM_BIN;
    if (!bin) throw new Error('HUBFARM_BIN is not set (run the suite with e2e/faults/run.sh)');
    // Stop the farm however this process ends.
    this.onExit = () => {
      // Synchronous on purpose: the process is exiting.
      spawnSync('bash', [farmScript, 'stop', '--dir', this.dir], { stdio: 'ignore' });
    };
    process.on('exit', this.onExit);
    const out = await this.sh('start', '--port', '0', '--nodes', String(this.nodes), '--bin', bin, '--timeout', '60', '--', ...this.serveArgs);
    log(`farm ${this.name} started:\n${out.trim()}`);
    for (const line of (await this.sh('env')).split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) this.env[line.slice(0, i)] = line.slice(i + 1);
    }
    this.url = this.env.HUBFARM_URL;
    return this;
  }

  async stop() {
    await Promise.allSettled([...this.clients].map((c) => withTimeout(c.connection.stop(), 5000, 'client stop')));
    this.clients.clear();
    const out = await this.sh('stop');
    if (this.onExit) process.off('exit', this.onExit);
    return out;
  }

  nodeUrl(i) {
    return this.env[`HUBFARM_NODE_${i}_URL`];
  }

  nodeId(i) {
    return this.env[`HUBFARM_NODE_${i}_ID`];
  }

  nodeIndex(id) {
    for (let i = 1; i <= this.nodes; i++) if (this.nodeId(i) === id) return i;
    return 0;
  }

  hubUrl(hub = 'orchestrator') {
    return `${this.url}/hubs/${hub}`;
  }

  /** SIGKILL node i. */
  killNode(i) {
    return this.sh('node-kill', String(i));
  }

  /** SIGTERM node i and wait for its exit; resolves {status, seconds}. */
  async stopNode(i) {
    const out = await this.sh('node-stop', String(i));
    const m = out.match(/stopped after (\d+) s, exit status (\S+)/);
    return { status: m ? m[2] : '?', seconds: m ? Number(m[1]) : NaN, out };
  }

  startNode(i) {
    return this.sh('node-start', String(i));
  }

  stopRedis() {
    return this.sh('redis-stop');
  }

  startRedis() {
    return this.sh('redis-start');
  }

  /** GET /readyz of node i directly: true for 200. */
  async ready(i) {
    try {
      const res = await fetch(`${this.nodeUrl(i)}/readyz`, { signal: AbortSignal.timeout(3000) });
      await res.arrayBuffer();
      return res.status === 200;
    } catch {
      return false;
    }
  }

  /** Sum of the hubfarm_connections gauge of node i (null when unreachable). */
  async connections(i) {
    try {
      const res = await fetch(`${this.nodeUrl(i)}/metrics`, { signal: AbortSignal.timeout(3000) });
      const text = await res.text();
      let sum = 0;
      for (const line of text.split('\n')) {
        const m = line.match(/^hubfarm_connections(?:\{[^}]*\})?\s+(\S+)/);
        if (m) sum += Number(m[1]);
      }
      return sum;
    } catch {
      return null;
    }
  }

  /** Runs a redis-cli command against the farm's Redis; resolves stdout lines. */
  async redis(...args) {
    const res = await run('redis-cli', ['-p', this.env.HUBFARM_REDIS_PORT, ...args]);
    if (res.code !== 0) throw new Error(`redis-cli ${args.join(' ')}: ${res.stderr}`);
    return res.stdout.split('\n').filter((l) => l !== '');
  }

  /** Node ids of the consumers holding pending (running) jobs, e.g. ['local-2']. */
  async jobHolders() {
    // XPENDING key group - + count: id, consumer, idle ms, deliveries per entry.
    const lines = await this.redis('XPENDING', 'hf:jobs', 'workers', '-', '+', '100');
    const out = [];
    for (let i = 0; i + 3 < lines.length; i += 4) out.push(lines[i + 1]);
    return out;
  }

  /** The node id holding connection id (from the registry), or ''. */
  async nodeOfConnection(connId) {
    const [node] = await this.redis('HGET', `hf:conn:${connId}`, 'node');
    return node || '';
  }

  /**
   * A client of user on hub, authenticated with a JWT when the farm runs with
   * --jwt-secret (tokens are minted as `hubfarm token` does).
   * @param {string} user
   * @param {{hub?: string, jwt?: boolean, token?: string, label?: string}} [opts]
   */
  client(user, opts = {}) {
    const c = new FaultClient(this, user, opts);
    this.clients.add(c);
    return c;
  }
}

// ---------------------------------------------------------------------------
// Clients

/** Callbacks that carry session events (each with an eventId). */
export const SESSION_TARGETS = [
  'ReceiveSessionMessage',
  'AgentMessage',
  'ReceiveAgentResponse',
  'SessionCreated',
  'OrchestrationPlanCreated',
  'OrchestrationProgress',
  'StepCompleted',
  'OrchestrationCompleted',
  'ReceiveError',
];

const LEVELS = {
  trace: signalR.LogLevel.Trace,
  debug: signalR.LogLevel.Debug,
  information: signalR.LogLevel.Information,
  warning: signalR.LogLevel.Warning,
  error: signalR.LogLevel.Error,
};

class ClientLogger {
  constructor(label, sink) {
    this.label = label;
    this.sink = sink;
    this.echo = LEVELS[(process.env.HUBFARM_FAULTS_CLIENT_LOG || '').toLowerCase()] ?? signalR.LogLevel.None;
  }

  log(level, message) {
    if (level < signalR.LogLevel.Information) return;
    const line = `${new Date().toISOString()} [${this.label}] ${signalR.LogLevel[level]}: ${message}`;
    if (this.sink.length < 20000) this.sink.push(line);
    if (level >= this.echo) process.stderr.write(`${line}\n`);
  }
}

/**
 * Keeps reconnecting for as long as it takes (the client's default policy
 * gives up after four attempts): 0.25 s doubling to 2 s, with jitter so that a
 * drained node's clients do not come back in lock step.
 */
export const keepTrying = {
  nextRetryDelayInMilliseconds: ({ previousRetryCount }) =>
    Math.min(250 * 2 ** previousRetryCount, 2000) + Math.floor(Math.random() * 250),
};

/**
 * How far before the last event seen a catch-up starts (see README, After a
 * reconnect): after a Redis restart a node asks its clients to reconnect only
 * once its subscriptions have been back for a while, spread over the drain
 * window, and meanwhile they keep receiving this node's own events live, so
 * the event they missed can be many seconds older than the last one they saw.
 */
export const CATCH_UP_OVERLAP_MS = 30000;

/**
 * An official SignalR client that records the session events it receives,
 * and after every automatic reconnect catches up with GetSessionHistory.
 */
export class FaultClient {
  constructor(farm, user, opts = {}) {
    this.farm = farm;
    this.user = user;
    this.label = opts.label || user;
    const jwt = opts.jwt ?? true;
    const url = jwt ? farm.hubUrl(opts.hub) : `${farm.hubUrl(opts.hub)}?user=${encodeURIComponent(user)}`;
    const options = { transport: signalR.HttpTransportType.WebSockets };
    if (jwt) options.accessTokenFactory = () => opts.token ?? mintToken(JWT_SECRET, user);
    this.connection = new signalR.HubConnectionBuilder()
      .withUrl(url, options)
      .withHubProtocol(new signalR.JsonHubProtocol())
      .withAutomaticReconnect(keepTrying)
      .configureLogging(new ClientLogger(this.label, farm.clientLog))
      .build();
    this.sessionId = null;
    /** eventId -> {target, payload, how: 'live'|'recovered'} */
    this.events = new Map();
    this.lastEventId = null;
    this.liveDuplicates = 0;
    this.recovered = 0;
    this.reconnects = [];
    this.closes = [];
    this.catchUps = 0;
    this.catchUpErrors = [];
    this.closed = null;
    this.waiters = new Set();
    for (const target of SESSION_TARGETS) {
      this.connection.on(target, (arg) => this.onEvent(target, arg, 'live'));
    }
    // Streamed chunks are not session events (not recorded): only counted.
    this.chunks = 0;
    this.connection.on('ReceiveStreamingUpdate', () => this.chunks++);
    this.connection.onreconnecting((err) => {
      this.closes.push({ at: Date.now(), error: String(err?.message ?? err ?? '') });
    });
    this.connection.onreconnected((id) => {
      this.reconnects.push({ at: Date.now(), connectionId: id });
      this.catchingUp = this.catchUp().catch((err) => this.catchUpErrors.push(String(err?.message ?? err)));
    });
    this.connection.onclose((err) => {
      this.closed = { at: Date.now(), error: String(err?.message ?? err ?? '') };
    });
  }

  get connected() {
    return this.connection.state === signalR.HubConnectionState.Connected;
  }

  get connectionId() {
    return this.connection.connectionId;
  }

  start() {
    return withTimeout(this.connection.start(), 20000, `start of ${this.label}`);
  }

  invoke(method, ...args) {
    return withTimeout(this.connection.invoke(method, ...args), 20000, `${method} at ${this.label}`);
  }

  /** Follow a session: its events are recorded and caught up after reconnects. */
  track(sessionId) {
    this.sessionId = sessionId;
  }

  onEvent(target, arg, how) {
    const id = arg?.eventId;
    if (!id) return;
    if (this.events.has(id)) {
      if (how === 'live' && this.events.get(id).how === 'live') this.liveDuplicates++;
      return;
    }
    this.events.set(id, { target, payload: arg, how });
    if (how === 'recovered') this.recovered++;
    if (!this.lastEventId || compareIds(id, this.lastEventId) > 0) this.lastEventId = id;
    for (const w of [...this.waiters]) w();
  }

  /**
   * After a reconnect: fetch what was recorded since a little before the last
   * event seen (events published by different nodes may arrive slightly out of
   * id order), page by page, and drop what was already seen (by eventId).
   */
  async catchUp() {
    if (!this.sessionId) return;
    this.catchUps++;
    let after = null;
    if (this.lastEventId) {
      const ms = BigInt(this.lastEventId.split('-')[0]) - BigInt(CATCH_UP_OVERLAP_MS);
      after = `${ms > 0n ? ms : 0n}-0`;
    }
    for (;;) {
      const page = await this.invoke('GetSessionHistory', this.sessionId, after, 500);
      for (const ev of page) this.onEvent(ev.target, ev.payload, 'recovered');
      if (page.length < 500) return;
      after = page[page.length - 1].eventId;
    }
  }

  /** Resolves once pred() holds, re-checked on every event; rejects after ms. */
  waitUntil(pred, ms, what) {
    if (pred()) return Promise.resolve();
    let waiter;
    const p = new Promise((resolveWait) => {
      waiter = () => {
        if (pred()) resolveWait();
      };
      this.waiters.add(waiter);
    });
    return withTimeout(p, ms, `${what} at ${this.label}`).finally(() => this.waiters.delete(waiter));
  }

  /** Recorded events of target (live or recovered), oldest first. */
  all(target) {
    return [...this.events.entries()]
      .filter(([, e]) => e.target === target)
      .sort(([a], [b]) => compareIds(a, b))
      .map(([, e]) => e.payload);
  }
}

// ---------------------------------------------------------------------------
// Load and bookkeeping

/**
 * Each client sends SendSessionMessage(sessionId, "<label>#<n>") every
 * intervalMs while it is connected, and counts the outcomes:
 * accepted (completion without error), refused (completion with an error: the
 * server did not take it) and unknown (the connection dropped before the
 * completion; the history says whether it was recorded).
 */
export class ChatLoad {
  constructor(clients, sessionId, intervalMs) {
    this.clients = clients;
    this.sessionId = sessionId;
    this.intervalMs = intervalMs;
    this.sent = new Map(); // content -> 'pending'|'accepted'|'refused'|'unknown'
    this.errors = new Map(); // error text -> count
    this.running = false;
    this.loops = [];
  }

  start() {
    this.running = true;
    this.loops = this.clients.map((c, i) => this.loop(c, i));
    return this;
  }

  async loop(c, i) {
    let n = 0;
    await pause((this.intervalMs * i) / this.clients.length); // stagger
    while (this.running) {
      if (c.connected) {
        const content = `${c.label}#${++n}`;
        this.sent.set(content, 'pending');
        try {
          await c.connection.invoke('SendSessionMessage', this.sessionId, content);
          this.sent.set(content, 'accepted');
        } catch (err) {
          const text = String(err?.message ?? err);
          // The client rejects pending invocations when the connection drops;
          // the server may or may not have recorded the message.
          const unknown = /connection being closed|connection was stopped|not in the 'Connected' State|WebSocket closed|error on close/i.test(text);
          this.sent.set(content, unknown ? 'unknown' : 'refused');
          const key = text.replace(/[0-9a-f-]{36}/g, '<id>').slice(0, 200);
          this.errors.set(key, (this.errors.get(key) || 0) + 1);
        }
      }
      await pause(this.intervalMs);
    }
  }

  async stop() {
    this.running = false;
    await Promise.all(this.loops);
  }

  count(state) {
    let n = 0;
    for (const s of this.sent.values()) if (s === state) n++;
    return n;
  }
}

/**
 * One client sends SendAgentMessage to agentId every intervalMs while it is
 * connected, each with its own commandId; outcomes are counted like ChatLoad's.
 */
export class AgentLoad extends ChatLoad {
  constructor(client, sessionId, agentId, intervalMs) {
    super([client], sessionId, intervalMs);
    this.agentId = agentId;
  }

  async loop(c) {
    let n = 0;
    while (this.running) {
      if (c.connected) {
        const commandId = `${c.label}-ask-${++n}`;
        this.sent.set(commandId, 'pending');
        try {
          await c.connection.invoke('SendAgentMessage', {
            agentId: this.agentId, sessionId: this.sessionId, content: `question ${n}`, attachments: [], commandId,
          });
          this.sent.set(commandId, 'accepted');
        } catch (err) {
          const text = String(err?.message ?? err);
          const unknown = /connection being closed|connection was stopped|not in the 'Connected' State|WebSocket closed|error on close/i.test(text);
          this.sent.set(commandId, unknown ? 'unknown' : 'refused');
          this.errors.set(text.slice(0, 200), (this.errors.get(text.slice(0, 200)) || 0) + 1);
        }
      }
      await pause(this.intervalMs);
    }
  }
}

/** The whole history of a session (through one client), oldest first. */
export async function fullHistory(client, sessionId) {
  const out = [];
  let after = null;
  for (;;) {
    const page = await client.invoke('GetSessionHistory', sessionId, after, 1000);
    out.push(...page);
    if (page.length < 1000) return out;
    after = page[page.length - 1].eventId;
  }
}

/**
 * Checks the books: every accepted message is in the history exactly once;
 * every event in the history reached every client, live or recovered. Waits
 * (with a deadline) for live deliveries still in flight.
 * @returns {Promise<object>} counts for the report; `problems` lists failures
 */
export async function audit({ clients, load, sessionId, reader, from = null, waitMs = 15000 }) {
  // Events from `from` on (the end of the session's setup, when every client
  // was a member) must have reached every client.
  const history = (await fullHistory(reader, sessionId)).filter((e) => !from || compareIds(e.eventId, from) > 0);
  const ids = history.map((e) => e.eventId);
  const problems = [];

  // Accepted messages are in the history, once each.
  const recorded = new Map();
  for (const e of history) {
    if (e.target === 'ReceiveSessionMessage') {
      const content = e.payload?.content;
      recorded.set(content, (recorded.get(content) || 0) + 1);
    }
  }
  const counts = { sent: load ? load.sent.size : 0, accepted: 0, refused: 0, unknown: 0, unknownRecorded: 0 };
  if (load) {
    for (const [content, state] of load.sent) {
      if (state === 'accepted') {
        counts.accepted++;
        const n = recorded.get(content) || 0;
        if (n !== 1) problems.push(`accepted message ${content} is in the history ${n} times`);
      } else if (state === 'refused') {
        counts.refused++;
        if (recorded.get(content)) problems.push(`refused message ${content} is in the history`);
      } else if (state === 'unknown') {
        counts.unknown++;
        if (recorded.get(content)) counts.unknownRecorded++;
      } else {
        problems.push(`message ${content} still pending`);
      }
    }
  }

  // Every event reached every client (live or through its catch-ups).
  await Promise.allSettled(clients.map((c) => c.catchingUp));
  await Promise.allSettled(
    clients.map((c) => c.waitUntil(() => ids.every((id) => c.events.has(id)), waitMs, 'every recorded event')),
  );
  let live = 0;
  let recovered = 0;
  let missing = 0;
  let liveDuplicates = 0;
  for (const c of clients) {
    const miss = ids.filter((id) => !c.events.has(id));
    missing += miss.length;
    if (miss.length) {
      const sample = miss.slice(0, 5).map((id) => {
        const e = history.find((h) => h.eventId === id);
        return `${id} ${e.target} ${e.payload?.content ?? ''}`;
      });
      problems.push(`${c.label} (reconnects ${c.reconnects.length}) is missing ${miss.length} events, e.g. ${sample.join('; ')}`);
    }
    for (const id of ids) {
      const e = c.events.get(id);
      if (e?.how === 'live') live++;
      else if (e?.how === 'recovered') recovered++;
    }
    liveDuplicates += c.liveDuplicates;
    if (c.liveDuplicates) problems.push(`${c.label} received ${c.liveDuplicates} events twice live`);
    if (c.catchUpErrors.length) problems.push(`${c.label} catch-up failed: ${c.catchUpErrors.join('; ')}`);
  }
  return {
    ...counts,
    historyEvents: history.length,
    clients: clients.length,
    deliveriesExpected: history.length * clients.length,
    live,
    recovered,
    missing,
    liveDuplicates,
    reconnects: clients.reduce((n, c) => n + c.reconnects.length, 0),
    errors: load ? Object.fromEntries(load.errors) : {},
    history,
    problems,
  };
}

/** A one-line summary of an audit for the test log. */
export function summary(name, a) {
  return (
    `${name}: messages sent ${a.sent}, accepted ${a.accepted}, refused ${a.refused}, ` +
    `unknown ${a.unknown} (${a.unknownRecorded} recorded); history ${a.historyEvents} events x ${a.clients} clients = ` +
    `${a.deliveriesExpected} deliveries: live ${a.live}, recovered ${a.recovered}, missing ${a.missing}, ` +
    `live duplicates ${a.liveDuplicates}; reconnects ${a.reconnects}`
  );
}

/**
 * Creates a session owned by owner, invites and joins the others, tracks it
 * on all. Resolves {sessionId, from}: from is the last event id of the setup
 * (audit counts the events after it).
 */
export async function sharedSession(owner, others, name) {
  const created = await owner.invoke('CreateSession', { name, type: 1, agentIds: [], workingDirectory: '' });
  if (!created?.success) throw new Error(`CreateSession failed: ${JSON.stringify(created)}`);
  const sessionId = created.sessionId;
  for (const c of others) {
    await owner.invoke('InviteToSession', sessionId, c.user);
    await c.invoke('JoinSession', sessionId);
  }
  for (const c of [owner, ...others]) c.track(sessionId);
  const setup = await fullHistory(owner, sessionId);
  return { sessionId, from: setup.length ? setup[setup.length - 1].eventId : null };
}

/** Starts clients in batches of `batch` at a time. */
export async function startAll(clients, batch = 25) {
  for (let i = 0; i < clients.length; i += batch) {
    await Promise.all(clients.slice(i, i + batch).map((c) => c.start()));
  }
}

/** Every client sends one probe; resolves once every client received every probe live. */
export async function probeRound(clients, sessionId, tag, ms = 15000) {
  const contents = clients.map((c) => `${tag}:${c.label}`);
  await Promise.all(clients.map((c, i) => c.invoke('SendSessionMessage', sessionId, contents[i])));
  const has = (c, content) =>
    [...c.events.values()].some((e) => e.how === 'live' && e.payload?.content === content);
  await Promise.all(
    clients.map((c) => c.waitUntil(() => contents.every((x) => has(c, x)), ms, `${tag} probes`)),
  );
}

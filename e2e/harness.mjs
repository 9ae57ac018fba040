// Harness for the end-to-end tests: builds the hubfarm binary, runs a dev farm
// (`hubfarm dev`: embedded Redis, N hub nodes behind the round-robin dev proxy)
// on a free loopback port, and connects official @microsoft/signalr clients to it.
//
// Two roles:
//   node harness.mjs [file.test.mjs ...]   (what `npm test` runs)
//       builds the binary once, then runs the test files with `node --test`,
//       passing the binary to them in HUBFARM_BIN.
//   import { useFarm, ... } from './harness.mjs'   (inside a test file)
//       starts a farm before the file's tests and stops it afterwards; the server
//       log is printed when a test failed and is always kept in artifacts/.
//
// Environment:
//   HUBFARM_BIN                  use this binary instead of building one
//   HUBFARM_E2E_NODES            hub nodes in the dev farm (default 3)
//   HUBFARM_E2E_TIMEOUT_MS       deadline for one awaited event (default 10000)
//   HUBFARM_E2E_START_TIMEOUT_MS deadline for the farm to answer /healthz (default 60000)
//   HUBFARM_E2E_CLIENT_LOG       SignalR client log level echoed to stderr (trace|debug|information|warning|error; default none)
//   HUBFARM_E2E_CONCURRENCY      test files run at once (default 1)

import { spawn, spawnSync } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { after, afterEach, before } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import * as signalR from '@microsoft/signalr';

const e2eDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(e2eDir, '..');
const artifactsDir = join(e2eDir, 'artifacts');

/** Deadline for one awaited event, in milliseconds. */
export const EVENT_TIMEOUT_MS = Number(process.env.HUBFARM_E2E_TIMEOUT_MS || 10000);
const START_TIMEOUT_MS = Number(process.env.HUBFARM_E2E_START_TIMEOUT_MS || 60000);
const STOP_TIMEOUT_MS = 30000; // SIGTERM drains connections over a window first
const LOG_LIMIT = 4 << 20; // bytes of server output kept in memory

// ---------------------------------------------------------------------------
// Small utilities

/**
 * Resolves or rejects like promise, or rejects once ms have passed.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what  described in the timeout error
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A unique, readable id for users and session names in tests. */
export function uniqueName(prefix) {
  return `${prefix}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Asks the OS for a free loopback TCP port. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

/**
 * Collects every item of a SignalR server-to-client stream until it completes.
 * @param {signalR.IStreamResult<any>} stream
 * @param {number} [ms]
 * @returns {Promise<any[]>}
 */
export function collectStream(stream, ms = EVENT_TIMEOUT_MS) {
  const items = [];
  let subscription;
  const done = new Promise((resolveItems, reject) => {
    subscription = stream.subscribe({
      next: (item) => items.push(item),
      complete: () => resolveItems(items),
      error: (err) => reject(err),
    });
  });
  return withTimeout(done, ms, 'stream completion').catch((err) => {
    subscription?.dispose();
    throw err;
  });
}

// ---------------------------------------------------------------------------
// Building the binary

let builtBinary; // per process

/** Builds ./cmd/hubfarm into dir and returns the binary's path. */
export function buildBinary(dir) {
  const out = join(dir, process.platform === 'win32' ? 'hubfarm.exe' : 'hubfarm');
  process.stderr.write(`e2e: building hubfarm (go build ./cmd/hubfarm) ...\n`);
  const started = Date.now();
  const res = spawnSync('go', ['build', '-o', out, './cmd/hubfarm'], { cwd: repoRoot, stdio: 'inherit' });
  if (res.error) {
    throw new Error(`e2e: cannot run go (${res.error.message}); is Go installed and on PATH?`);
  }
  if (res.status !== 0) {
    throw new Error(`e2e: go build ./cmd/hubfarm failed (exit ${res.status})`);
  }
  process.stderr.write(`e2e: built in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return out;
}

/** The binary to run: HUBFARM_BIN, or one built once for this process. */
function binary() {
  if (process.env.HUBFARM_BIN) return process.env.HUBFARM_BIN;
  if (!builtBinary) {
    const dir = mkdtempSync(join(tmpdir(), 'hubfarm-e2e-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    builtBinary = buildBinary(dir);
  }
  return builtBinary;
}

// ---------------------------------------------------------------------------
// The farm process

/**
 * A running `hubfarm dev` farm.
 */
export class Farm {
  /** @param {{name: string, nodes: number, args: string[], env: Record<string,string>}} opts */
  constructor(opts) {
    this.name = opts.name;
    this.nodes = opts.nodes;
    this.args = opts.args;
    this.env = opts.env;
    /** Base URL of the dev proxy, e.g. http://127.0.0.1:41234 */
    this.baseUrl = '';
    this.logChunks = [];
    this.logBytes = 0;
    this.clientLog = [];
    this.connections = new Set();
    this.child = null;
    this.exited = null; // promise of {code, signal}
  }

  /** Starts the farm and waits until /healthz answers 200 through the proxy. */
  async start() {
    mkdirSync(artifactsDir, { recursive: true });
    this.logFile = createWriteStream(join(artifactsDir, `${this.name}.log`));
    const bin = binary();
    // A free port can be taken between probing and binding; try a few.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      this.baseUrl = `http://127.0.0.1:${port}`;
      const args = ['dev', '--listen', `127.0.0.1:${port}`, '--nodes', String(this.nodes), ...this.args];
      this.appendLog(`e2e: starting ${bin} ${args.join(' ')}\n`);
      // Own process group, so that stopping also reaches anything the binary
      // started (and a Ctrl-C of the test run does not race our shutdown).
      this.child = spawn(bin, args, {
        cwd: repoRoot,
        env: { ...process.env, ...this.env },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: process.platform !== 'win32',
      });
      const child = this.child;
      child.stdout.on('data', (b) => this.appendLog(b));
      child.stderr.on('data', (b) => this.appendLog(b));
      this.exited = new Promise((resolveExit) => {
        child.on('error', (err) => {
          this.appendLog(`e2e: cannot start ${bin}: ${err.message}\n`);
          resolveExit({ code: -1, signal: null });
        });
        child.on('exit', (code, signal) => resolveExit({ code, signal }));
      });
      // Never leave a farm behind, however this process ends.
      const killOnExit = () => this.signal('SIGKILL');
      const killOnSignal = (sig) => {
        this.signal('SIGKILL');
        process.exit(sig === 'SIGINT' ? 130 : 143);
      };
      process.on('exit', killOnExit);
      process.once('SIGINT', killOnSignal);
      process.once('SIGTERM', killOnSignal);
      this.exited.then(() => {
        process.off('exit', killOnExit);
        process.off('SIGINT', killOnSignal);
        process.off('SIGTERM', killOnSignal);
      });

      const outcome = await this.waitHealthy();
      if (outcome === 'healthy') return this;
      if (outcome === 'exited' && /address already in use/i.test(this.log()) && attempt < 3) {
        continue;
      }
      await this.stop();
      this.printLog();
      throw new Error(
        outcome === 'exited'
          ? `hubfarm dev exited before becoming healthy (its log is above)`
          : `hubfarm dev did not answer GET /healthz with 200 within ${START_TIMEOUT_MS} ms (its log is above)`,
      );
    }
  }

  /** Sends sig to the farm's process group (or the process alone). */
  signal(sig) {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      try {
        child.kill(sig);
      } catch {
        // already gone
      }
    }
  }

  /** Polls /healthz; resolves 'healthy', 'exited' or 'timeout'. */
  async waitHealthy() {
    const deadline = Date.now() + START_TIMEOUT_MS;
    let exited = false;
    this.exited.then(() => {
      exited = true;
    });
    while (Date.now() < deadline) {
      if (exited) return 'exited';
      try {
        const res = await fetch(`${this.baseUrl}/healthz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.status === 200) return 'healthy';
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return exited ? 'exited' : 'timeout';
  }

  /**
   * Stops the farm: SIGTERM, then SIGKILL after a deadline.
   * @returns {Promise<{code: number|null, signal: string|null, killed: boolean}>}
   */
  async stop() {
    if (!this.child) return { code: null, signal: null, killed: false };
    this.stopping ??= this.stopOnce();
    return this.stopping;
  }

  async stopOnce() {
    const child = this.child;
    let killed = false;
    if (child.exitCode === null && child.signalCode === null) {
      this.signal('SIGTERM');
      const res = await withTimeout(this.exited, STOP_TIMEOUT_MS, 'exit after SIGTERM').catch(() => null);
      if (res === null) {
        this.appendLog(`e2e: still running ${STOP_TIMEOUT_MS} ms after SIGTERM; sending SIGKILL\n`);
        this.signal('SIGKILL');
        killed = true;
      }
    }
    const { code, signal } = await this.exited;
    // Collect the last output, but do not wait for pipes held open by strays.
    if (child.stdout && !child.stdout.closed) {
      await withTimeout(new Promise((r) => child.once('close', r)), 2000, 'output').catch(() => {});
    }
    child.stdout?.destroy();
    child.stderr?.destroy();
    await new Promise((r) => this.logFile.end(r));
    return { code, signal, killed };
  }

  appendLog(chunk) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk);
    this.logFile?.write(buf);
    this.logChunks.push(buf);
    this.logBytes += buf.length;
    while (this.logBytes > LOG_LIMIT && this.logChunks.length > 1) {
      this.logBytes -= this.logChunks.shift().length;
    }
  }

  /** The server output collected so far (the tail, if it is very long). */
  log() {
    return Buffer.concat(this.logChunks).toString('utf8');
  }

  /** Prints the server log and the clients' log lines to stderr. */
  printLog() {
    if (this.logPrinted) return;
    this.logPrinted = true;
    const bar = '-'.repeat(30);
    process.stderr.write(`\n${bar} hubfarm dev log (${this.name}) ${bar}\n${this.log()}\n`);
    if (this.clientLog.length) {
      process.stderr.write(`${bar} SignalR client log (${this.name}) ${bar}\n${this.clientLog.join('\n')}\n`);
    }
    process.stderr.write(`${bar} end of logs ${bar}\n`);
  }

  /**
   * The URL of a hub behind the proxy.
   * @param {'orchestrator'|'agent'} hub
   * @param {Record<string,string>} [query]
   */
  hubUrl(hub, query = {}) {
    const u = new URL(`/hubs/${hub}`, this.baseUrl);
    for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
    return u.toString();
  }

  /**
   * Builds a client for a hub (WebSockets, JSON protocol) and records the given
   * callbacks from the start. Call `await client.start()` to connect; the farm
   * stops every client it made before it shuts down.
   * @param {'orchestrator'|'agent'} hub
   * @param {{user?: string, reconnectDelays?: number[], events?: string[], label?: string}} [opts]
   */
  client(hub, opts = {}) {
    const label = opts.label || opts.user || hub;
    const query = opts.user ? { user: opts.user } : {};
    const builder = new signalR.HubConnectionBuilder()
      .withUrl(this.hubUrl(hub, query), { transport: signalR.HttpTransportType.WebSockets })
      .withHubProtocol(new signalR.JsonHubProtocol())
      .configureLogging(new ClientLogger(label, this.clientLog));
    if (opts.reconnectDelays) builder.withAutomaticReconnect(opts.reconnectDelays);
    const connection = builder.build();
    const client = new Client(connection, opts.events || DEFAULT_EVENTS, label);
    this.connections.add(connection);
    return client;
  }

  /** Stops every client made by this farm. */
  async stopClients() {
    await Promise.allSettled([...this.connections].map((c) => withTimeout(c.stop(), 5000, 'client stop')));
    this.connections.clear();
  }
}

/** Callbacks recorded when a test does not name its own. */
export const DEFAULT_EVENTS = [
  'Connected',
  'SessionCreated',
  'SessionJoined',
  'ReceiveError',
  'ReceiveSessionMessage',
  'OrchestrationPlanCreated',
  'OrchestrationProgress',
  'StepCompleted',
  'OrchestrationCompleted',
];

/**
 * A HubConnection plus a record of the callbacks it received.
 */
export class Client {
  /**
   * @param {signalR.HubConnection} connection
   * @param {string[]} targets  callbacks to record
   * @param {string} [label]  names the client in errors
   */
  constructor(connection, targets, label = 'client') {
    this.connection = connection;
    this.label = label;
    /** @type {Map<string, any[][]>} target -> argument lists, in arrival order */
    this.received = new Map();
    this.waiters = new Set();
    for (const target of targets) {
      this.received.set(target, []);
      connection.on(target, (...args) => {
        this.received.get(target).push(args);
        for (const w of [...this.waiters]) w(target, args);
      });
    }
  }

  start() {
    return withTimeout(this.connection.start(), EVENT_TIMEOUT_MS, 'connection start');
  }

  /** invoke with a deadline. */
  invoke(method, ...args) {
    return withTimeout(this.connection.invoke(method, ...args), EVENT_TIMEOUT_MS, `completion of ${method}`);
  }

  /** First arguments of every recorded call of target so far. */
  all(target) {
    return (this.received.get(target) || []).map((args) => args[0]);
  }

  /**
   * Waits for a call of target whose first argument satisfies pred; calls
   * already received count. Resolves with that argument.
   * @param {string} target
   * @param {(arg: any, args: any[]) => boolean} [pred]
   * @param {number} [ms]
   */
  waitFor(target, pred = () => true, ms = EVENT_TIMEOUT_MS) {
    if (!this.received.has(target)) {
      throw new Error(`callback ${target} is not recorded by this client; name it in the events option`);
    }
    const past = this.received.get(target).find((args) => pred(args[0], args));
    if (past) return Promise.resolve(past[0]);
    let waiter;
    const arrived = new Promise((resolveArg) => {
      waiter = (t, args) => {
        if (t === target && pred(args[0], args)) resolveArg(args[0]);
      };
      this.waiters.add(waiter);
    });
    return withTimeout(arrived, ms, `callback ${target} matching ${pred} at ${this.label}`)
      .catch((err) => {
        const seen = this.received.get(target).map((args) => JSON.stringify(args[0]));
        err.message += ` (connection ${this.connection.connectionId}, state ${this.connection.state}; ${target} received so far: ${seen.length ? seen.join(', ') : 'none'})`;
        throw err;
      })
      .finally(() => this.waiters.delete(waiter));
  }
}

const LEVELS = {
  trace: signalR.LogLevel.Trace,
  debug: signalR.LogLevel.Debug,
  information: signalR.LogLevel.Information,
  warning: signalR.LogLevel.Warning,
  error: signalR.LogLevel.Error,
  none: signalR.LogLevel.None,
};

/** Keeps the SignalR client's log for failure reports; echoes it when asked to. */
class ClientLogger {
  constructor(label, sink) {
    this.label = label;
    this.sink = sink;
    this.echo = LEVELS[(process.env.HUBFARM_E2E_CLIENT_LOG || 'none').toLowerCase()] ?? signalR.LogLevel.None;
  }

  log(level, message) {
    if (level < signalR.LogLevel.Debug) return;
    const line = `${new Date().toISOString()} [${this.label}] ${signalR.LogLevel[level]}: ${message}`;
    this.sink.push(line);
    if (level >= this.echo) process.stderr.write(`${line}\n`);
  }
}

// ---------------------------------------------------------------------------
// node:test integration

/**
 * Registers hooks that start a farm before the current test file and stop it
 * after; prints the server log if a test failed. Returns a getter for the farm.
 * @param {{nodes?: number, args?: string[], env?: Record<string,string>, name?: string}} [opts]
 * @returns {() => Farm}
 */
export function useFarm(opts = {}) {
  const name = opts.name || basename(process.argv[1] || 'e2e').replace(/\.m?js$/, '');
  let farm;
  let failed = false;
  before(async () => {
    farm = new Farm({
      name,
      nodes: opts.nodes ?? Number(process.env.HUBFARM_E2E_NODES || 3),
      args: opts.args || [],
      env: opts.env || {},
    });
    await farm.start();
  });
  afterEach(async (t) => {
    if (t.passed === false) failed = true;
    await farm?.stopClients();
  });
  after(async () => {
    if (!farm) return;
    await farm.stopClients();
    const res = await farm.stop();
    if (res.killed) {
      process.stderr.write(`e2e: ${name}: hubfarm dev ignored SIGTERM and was killed\n`);
    }
    if (failed) farm.printLog();
  });
  return () => {
    if (!farm) throw new Error('farm not started');
    return farm;
  };
}

// ---------------------------------------------------------------------------
// Entry point: node harness.mjs [files]

async function main(argv) {
  const files = argv.length
    ? argv
    : readdirSync(e2eDir)
        .filter((f) => f.endsWith('.test.mjs'))
        .sort();
  if (files.length === 0) {
    console.error('e2e: no *.test.mjs files found');
    return 1;
  }
  let tmp;
  const env = { ...process.env };
  try {
    if (!env.HUBFARM_BIN) {
      tmp = mkdtempSync(join(tmpdir(), 'hubfarm-e2e-'));
      env.HUBFARM_BIN = buildBinary(tmp);
    }
    const concurrency = env.HUBFARM_E2E_CONCURRENCY || '1';
    const res = spawnSync(
      process.execPath,
      ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=180000', ...files],
      { cwd: e2eDir, env, stdio: 'inherit' },
    );
    if (res.error) throw res.error;
    if (res.status !== 0) {
      console.error(`e2e: tests failed (server logs are in ${basename(e2eDir)}/artifacts/)`);
    }
    return res.status ?? 1;
  } catch (err) {
    console.error(err.message);
    return 1;
  } finally {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}

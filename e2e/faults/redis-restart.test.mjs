// Fault test 3, Redis restart: redis-server stops for 10 s under a chat load,
// then starts again (same data: AOF). Every node turns not-ready and back to
// ready by itself; clients stay connected and the nodes keep serving what needs
// no Redis; messages sent during the outage are refused with an error (never
// accepted and dropped). Once its subscription is back, each node asks its
// clients to reconnect over the drain window (what other nodes published while
// it was cut off never reached it); they catch up from the history. Messages
// sent after the recovery reach every member; nothing accepted is lost.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  ChatLoad, JWT_SECRET, LocalFarm, audit, log, probeRound, sharedSession, startAll, summary, until,
} from './farm.mjs';

const USERS = 9;
const OUTAGE_MS = 10000;

const farm = new LocalFarm({
  name: 'redis-restart',
  serveArgs: ['--jwt-secret', JWT_SECRET, '--heartbeat', '1s', '--drain-window', '4s', '--negotiate-rate-per-ip', '1000'],
});
before(() => farm.start());
after(() => farm.stop());

const readiness = () => Promise.all([1, 2, 3].map((i) => farm.ready(i)));

test('Redis restart: readiness red then green by itself, nothing accepted is lost, delivery resumes', async () => {
  const clients = Array.from({ length: USERS }, (_, i) => farm.client(`redis-user-${i + 1}`));
  await startAll(clients);
  const [owner, ...others] = clients;
  const { sessionId, from } = await sharedSession(owner, others, 'redis-restart');
  await probeRound(clients, sessionId, 'before');

  const load = new ChatLoad(clients, sessionId, 100).start();
  await new Promise((r) => setTimeout(r, 2000));

  const t = Date.now();
  await farm.stopRedis();
  const stoppedAt = Date.now();
  await until(async () => (await readiness()).every((r) => !r), 10000, 'every node not ready', 50);
  const redAfterMs = Date.now() - stoppedAt;
  const acceptedBefore = load.count('accepted');

  // Local service goes on: the connections stay, a server stream still works.
  const items = [];
  await new Promise((resolveStream, reject) => {
    owner.connection.stream('Counter', 5).subscribe({ next: (x) => items.push(x), complete: resolveStream, error: reject });
  });
  assert.deepEqual(items, [0, 1, 2, 3, 4], 'a stream that needs no Redis works during the outage');

  await new Promise((r) => setTimeout(r, Math.max(0, OUTAGE_MS - (Date.now() - t))));
  assert.ok(clients.every((c) => c.connected), 'no client was disconnected by the outage');
  const duringOutage = { accepted: load.count('accepted') - acceptedBefore, refused: load.count('refused') };
  await farm.startRedis();
  const startedAt = Date.now();
  await until(async () => (await readiness()).every((r) => r), 30000, 'every node ready again', 100);
  const greenAfterMs = Date.now() - startedAt;

  // Each node asks its clients to reconnect (and so to catch up) over its
  // drain window; the load goes on meanwhile.
  await until(() => clients.every((c) => c.reconnects.some((r) => r.at > startedAt) && c.connected), 30000,
    'every client to reconnect once after the recovery', 100);
  const recycledMs = Math.max(...clients.map((c) => c.reconnects[c.reconnects.length - 1].at)) - startedAt;
  const reasons = new Set(clients.map((c) => c.closes[c.closes.length - 1].error));
  await probeRound(clients, sessionId, 'after-recovery');
  await new Promise((r) => setTimeout(r, 1000));
  await load.stop();

  const a = await audit({ clients, load, sessionId, reader: owner, from });
  log(summary('redis restart', a));
  log(`outage ${OUTAGE_MS} ms: not ready on every node ${redAfterMs} ms after the stop, ready ${greenAfterMs} ms after the start; ` +
    `during the outage ${duringOutage.accepted} accepted, ${duringOutage.refused} refused`);
  log(`refusals: ${JSON.stringify(a.errors)}`);
  log(`clients asked to reconnect within ${recycledMs} ms of the restart (${[...reasons].join('; ')})`);

  assert.deepEqual(a.problems, []);
  assert.equal(a.missing, 0, 'every recorded event reached every member');
  assert.ok(a.refused > 0, 'sends during the outage were refused to the sender');
  assert.ok(clients.every((c) => c.connected), 'every client ends connected');
});

// Fault test 4, drain: SIGTERM on a node holding every one of 500 clients.
// The node turns not-ready, closes its clients with allowReconnect spread over
// the drain window, and exits 0; the official client reconnects through nginx
// and every client lands on the other nodes. Meanwhile CHATTERS of those
// clients chat in one session, and every session event is counted: each
// accepted message is recorded once and reaches every member, live or
// through the catch-up after the reconnect.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { fileURLToPath } from 'node:url';

import {
  ChatLoad, JWT_SECRET, LocalFarm, audit, log, probeRound, sharedSession, startAll, summary, until,
} from './farm.mjs';

const CLIENTS = Number(process.env.HUBFARM_FAULTS_DRAIN_CLIENTS || 500);
const WINDOW_S = 5;
const CHATTERS = Math.min(20, CLIENTS);

const farm = new LocalFarm({
  name: 'drain',
  serveArgs: ['--jwt-secret', JWT_SECRET, '--drain-window', `${WINDOW_S}s`, '--heartbeat', '1s', '--negotiate-rate-per-ip', '1000',
    '--agents', fileURLToPath(new URL('agents.yaml', import.meta.url)), '--job-visibility-timeout', '30s'],
});
before(() => farm.start());
after(() => farm.stop());

test(`drain: SIGTERM on a node with ${CLIENTS} clients moves them all to the other nodes over the window`, async () => {
  // Only node 1 runs while the clients connect, so nginx gives it all of them.
  await farm.stopNode(2);
  await farm.stopNode(3);
  const clients = Array.from({ length: CLIENTS }, (_, i) => farm.client(`drain-${i}`));
  let t = Date.now();
  await startAll(clients, 50);
  log(`${CLIENTS} clients connected through nginx in ${Date.now() - t} ms`);
  assert.equal(await farm.connections(1), CLIENTS, 'node 1 holds every client');
  const chatters = clients.slice(0, CHATTERS);
  const { sessionId, from } = await sharedSession(chatters[0], chatters.slice(1), 'drain');
  await farm.startNode(2);
  await farm.startNode(3);
  const firstIds = new Set(clients.map((c) => c.connectionId));

  // Watch node 1's readiness from just before SIGTERM.
  let notReadyAt = 0;
  let watching = true;
  const watcher = (async () => {
    while (watching && !notReadyAt) {
      if (!(await farm.ready(1))) notReadyAt = Date.now();
      await new Promise((r) => setTimeout(r, 25));
    }
  })();

  const load = new ChatLoad(chatters, sessionId, 200).start();
  await new Promise((r) => setTimeout(r, 1000));

  t = Date.now();
  const stopped = await farm.stopNode(1);
  const exitedAt = Date.now();
  watching = false;
  await watcher;
  log(`node 1: ${stopped.out.trim()} (${exitedAt - t} ms)`);
  assert.equal(stopped.status, '0', 'the drained node exits 0');
  // Deregistered: gone from the farm's node registry (not left for the reaper).
  const id1 = farm.nodeId(1);
  assert.deepEqual(await farm.redis('ZSCORE', 'hf:nodes', id1), [], `${id1} left the node registry`);
  assert.deepEqual(await farm.redis('EXISTS', `hf:node:${id1}`), ['0'], `${id1}'s registry hash is gone`);

  await until(() => clients.every((c) => c.connected && c.reconnects.length > 0), 60000,
    'every client reconnected', 200).catch((err) => {
    const stuck = clients.filter((c) => !(c.connected && c.reconnects.length > 0));
    err.message += `; ${stuck.length} not back, e.g. ${stuck.slice(0, 3).map((c) => `${c.label} ${c.connection.state} closes=${JSON.stringify(c.closes)} closed=${JSON.stringify(c.closed)}`).join(' | ')}`;
    throw err;
  });
  const backAt = Math.max(...clients.map((c) => c.reconnects[0].at));

  // The chat goes on a moment on the new nodes; then the books.
  await new Promise((r) => setTimeout(r, 1000));
  await load.stop();
  await probeRound(chatters, sessionId, 'after-drain');
  const a = await audit({ clients: chatters, load, sessionId, reader: chatters[0], from });
  log(summary('drain', a));

  const closeTimes = clients.map((c) => c.closes[0].at - t).sort((a, b) => a - b);
  const reasons = new Set(clients.map((c) => c.closes[0].error));
  const onNode2 = await farm.connections(2);
  const onNode3 = await farm.connections(3);
  const report = {
    clients: CLIENTS,
    windowMs: WINDOW_S * 1000,
    notReadyAfterMs: notReadyAt ? notReadyAt - t : null,
    firstCloseMs: closeTimes[0],
    medianCloseMs: closeTimes[Math.floor(closeTimes.length / 2)],
    lastCloseMs: closeTimes[closeTimes.length - 1],
    exitAfterMs: exitedAt - t,
    allBackAfterMs: backAt - t,
    reconnected: clients.filter((c) => c.connected).length,
    closedForGood: clients.filter((c) => c.closed).length,
    closesPerClient: [Math.min(...clients.map((c) => c.closes.length)), Math.max(...clients.map((c) => c.closes.length))],
    reconnectsPerClient: [Math.min(...clients.map((c) => c.reconnects.length)), Math.max(...clients.map((c) => c.reconnects.length))],
    onNode2,
    onNode3,
    reasons: [...reasons],
  };
  log(`drain report: ${JSON.stringify(report)}`);

  // (within the resolution of polling /readyz on a busy machine)
  assert.ok(notReadyAt && notReadyAt - t <= closeTimes[0] + 1000, 'not ready when the first client is closed');
  assert.deepEqual(report.reasons, ['Server returned an error on close: Server is shutting down.'],
    'every client got the shutdown Close (with allowReconnect, or it would not have reconnected)');
  assert.equal(report.closedForGood, 0, 'no client gave up');
  assert.deepEqual(report.closesPerClient, [1, 1], 'every client got exactly one Close: 500 sent, 500 received');
  assert.deepEqual(report.reconnectsPerClient, [1, 1], 'every client reconnected exactly once');
  // Spread over the window: not all at once, and done within it (plus slack).
  assert.ok(report.lastCloseMs - report.firstCloseMs >= WINDOW_S * 1000 * 0.6,
    `closes spread over the window (${report.firstCloseMs}..${report.lastCloseMs} ms)`);
  assert.ok(report.lastCloseMs <= WINDOW_S * 1000 + 5000, `closes within the window, give or take a busy machine (${report.lastCloseMs} ms)`);
  const mid = (report.medianCloseMs - report.firstCloseMs) / (report.lastCloseMs - report.firstCloseMs);
  assert.ok(mid >= 0.25 && mid <= 0.75, `evenly spread: the median close is mid-way (${mid.toFixed(2)} of the span)`);
  for (const c of clients) assert.ok(!firstIds.has(c.connectionId), 'a reconnect is a new connection');
  assert.equal(onNode2 + onNode3, CLIENTS, 'every client is on node 2 or 3');
  assert.ok(onNode2 > 0 && onNode3 > 0, `both remaining nodes took clients (${onNode2} / ${onNode3})`);

  // The chat through the drain: nothing lost, nothing twice, nothing refused.
  assert.deepEqual(a.problems, []);
  assert.equal(a.missing, 0, 'zero lost session events');
  assert.equal(a.liveDuplicates, 0, 'zero duplicated');
  assert.equal(a.refused, 0, 'no message refused');
  assert.ok(a.accepted >= CHATTERS * 5, `a real chat through the drain (${a.accepted} accepted)`);
});

test('drain: a job still running when the window ends is released, finished by another node, and the node exits 0', async () => {
  for (const i of [1, 2, 3]) if (!(await farm.ready(i))) await farm.startNode(i);
  const alice = farm.client('drain-jobs-alice');
  await alice.start();
  const created = await alice.invoke('CreateSession', { name: 'drain-jobs', type: 2, agentIds: [], workingDirectory: '' });
  const sessionId = created.sessionId;
  alice.track(sessionId);
  // One step of 12 s: longer than the 5 s window.
  const plan = await alice.invoke('CreateOrchestrationPlan', {
    sessionId, goal: 'a long step', strategy: 0, availableAgentIds: ['scripted-marathon'], maxSteps: 1,
  });
  assert.equal(plan.steps.length, 1);
  await alice.invoke('ExecutePlan', plan.id);
  const [holder] = await until(async () => {
    const h = await farm.jobHolders();
    return h.length ? h : null;
  }, 10000, 'the step to be taken by a worker');
  const victim = farm.nodeIndex(holder);
  assert.ok(victim > 0, `the job's consumer ${holder} is a farm node`);
  await new Promise((r) => setTimeout(r, 1000)); // the step is well under way

  const t = Date.now();
  const stopped = await farm.stopNode(victim);
  const tookMs = Date.now() - t;
  log(`node ${victim} ran the step; ${stopped.out.trim()} (${tookMs} ms)`);
  assert.equal(stopped.status, '0', 'releasing a job is part of a clean drain: exit 0');
  assert.ok(tookMs <= WINDOW_S * 1000 + 4000, `the node did not wait for the job beyond the window (${tookMs} ms)`);

  const done = await alice.waitUntil(() => alice.all('OrchestrationCompleted').some((r) => r.planId === plan.id),
    40000, 'OrchestrationCompleted').then(() => alice.all('OrchestrationCompleted').find((r) => r.planId === plan.id));
  assert.equal(done.success, true, `the plan completed: ${JSON.stringify(done)}`);
  const steps = alice.all('StepCompleted').filter((s) => s.planId === plan.id);
  assert.equal(steps.length, 1, 'one StepCompleted: the released attempt left no result');
  const state = await alice.invoke('GetPlan', plan.id);
  assert.equal(state.status, 'completed');
  const holders = await farm.jobHolders();
  assert.deepEqual(holders, [], 'no job left pending');
  log(`released step finished on another node; plan ${plan.id} completed once`);
});

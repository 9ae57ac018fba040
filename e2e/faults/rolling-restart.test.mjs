// Fault test 2, rolling restart: SIGTERM, wait, start -- node after node, all
// three, under a steady chat load and a running plan. Every drained client
// reconnects through nginx; no session event is lost; the plan completes
// once; every client ends connected.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  ChatLoad, JWT_SECRET, LocalFarm, audit, log, probeRound, sharedSession, startAll, summary, until,
} from './farm.mjs';

const USERS = 12;
const STEPS = 12;

const farm = new LocalFarm({
  name: 'rolling-restart',
  serveArgs: [
    '--jwt-secret', JWT_SECRET, '--agents', fileURLToPath(new URL('agents.yaml', import.meta.url)),
    '--heartbeat', '1s', '--drain-window', '3s', '--job-visibility-timeout', '5s', '--negotiate-rate-per-ip', '1000',
  ],
});
before(() => farm.start());
after(() => farm.stop());

test('rolling restart of every node under load: zero lost, every client connected', async () => {
  const clients = Array.from({ length: USERS }, (_, i) => farm.client(`rolling-user-${i + 1}`));
  await startAll(clients);
  const [owner, ...others] = clients;
  const { sessionId, from } = await sharedSession(owner, others, 'rolling-restart');
  const plan = await owner.invoke('CreateOrchestrationPlan', {
    sessionId, goal: 'a plan that outlives a node', strategy: 3,
    availableAgentIds: ['scripted-writer', 'scripted-reviewer'], maxSteps: STEPS,
  });

  const load = new ChatLoad(clients, sessionId, 100).start();
  await owner.invoke('ExecutePlan', plan.id);
  await new Promise((r) => setTimeout(r, 1000));

  const restarts = [];
  for (const i of [1, 2, 3]) {
    const t = Date.now();
    const stopped = await farm.stopNode(i);
    assert.equal(stopped.status, '0', `node ${i} exits 0 after SIGTERM`);
    await farm.startNode(i);
    await until(() => clients.every((c) => c.connected), 30000, 'every client connected again');
    restarts.push({ node: i, stoppedAfterS: stopped.seconds, backMs: Date.now() - t });
  }
  log(`restarts: ${JSON.stringify(restarts)}`);

  await owner.waitUntil(() => owner.all('OrchestrationCompleted').some((r) => r.planId === plan.id), 60000,
    'OrchestrationCompleted');
  await new Promise((r) => setTimeout(r, 1000));
  await load.stop();
  await probeRound(clients, sessionId, 'after-restarts');

  const a = await audit({ clients, load, sessionId, reader: owner, from });
  log(summary('rolling restart', a));
  const steps = a.history.filter((e) => e.target === 'StepCompleted' && e.payload.planId === plan.id);
  const completions = a.history.filter((e) => e.target === 'OrchestrationCompleted' && e.payload.planId === plan.id);
  log(`plan: ${steps.length} StepCompleted for ${STEPS} steps, ${completions.length} OrchestrationCompleted ` +
    `(success ${completions[0]?.payload.success})`);
  if (a.errors && Object.keys(a.errors).length) log(`send errors: ${JSON.stringify(a.errors)}`);

  assert.deepEqual(a.problems, []);
  assert.equal(a.missing, 0, 'zero lost session events');
  assert.equal(a.liveDuplicates, 0);
  assert.equal(a.refused, 0, 'no message refused');
  assert.ok(a.reconnects >= USERS, `every client was drained at least once (${a.reconnects} reconnects)`);
  assert.ok(clients.every((c) => c.connected && !c.closed), 'every client ends connected');
  assert.deepEqual(steps.map((e) => e.payload.order).sort((x, y) => x - y), Array.from({ length: STEPS }, (_, i) => i + 1),
    'one StepCompleted per step');
  assert.equal(completions.length, 1);
  assert.equal(completions[0].payload.success, true);
});

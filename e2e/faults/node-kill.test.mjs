// Fault test 1, node kill: kill -9 the node running a plan's step while every
// client chats in the session. The dead node's clients reconnect through nginx
// to the others and are back in the session without JoinSession (membership
// belongs to the authenticated user); the step is reclaimed and the plan
// completes once; every session event reaches every client, live or from the
// history; no step result is duplicated.
//
// Chat streams: session messages (SendSessionMessage) from every client; an
// agent chat (SendAgentMessage on the AgentHub -> ReceiveStreamingUpdate chunks
// -> one final ReceiveAgentResponse, recorded in the history) with a slow
// scripted agent; and a running plan of slow scripted agents (agents.yaml),
// whose StepCompleted and OrchestrationProgress events are session events too.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import {
  AgentLoad, ChatLoad, JWT_SECRET, LocalFarm, audit, cliToken, fullHistory, log, probeRound, sharedSession, startAll,
  summary, until,
} from './farm.mjs';

const USERS = 9;
const STEPS = 8;

const farm = new LocalFarm({
  name: 'node-kill',
  serveArgs: [
    '--jwt-secret', JWT_SECRET, '--agents', fileURLToPath(new URL('agents.yaml', import.meta.url)),
    '--heartbeat', '1s', '--drain-window', '2s', '--job-visibility-timeout', '4s', '--negotiate-rate-per-ip', '1000',
  ],
});
before(() => farm.start());
after(() => farm.stop());

test('node kill: clients come back in their session, the plan completes once, nothing is lost', async () => {
  const clients = [];
  const tokens = [];
  for (let i = 1; i <= USERS; i++) {
    const user = `kill-user-${i}`;
    tokens.push(await cliToken(user));
    clients.push(farm.client(user, { token: tokens[i - 1] }));
  }
  await startAll(clients);
  const [owner, ...others] = clients;
  const { sessionId, from } = await sharedSession(owner, others, 'node-kill');
  // The agent chat: a second connection of user 2, on the AgentHub; it is in
  // the session because its user is.
  const asker = farm.client('kill-user-2', { hub: 'agent', token: tokens[1], label: 'kill-user-2/agent' });
  await asker.start();
  asker.track(sessionId);
  const members = [...clients, asker];

  const plan = await owner.invoke('CreateOrchestrationPlan', {
    sessionId, goal: 'write, review and rewrite', strategy: 3, // RoundRobin: a chain of maxSteps steps
    availableAgentIds: ['scripted-writer', 'scripted-reviewer'], maxSteps: STEPS,
  });
  assert.equal(plan.steps.length, STEPS);

  const load = new ChatLoad(clients, sessionId, 150).start();
  const asks = new AgentLoad(asker, sessionId, 'scripted-writer', 700).start();
  await owner.invoke('ExecutePlan', plan.id);
  const stepsOf = (c) => c.all('StepCompleted').filter((s) => s.planId === plan.id);
  await owner.waitUntil(() => stepsOf(owner).length >= 2, 30000, 'two steps done');

  // The victim: the node whose worker holds the running step.
  const [holder] = await until(async () => {
    const h = await farm.jobHolders();
    return h.length ? h : null;
  }, 10000, 'a running step');
  const victim = farm.nodeIndex(holder);
  assert.ok(victim > 0, `job consumer ${holder} is a farm node`);
  const where = await Promise.all(members.map((c) => farm.nodeOfConnection(c.connectionId)));
  const onVictim = members.filter((_, i) => where[i] === holder);
  log(`clients per node: ${JSON.stringify(where.reduce((m, n) => ({ ...m, [n]: (m[n] || 0) + 1 }), {}))}; killing ${holder} (runs step ${stepsOf(owner).length + 1})`);
  assert.ok(onVictim.length > 0, 'the victim holds clients (9 clients round-robin over 3 nodes)');

  const killedAt = Date.now();
  await farm.killNode(victim);

  await until(() => onVictim.every((c) => c.reconnects.length > 0 && c.connected), 30000, 'the victim\'s clients to reconnect');
  const backMs = Math.max(...onVictim.map((c) => c.reconnects[0].at)) - killedAt;
  for (const c of onVictim) {
    const node = await farm.nodeOfConnection(c.connectionId);
    assert.ok(node && node !== holder, `${c.label} reconnected to a live node (${node})`);
  }
  const others2 = members.filter((c) => !onVictim.includes(c));
  assert.ok(others2.every((c) => c.reconnects.length === 0), 'clients of the other nodes were not disturbed');

  await owner.waitUntil(() => owner.all('OrchestrationCompleted').some((r) => r.planId === plan.id), 60000,
    'OrchestrationCompleted');
  const completedMs = Date.now() - killedAt;
  await new Promise((r) => setTimeout(r, 1000)); // keep chatting a little after the recovery
  await load.stop();
  await asks.stop();
  // Every accepted question gets its final answer (a reclaimed one after the
  // visibility timeout).
  const finals = (h) => h.filter((e) => e.target === 'ReceiveAgentResponse' && e.payload.response?.isComplete);
  const accepted = [...asks.sent].filter(([, st]) => st === 'accepted').map(([id]) => id);
  await until(async () => {
    const ids = new Set(finals(await fullHistory(owner, sessionId)).map((e) => e.payload.response.metadata?.CommandId));
    return accepted.every((id) => ids.has(id));
  }, 30000, 'a final answer to every accepted question', 500);

  // Messages sent now reach everyone live: the reconnected clients are in
  // the session again although nobody called JoinSession since the start.
  await probeRound(members, sessionId, 'after-kill');

  const a = await audit({ clients: members, load, sessionId, reader: owner, from });
  log(summary('node kill', a));
  const answers = finals(a.history);
  const perAsk = new Map();
  for (const e of answers) {
    const id = e.payload.response.metadata?.CommandId;
    perAsk.set(id, (perAsk.get(id) || 0) + 1);
  }
  const questions = a.history.filter((e) => e.target === 'AgentMessage').length;
  log(`agent chat: ${asks.sent.size} sent, ${accepted.length} accepted, ${asks.count('unknown')} unknown, ` +
    `${asks.count('refused')} refused; history: ${questions} AgentMessage, ${answers.length} final ReceiveAgentResponse; ` +
    `streamed chunks received live: ${members.reduce((n, c) => n + c.chunks, 0)}`);
  for (const id of accepted) assert.equal(perAsk.get(id), 1, `one final answer to ${id}`);
  assert.ok(accepted.length >= 5, `a real agent chat (${accepted.length} questions)`);

  // The plan: completed once, one result per step, everywhere.
  const stepEvents = a.history.filter((e) => e.target === 'StepCompleted' && e.payload.planId === plan.id);
  const orders = stepEvents.map((e) => e.payload.order).sort((x, y) => x - y);
  const completions = a.history.filter((e) => e.target === 'OrchestrationCompleted' && e.payload.planId === plan.id);
  log(`plan: ${stepEvents.length} StepCompleted for ${STEPS} steps, ${completions.length} OrchestrationCompleted; ` +
    `victim's ${onVictim.length} clients back after ${backMs} ms; plan completed ${completedMs} ms after the kill`);
  assert.deepEqual(orders, Array.from({ length: STEPS }, (_, i) => i + 1), 'exactly one StepCompleted per step');
  assert.equal(completions.length, 1, 'the plan completed once');
  assert.equal(completions[0].payload.success, true);
  for (const c of clients) {
    assert.equal(stepsOf(c).length, STEPS, `${c.label}: one result per step, no duplicate`);
    assert.equal(c.all('OrchestrationCompleted').filter((r) => r.planId === plan.id).length, 1);
  }
  const state = await owner.invoke('GetPlan', plan.id);
  assert.equal(state.status, 'completed');
  assert.deepEqual(await farm.jobHolders(), [], 'no job left pending');

  assert.deepEqual(a.problems, []);
  assert.equal(a.missing, 0, 'zero lost');
  assert.equal(a.liveDuplicates, 0, 'zero duplicated');
  assert.ok(a.accepted > 100, `a real stream (${a.accepted} accepted)`);
  assert.ok(members.every((c) => c.connected), 'every client ends connected');
});

// Orchestration plans with the official client: create, execute, follow the
// progress to 100 %, one StepCompleted per step, then OrchestrationCompleted.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { uniqueName, useFarm } from './harness.mjs';

const farm = useFarm();

async function user(prefix) {
  const c = farm().client('orchestrator', { user: uniqueName(prefix) });
  await c.start();
  return c;
}

test('a plan runs on the farm: progress to 100, StepCompleted per step, OrchestrationCompleted to every member', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const created = await alice.invoke('CreateSession', { name: uniqueName('plan'), type: 2, agentIds: [], workingDirectory: '' });
  assert.equal(created.success, true);
  const sessionId = created.sessionId;
  await bob.invoke('JoinSession', sessionId);

  const plan = await alice.invoke('CreateOrchestrationPlan', {
    sessionId,
    goal: 'write and review a haiku',
    strategy: 0, // Sequential
    availableAgentIds: ['scripted-writer', 'scripted-reviewer'],
    maxSteps: 10,
  });
  assert.equal(plan.steps.length, 2);
  assert.equal(plan.steps[0].agentId, 'scripted-writer');
  assert.deepEqual(plan.steps[1].dependsOn, ['1']);
  await bob.waitFor('OrchestrationPlanCreated', (p) => p?.id === plan.id);

  await alice.invoke('ExecutePlan', plan.id);
  for (const c of [alice, bob]) {
    const result = await c.waitFor('OrchestrationCompleted', (r) => r?.planId === plan.id);
    assert.equal(result.success, true);
    assert.equal(result.stepResults.length, 2);
    assert.ok(result.finalOutput.length > 0, 'finalOutput aggregates the outputs');

    const steps = c.all('StepCompleted').filter((s) => s.planId === plan.id);
    assert.deepEqual(steps.map((s) => s.order), [1, 2], 'one StepCompleted per step, in order');
    assert.ok(steps.every((s) => s.result.success));
    // The second step was fed the first one's output.
    assert.match(steps[1].result.output, /after step 1:/, 'step 2 received step 1 output');

    const progress = c.all('OrchestrationProgress').filter((p) => p.planId === plan.id);
    const pct = progress.map((p) => p.percentComplete);
    assert.ok(pct.length >= 2, `progress events: ${pct}`);
    assert.equal(pct[pct.length - 1], 100, `progress ends at 100: ${pct}`);
    for (let i = 1; i < pct.length; i++) assert.ok(pct[i] >= pct[i - 1], `progress never goes back: ${pct}`);
  }
  const state = await bob.invoke('GetPlan', plan.id);
  assert.equal(state.status, 'completed');
});

test('SendOrchestrationMessage plans and runs in one call; a bad request is a ReceiveError', async () => {
  const alice = await user('alice');
  const { sessionId } = await alice.invoke('CreateSession', { name: uniqueName('plan'), type: 2, agentIds: [], workingDirectory: '' });
  await alice.invoke('SendOrchestrationMessage', {
    sessionId, message: 'summarise', agentIds: ['scripted-writer', 'scripted-reviewer'], strategy: 1, // Parallel
  });
  const result = await alice.waitFor('OrchestrationCompleted', (r) => r?.success === true);
  assert.equal(result.stepResults.length, 2);

  await alice.invoke('SendOrchestrationMessage', { sessionId, message: '', agentIds: ['scripted-writer'], strategy: 0 });
  const err = await alice.waitFor('ReceiveError', (e) => e?.code === 'VALIDATION_FAILED');
  assert.match(err.error, /goal/i);
});

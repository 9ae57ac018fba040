// Unit tests of the web console's state and event handling (web/static/js),
// run in Node without a browser: streamed answers, de-duplication of events
// that reach both hub connections, ordering by event id, catch-up after a
// reconnect, plan callbacks that do not name their session, approvals and
// their end for every member.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { APPROVAL_TIMEOUT_MS, RESOLVED_APPROVAL_SHOWN_MS, SEEN_EVENTS_LIMIT, Store, approvalShown } from '../../web/static/js/store.js';
import { ConsoleService } from '../../web/static/js/console.js';
import { CATCH_UP_OVERLAP_MS, catchUpStart, compareKeys, newerEventId, parseEventId } from '../../web/static/js/eventid.js';
import { backoffDelay } from '../../web/static/js/signalr.js';

const SID = 'sess-1';

function memoryStorage() {
  const m = new Map();
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, String(v)), removeItem: (k) => m.delete(k) };
}

/** A service whose hubs are fakes answering invoke() from a table of functions. */
function service(methods = {}) {
  const store = new Store(memoryStorage());
  store.identity = { user: 'alice', token: '' };
  const svc = new ConsoleService(store);
  const calls = [];
  const hub = {
    invoke: async (name, ...args) => {
      calls.push([name, ...args]);
      if (!methods[name]) throw new Error(`unexpected ${name}`);
      return methods[name](...args);
    },
    send: () => true,
  };
  svc.hubs = { orchestrator: hub, agent: hub };
  return { store, svc, calls };
}

const chunk = (content, extra = {}) => ({
  agentId: 'writer', sessionId: SID, timestamp: '2026-01-01T00:00:00Z',
  response: { messageId: 'm1', id: `r-${content}-${extra.isComplete ? 'end' : 'c'}`, content, type: 0, isComplete: false, ...extra },
});

test('event ids: parsed, compared, newest', () => {
  assert.deepEqual(parseEventId('1700000000000-3'), [1700000000000, 3]);
  assert.equal(parseEventId('nope'), null);
  assert.ok(newerEventId('10-2', '10-1'));
  assert.ok(newerEventId('11-0', '10-9'));
  assert.ok(!newerEventId('9-9', '10-0'));
  assert.ok(newerEventId('1-0', ''));
  assert.ok(compareKeys([1, 0, 0], [1, 0, 1]) < 0);
});

test('back-off: first retry at once, then growing to a cap', () => {
  assert.equal(backoffDelay(0), 0);
  const d = [1, 2, 3, 4, 5, 6, 7, 8].map((a) => backoffDelay(a, { base: 500, cap: 15000 }));
  for (const [i, v] of d.entries()) {
    const nominal = Math.min(15000, 500 * 2 ** i);
    assert.ok(v >= nominal * 0.8 - 1 && v <= nominal * 1.2 + 1, `attempt ${i + 1}: ${v}`);
  }
});

test('a streamed answer grows chunk by chunk, once, and the agent is busy until it ends', () => {
  const { store, svc } = service();
  svc.apply('ReceiveStreamingUpdate', chunk('Hello'), '', '');
  assert.ok(store.isBusy('writer'));
  svc.apply('ReceiveStreamingUpdate', chunk(', world'), '', '');
  svc.apply('ReceiveStreamingUpdate', chunk(', world'), '', ''); // the same chunk by another path
  const s = store.sessions.get(SID);
  const [item] = [...s.items.values()];
  assert.equal(item.kind, 'answer');
  assert.equal(item.content, 'Hello, world');
  assert.equal(item.complete, false);
  // The end repeats the whole text (some backends do): shown once.
  svc.apply('ReceiveAgentResponse', chunk('Hello, world', { isComplete: true }), '', '');
  assert.equal(item.content, 'Hello, world');
  assert.equal(item.complete, true);
  assert.ok(!store.isBusy('writer'));
  // A late chunk after the end changes nothing.
  svc.apply('ReceiveStreamingUpdate', chunk('!!'), '', '');
  assert.equal(item.content, 'Hello, world');
});

test('a retried answer streams again from its start, and the end carries the whole text', () => {
  const { store, svc } = service();
  const seq = (content, n, id) => ({ ...chunk(content), response: { ...chunk(content).response, id, metadata: { sequence: n } } });
  svc.apply('ReceiveStreamingUpdate', seq('Hel', 0, 'a1'), '', '');
  svc.apply('ReceiveStreamingUpdate', seq('Hello', 0, 'a2'), '', ''); // attempt 2
  svc.apply('ReceiveStreamingUpdate', seq(' world', 1, 'a3'), '', '');
  const [item] = store.sessions.get(SID).items.values();
  assert.equal(item.content, 'Hello world');
  svc.apply('ReceiveAgentResponse', chunk('Hello world!', { isComplete: true }), '', '');
  assert.equal(item.content, 'Hello world!');
});

test('a failed answer closes its bubble and frees the agent', () => {
  const { store, svc } = service();
  store.session(SID);
  svc.apply('ReceiveStreamingUpdate', chunk('Hel'), '', '');
  assert.ok(store.isBusy('writer'));
  svc.apply('ReceiveError', { error: 'agent timed out', code: 'TIMEOUT', agentId: 'writer', sessionId: SID }, '9-0', '');
  const items = [...store.sessions.get(SID).items.values()];
  assert.ok(items[0].complete && items[0].error);
  assert.ok(!store.isBusy('writer'));
  assert.ok(items.some((i) => i.kind === 'notice' && /timed out/.test(i.text)));
});

test('an empty end completes the answer without changing it', () => {
  const { store, svc } = service();
  svc.apply('ReceiveStreamingUpdate', chunk('abc'), '', '');
  svc.apply('ReceiveAgentResponse', chunk('', { isComplete: true }), '', '');
  const [item] = store.sessions.get(SID).items.values();
  assert.equal(item.content, 'abc');
  assert.ok(item.complete);
});

test('session events are applied once and ordered by event id, whatever the arrival order', () => {
  const { store, svc } = service();
  const msg = (id, eventId, content) => ({ id, eventId, content, role: 0, sessionId: SID, senderId: 'bob' });
  svc.apply('ReceiveSessionMessage', msg('a', '100-0', 'first'), '100-0', '');
  svc.apply('ReceiveSessionMessage', msg('c', '300-0', 'third'), '300-0', '');
  svc.apply('ReceiveSessionMessage', msg('c', '300-0', 'third'), '300-0', ''); // second connection
  svc.apply('ReceiveSessionMessage', msg('b', '200-0', 'second'), '200-0', SID); // from the history, later
  const s = store.sessions.get(SID);
  assert.deepEqual(s.order.map((k) => s.items.get(k).content), ['first', 'second', 'third']);
  assert.equal(s.lastEventId, '300-0');
});

test('after a reconnect the console catches up from 30 s before the last event seen, and shows each event once, in order', async () => {
  const T = 1_700_000_000_000;
  const ev = (ms, id, content) => ({ eventId: `${T + ms}-0`, target: 'ReceiveSessionMessage', payload: { id, eventId: `${T + ms}-0`, content, sessionId: SID, role: 0 } });
  const history = [
    ev(0, 'a', 'before'),
    // Published by another node and missed in the loss: older than the
    // newest event this console saw live (from its own node).
    ev(5000, 'b', 'missed, older than the last seen'),
    ev(20000, 'c', 'seen live'),
    ev(40000, 'd', 'missed after'),
    ev(50000, 'e', 'live after the reconnect'),
  ];
  const { store, svc, calls } = service({
    // The server reads from after any id of the right shape, existing or not.
    GetSessionHistory: (sid, after) => history.filter((e) => !after || newerEventId(e.eventId, after)),
    JoinSession: () => undefined,
  });
  store.sessionInfo({ id: SID, name: 'demo', type: 1 });
  for (const e of [history[0], history[2]]) svc.apply('ReceiveSessionMessage', e.payload, e.eventId, '');
  // The connection drops; the state handler snapshots where each session was.
  svc.resumeFrom = new Map([[SID, store.sessions.get(SID).lastEventId]]);
  // A live event arrives right after the reconnect, before the catch-up.
  svc.apply('ReceiveSessionMessage', history[4].payload, history[4].eventId, '');
  await svc.afterConnect(true);
  const s = store.sessions.get(SID);
  assert.deepEqual(s.order.map((k) => s.items.get(k).content), history.map((e) => e.payload.content), 'every event once, in event id order');
  const hist = calls.filter((c) => c[0] === 'GetSessionHistory');
  assert.deepEqual(hist.map((c) => c[2]), [`${T + 20000 - CATCH_UP_OVERLAP_MS}-0`], 'catch-up starts 30 s before the last event seen before the loss');
  assert.equal(s.lastEventId, history[4].eventId);
  assert.ok(!calls.some((c) => c[0] === 'JoinSession'), 'a joined session is not joined again after a reconnect');

  // A second catch-up over the same stretch (another reconnect) adds nothing.
  svc.resumeFrom = new Map([[SID, s.lastEventId]]);
  await svc.afterConnect(true);
  assert.equal(s.order.length, history.length);
});

test('catch-up start: 30 s before the event id, or the whole history', () => {
  assert.equal(catchUpStart('1700000030000-7'), '1700000000000-0');
  assert.equal(catchUpStart(''), null);
  assert.equal(catchUpStart('garbage'), null);
  assert.equal(catchUpStart('20000-3'), null, 'an overlap reaching back past the start reads everything');
});

test('the event ids a session remembers are bounded: the oldest are forgotten first', () => {
  const { store } = service();
  const s = store.session(SID);
  for (let i = 1; i <= SEEN_EVENTS_LIMIT + 2; i++) assert.ok(s.markEvent(`${i}-0`));
  assert.equal(s.seen.size, SEEN_EVENTS_LIMIT);
  assert.ok(!s.seen.has('1-0') && !s.seen.has('2-0'), 'the oldest went');
  assert.ok(!s.markEvent(`${SEEN_EVENTS_LIMIT + 2}-0`), 'a recent one is still known');
  assert.equal(s.lastEventId, `${SEEN_EVENTS_LIMIT + 2}-0`);
});

test('the saved session list is restored and joined after a page load', async () => {
  const storage = memoryStorage();
  storage.setItem('hubfarm.console.v1.alice', JSON.stringify({ sessions: [{ id: SID, name: 'demo' }, { id: 'gone', name: 'old' }], current: SID }));
  const store = new Store(storage);
  store.identity = { user: 'alice' };
  const svc = new ConsoleService(store);
  const hub = {
    invoke: async (name, sid) => {
      if (name === 'JoinSession' && sid === 'gone') svc.apply('ReceiveError', { error: 'Session gone not found', code: 'SESSION_NOT_FOUND', sessionId: 'gone' }, '', '');
      else if (name === 'JoinSession') svc.apply('SessionJoined', { id: sid, name: 'demo', type: 2 }, '', '');
      return name === 'GetSessionHistory' ? [] : undefined;
    },
  };
  svc.hubs = { orchestrator: hub, agent: hub };
  store.load();
  assert.equal(store.currentId, SID);
  await svc.afterConnect(false);
  assert.equal(store.sessions.get(SID).status, 'joined');
  assert.equal(store.sessions.get('gone').status, 'missing');
});

test('plan callbacks without a session are placed by GetPlan, in arrival order, to 100 %', async () => {
  const plan = { id: 'p1', name: 'Plan for: x', goal: 'x', strategy: 0, steps: [{ order: 1, agentId: 'writer', task: 't1' }, { order: 2, agentId: 'reviewer', task: 't2' }] };
  let getPlans = 0;
  const { store, svc } = service({
    GetPlan: async () => {
      getPlans++;
      await new Promise((r) => setTimeout(r, 10));
      return { plan, sessionId: SID, status: 'running', percentComplete: 0, steps: [] };
    },
  });
  svc.apply('OrchestrationPlanCreated', { ...plan, eventId: '1-0' }, '1-0', '');
  svc.apply('OrchestrationProgress', { planId: 'p1', currentStep: 1, totalSteps: 2, percentComplete: 0, eventId: '2-0' }, '2-0', '');
  svc.apply('StepCompleted', { order: 1, planId: 'p1', result: { success: true, output: 'o1' }, eventId: '3-0' }, '3-0', '');
  svc.apply('OrchestrationProgress', { planId: 'p1', currentStep: 2, totalSteps: 2, percentComplete: 50, eventId: '4-0' }, '4-0', '');
  svc.apply('StepCompleted', { order: 2, planId: 'p1', result: { success: true, output: 'o2' }, eventId: '5-0' }, '5-0', '');
  svc.apply('OrchestrationProgress', { planId: 'p1', currentStep: 2, totalSteps: 2, percentComplete: 100, eventId: '6-0' }, '6-0', '');
  svc.apply('OrchestrationCompleted', { planId: 'p1', success: true, finalOutput: 'done', eventId: '7-0' }, '7-0', '');
  svc.apply('OrchestrationCompleted', { planId: 'p1', success: true, finalOutput: 'done', eventId: '7-0' }, '7-0', ''); // other hub
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(getPlans, 1, 'one lookup per plan');
  const p = store.sessions.get(SID).plans.get('p1');
  assert.equal(p.percent, 100);
  assert.equal(p.status, 'completed');
  assert.deepEqual([...p.steps.values()].map((s) => s.status), ['completed', 'completed']);
  assert.equal(p.result.finalOutput, 'done');
});

test('a tool approval is pending once, whichever connections it reaches, and ends when decided', async () => {
  const { store, svc, calls } = service({ ApproveTool: () => undefined });
  store.sessionInfo({ id: SID, name: 'demo', type: 1 });
  const req = { id: 'ap1', toolName: 'write_file', parameters: { path: 'x' }, agentId: 'writer', sessionId: SID, isDangerous: true };
  svc.apply('ToolApprovalRequired', req, '', '');
  svc.apply('ToolApprovalRequired', req, '', '');
  assert.equal(store.pendingApprovals(SID).length, 1);
  await svc.decide(SID, 'ap1', true);
  assert.deepEqual(calls.at(-1), ['ApproveTool', 'ap1', true, '']);
  assert.equal(store.pendingApprovals(SID).length, 0);
  assert.equal(store.sessions.get(SID).approvals.get('ap1').state, 'approved');
});

test('a failed approval stays visible with its error', async () => {
  const { store, svc } = service({ ApproveTool: () => { throw new Error("Failed to invoke 'ApproveTool' due to an error on the server. HubException: NOT_FOUND: approval ap1 was already decided"); } });
  svc.apply('ToolApprovalRequired', { id: 'ap1', toolName: 'bash', parameters: {}, agentId: 'a', sessionId: SID, isDangerous: false }, '', '');
  await svc.decide(SID, 'ap1', false);
  const a = store.sessions.get(SID).approvals.get('ap1');
  assert.equal(a.state, 'error');
  assert.equal(a.note, 'NOT_FOUND: approval ap1 was already decided');
});

test('plan events from the history are applied (the history names their session)', async () => {
  const plan = { id: 'p2', goal: 'g', strategy: 0, steps: [{ order: 1, agentId: 'writer', task: 't' }] };
  const history = [
    { eventId: '1-0', target: 'OrchestrationPlanCreated', payload: { ...plan, eventId: '1-0' } },
    { eventId: '2-0', target: 'OrchestrationProgress', payload: { planId: 'p2', currentStep: 1, totalSteps: 1, percentComplete: 0, eventId: '2-0' } },
    { eventId: '3-0', target: 'StepCompleted', payload: { order: 1, planId: 'p2', result: { success: true, output: 'o' }, eventId: '3-0' } },
    { eventId: '4-0', target: 'OrchestrationCompleted', payload: { planId: 'p2', success: true, finalOutput: 'o', eventId: '4-0' } },
    { eventId: '5-0', target: 'SomethingNew', payload: { eventId: '5-0' } },
  ];
  const { store, svc, calls } = service({ GetSessionHistory: () => history, JoinSession: () => undefined });
  store.session(SID);
  await svc.catchUp(SID, '');
  const s = store.sessions.get(SID);
  const p = s.plans.get('p2');
  assert.equal(p.status, 'completed');
  assert.equal(p.percent, 100);
  assert.equal(s.lastEventId, '5-0', 'unknown events still move the catch-up point');
  assert.ok(s.items.has('plan:p2'), 'the plan has its line in the chat');
  assert.ok(!calls.some((c) => c[0] === 'GetPlan'), 'no lookup for history events');
});

test('approvals replayed from an old history are over, recent ones are pending', () => {
  const { store, svc } = service();
  const req = (id) => ({ id, toolName: 'write_file', parameters: {}, agentId: 'w', sessionId: SID, isDangerous: true });
  svc.apply('ToolApprovalRequired', req('old'), '1-0', SID, new Date(Date.now() - 10 * 60 * 1000).toISOString());
  svc.apply('ToolApprovalRequired', req('new'), '2-0', SID, new Date(Date.now() - 10 * 1000).toISOString());
  assert.deepEqual(store.pendingApprovals(SID).map((a) => a.request.id), ['new']);
});

const approvalReq = (id, extra = {}) => ({ id, toolName: 'write_file', parameters: { path: 'x' }, agentId: 'writer', sessionId: SID, isDangerous: true, ...extra });

test('a decision made elsewhere ends the prompt of a member who neither raised nor decided it', () => {
  const { store, svc } = service();
  store.sessionInfo({ id: SID, name: 'demo', type: 1 });
  // This console's own tool run, waiting for something else.
  const mine = store.toolRun(SID, { id: 'r1', agentId: 'writer', toolName: 'bash', parameters: { command: 'ls' }, status: 'sent', result: null });
  svc.apply('ToolApprovalRequired', { ...approvalReq('ap1'), eventId: '10-0' }, '10-0', '');
  svc.apply('ToolApprovalRequired', approvalReq('ap2'), '', '');
  svc.apply('ToolApprovalRequired', approvalReq('ap3'), '', '');
  assert.equal(store.pendingApprovals(SID).length, 3);
  // ToolExecutionCompleted sent to the session: no sessionId in the result.
  svc.apply('ToolExecutionCompleted', { success: true, output: 'ok', error: '', metadata: { approvalId: 'ap1', decidedBy: 'bob' }, eventId: '11-0' }, '11-0', '');
  svc.apply('ToolExecutionCompleted', { success: false, output: '', error: 'Tool call not approved: denied by carol', metadata: { approvalId: 'ap2', decidedBy: 'carol' } }, '', '');
  svc.apply('ToolExecutionCompleted', { success: false, output: '', error: 'Tool call not approved: approval timed out', metadata: { approvalId: 'ap3', decidedBy: 'timeout' } }, '', '');
  const s = store.sessions.get(SID);
  const now = Date.now();
  assert.deepEqual(['ap1', 'ap2', 'ap3'].map((id) => [s.approvals.get(id).state, s.approvals.get(id).decidedBy]),
    [['approved', 'bob'], ['denied', 'carol'], ['timedout', '']]);
  assert.equal(store.pendingApprovals(SID).length, 0, 'no prompt takes a decision any more');
  // Each says how it ended for a moment, then goes.
  assert.deepEqual(approvalShown(s.approvals.get('ap1'), now), { state: 'approved', open: false, until: s.approvals.get('ap1').resolvedAt + RESOLVED_APPROVAL_SHOWN_MS });
  assert.equal(approvalShown(s.approvals.get('ap1'), now + RESOLVED_APPROVAL_SHOWN_MS + 1), null);
  // A second copy of a decision (the other hub) changes nothing.
  const { resolvedAt } = s.approvals.get('ap2');
  store.approvalResolved({ success: true, metadata: { approvalId: 'ap2', decidedBy: 'dave' } });
  assert.deepEqual([s.approvals.get('ap2').decidedBy, s.approvals.get('ap2').resolvedAt], ['carol', resolvedAt]);
  // The tool runs of this console are not ended by others' results.
  assert.equal(mine.status, 'sent');
  assert.equal(mine.result, null);
});

test('ToolApprovalResolved from the farm ends every member\'s prompt, once, with who or why', () => {
  const { store, svc } = service();
  store.sessionInfo({ id: SID, name: 'demo', type: 1 });
  for (const id of ['ap1', 'ap2', 'ap3', 'ap4', 'ap5']) svc.apply('ToolApprovalRequired', approvalReq(id), '', '');
  const resolved = (id, approved, outcome, decidedBy, eventId) => svc.apply('ToolApprovalResolved',
    { id, toolName: 'write_file', agentId: 'writer', sessionId: SID, approved, outcome, reason: '', decidedBy, timestamp: '', eventId }, eventId, '');
  resolved('ap1', true, 'approved', 'bob', '20-0');
  resolved('ap2', false, 'denied', 'carol', '21-0');
  resolved('ap3', false, 'timed_out', 'timeout', '22-0');
  resolved('ap4', false, 'cancelled', 'cancelled', '23-0');
  resolved('ap5', false, 'policy_denied', 'policy', '24-0');
  const s = store.sessions.get(SID);
  assert.deepEqual(['ap1', 'ap2', 'ap3', 'ap4', 'ap5'].map((id) => [s.approvals.get(id).state, s.approvals.get(id).decidedBy]),
    [['approved', 'bob'], ['denied', 'carol'], ['timedout', ''], ['cancelled', ''], ['denied', '']]);
  assert.equal(store.pendingApprovals(SID).length, 0);
  // The same event again (the other hub, or the history after a reconnect) changes nothing.
  const { resolvedAt } = s.approvals.get('ap1');
  resolved('ap1', false, 'denied', 'mallory', '20-0');
  assert.deepEqual([s.approvals.get('ap1').state, s.approvals.get('ap1').decidedBy, s.approvals.get('ap1').resolvedAt], ['approved', 'bob', resolvedAt]);
});

test('the requester learns who decided from its ToolExecutionCompleted, and its run ends', async () => {
  let completed;
  const { store, svc } = service({ ExecuteTool: () => new Promise((r) => { completed = r; }) });
  store.sessionInfo({ id: SID, name: 'demo', type: 1 });
  store.select(SID);
  const running = svc.runTool(SID, { agentId: 'writer', toolName: 'write_file', parameters: { path: 'x' } });
  svc.apply('ToolApprovalRequired', approvalReq('ap1'), '', '');
  const result = { success: false, output: '', error: 'disk full', metadata: { approvalId: 'ap1', decidedBy: 'bob' } };
  svc.apply('ToolExecutionCompleted', result, '', '');
  const a = store.sessions.get(SID).approvals.get('ap1');
  assert.deepEqual([a.state, a.decidedBy], ['approved', 'bob'], 'approved, although the tool then failed');
  completed({ success: false, error: 'disk full' });
  await running;
  const [run] = store.sessions.get(SID).toolRuns;
  assert.equal(run.status, 'done');
  assert.equal(run.result, result);
  assert.equal(a.decidedBy, 'bob', 'the fallback by parameters does not overwrite a known decision');
});

test('decisions found in the history end their prompts; one heard before its prompt is remembered', async () => {
  const now = Date.now();
  const at = (ms) => new Date(now - ms).toISOString();
  const history = [
    { eventId: '1-0', timestamp: at(60000), target: 'ToolApprovalRequired', payload: { ...approvalReq('ap1'), eventId: '1-0' } },
    { eventId: '2-0', timestamp: at(50000), target: 'ToolExecutionCompleted', payload: { success: true, metadata: { approvalId: 'ap1', decidedBy: 'bob' }, eventId: '2-0' } },
    { eventId: '3-0', timestamp: at(40000), target: 'ToolApprovalRequired', payload: { ...approvalReq('ap2'), eventId: '3-0' } },
  ];
  const { store, svc } = service({ GetSessionHistory: () => history });
  store.session(SID);
  // ap2 was decided, and this console heard it, before the history told of the prompt.
  store.approvalResolved({ success: false, error: 'Tool call not approved: denied by carol', metadata: { approvalId: 'ap2', decidedBy: 'carol' } });
  await svc.catchUp(SID, '');
  const s = store.sessions.get(SID);
  assert.equal(s.approvals.get('ap1').state, 'approved');
  assert.deepEqual([s.approvals.get('ap2').state, s.approvals.get('ap2').decidedBy], ['denied', 'carol']);
  assert.equal(store.pendingApprovals(SID).length, 0);
});

test('a prompt nobody answers shows as timed out once the farm\'s approval timeout has passed', () => {
  const now = Date.now();
  const a = { request: approvalReq('ap1'), state: 'pending', at: now - APPROVAL_TIMEOUT_MS - 10 };
  assert.deepEqual(approvalShown(a, now), { state: 'timedout', open: false, until: a.at + APPROVAL_TIMEOUT_MS + RESOLVED_APPROVAL_SHOWN_MS });
  assert.equal(approvalShown(a, now + RESOLVED_APPROVAL_SHOWN_MS), null);
  assert.deepEqual(approvalShown({ ...a, at: now }, now), { state: 'pending', open: true, until: now + APPROVAL_TIMEOUT_MS });
  assert.equal(approvalShown({ ...a, state: 'dismissed', at: now }, now), null);
});

test('every node\'s message rate comes from its heartbeat counts, whichever node answers', () => {
  const { store } = service();
  const node = (id, hb, inN, outN) => ({ id, address: `${id}:1`, connections: 1, started: '', lastHeartbeat: new Date(hb).toISOString(), messagesIn: inN, messagesOut: outN });
  const t0 = Date.parse('2026-01-01T00:00:00Z');
  store.farmView({ nodes: [node('a', t0, 10, 90), node('b', t0, 0, 0)], servedBy: { id: 'a', messagesIn: 11, messagesOut: 95 }, connections: {} });
  assert.equal(store.farm.rates.size, 0, 'one heartbeat gives no rate');
  // Node b answers the next poll; node a's heartbeat 2 s later counts 400 more records.
  store.farmView({ nodes: [node('a', t0 + 2000, 50, 450), node('b', t0 + 2000, 0, 10)], servedBy: { id: 'b', messagesIn: 0, messagesOut: 10 }, connections: {} });
  assert.equal(store.farm.rates.get('a'), 200);
  assert.equal(store.farm.rates.get('b'), 5);
  // The same heartbeats again change nothing; a node that left is forgotten.
  store.farmView({ nodes: [node('a', t0 + 2000, 50, 450)], servedBy: { id: 'a' }, connections: {} });
  assert.equal(store.farm.rates.get('a'), 200);
  assert.equal(store.farm.rates.has('b'), false);
});

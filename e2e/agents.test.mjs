// Agents with the official client: streamed answers to the session, a
// SignalR stream of one answer, and a tool call approved by another member.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { collectStream, uniqueName, useFarm } from './harness.mjs';

const farm = useFarm();

const AGENT_EVENTS = [
  'ReceiveError', 'SessionCreated', 'SessionJoined', 'ReceiveStreamingUpdate', 'ReceiveAgentResponse',
  'AgentStatusUpdate', 'ToolExecutionStarted', 'ToolApprovalRequired', 'ToolApprovalResolved', 'ToolExecutionCompleted',
];

async function agentClient(user) {
  const c = farm().client('agent', { user, events: AGENT_EVENTS });
  await c.start();
  return c;
}

async function session(owner, others) {
  const res = await owner.invoke('CreateSession', { name: uniqueName('agents'), type: 0, agentIds: ['scripted-writer'], workingDirectory: '' });
  assert.equal(res.success, true);
  for (const o of others) await o.invoke('JoinSession', res.sessionId);
  return res.sessionId;
}

test('SendAgentMessage streams the answer to every member and ends with the complete text', async () => {
  const alice = await agentClient(uniqueName('alice'));
  const bob = await agentClient(uniqueName('bob'));
  const sessionId = await session(alice, [bob]);
  const agents = await alice.invoke('GetAgents');
  assert.ok(agents.some((a) => a.id === 'scripted-writer'), `agents: ${JSON.stringify(agents.map((a) => a.id))}`);

  await alice.invoke('SendAgentMessage', { agentId: 'scripted-writer', sessionId, content: 'hello agent', attachments: [], commandId: 'cmd-1' });
  for (const c of [alice, bob]) {
    const final = await c.waitFor('ReceiveAgentResponse', (r) => r?.response?.isComplete === true);
    const id = final.response.messageId;
    assert.ok(id, 'the answer carries the messageId of the user message');
    assert.equal(final.response.metadata.CommandId, 'cmd-1', 'CommandId is echoed');
    const chunks = c.all('ReceiveStreamingUpdate').filter((u) => u.response.messageId === id);
    assert.ok(chunks.length > 1, `streamed in chunks (${chunks.length})`);
    assert.ok(chunks.every((u) => u.response.isComplete === false));
    assert.equal(chunks.map((u) => u.response.content).join(''), final.response.content, 'chunks add up to the final answer');
  }
  const history = await bob.invoke('GetSessionHistory', sessionId, null, 100);
  assert.ok(history.some((e) => e.target === 'ReceiveAgentResponse'), 'the answer is in the history');
});

test('StreamAgentMessage returns the answer as a SignalR stream', async () => {
  const alice = await agentClient(uniqueName('alice'));
  const sessionId = await session(alice, []);
  const items = await collectStream(alice.connection.stream('StreamAgentMessage', {
    agentId: 'scripted-reviewer', sessionId, content: 'review this', attachments: [], commandId: null,
  }));
  assert.ok(items.length > 2, `items: ${items.length}`);
  const final = items[items.length - 1];
  const chunks = items.slice(0, -1);
  assert.equal(final.isComplete, true, 'the last item is the complete answer');
  assert.ok(final.content.length > 0);
  assert.ok(chunks.every((r) => r.isComplete === false && r.messageId === final.messageId), 'chunks share the answer\'s messageId');
  assert.equal(chunks.map((r) => r.content).join(''), final.content, 'chunks add up to the final answer');
  const history = await alice.invoke('GetSessionHistory', sessionId, null, 100);
  assert.ok(history.some((e) => e.target === 'ReceiveAgentResponse' && e.payload?.response?.content === final.content),
    'the streamed answer is in the history');
});

test('ExecuteTool waits for approval, which another member gives on another connection', async () => {
  const alice = await agentClient(uniqueName('alice'));
  const bob = await agentClient(uniqueName('bob'));
  const sessionId = await session(alice, [bob]);
  const call = alice.invoke('ExecuteTool', {
    agentId: 'scripted-writer', sessionId, toolName: 'write_file', parameters: { file_path: 'notes.txt', content: 'approved write' },
  });
  await alice.waitFor('ToolExecutionStarted', (u) => u?.toolName === 'write_file');
  const req = await bob.waitFor('ToolApprovalRequired', (r) => r?.toolName === 'write_file');
  assert.equal(req.sessionId, sessionId);
  assert.equal(req.isDangerous, true, 'write_file is a dangerous tool');
  // The contract's two-argument form; the denial below gives a reason.
  await bob.invoke('ApproveTool', req.id, true);
  const res = await call;
  assert.equal(res.success, true, JSON.stringify(res));
  await alice.waitFor('ToolExecutionCompleted', (r) => r?.success === true);
  // Every member learns that the approval is over and clears its prompt.
  for (const c of [alice, bob]) {
    const done = await c.waitFor('ToolApprovalResolved', (r) => r?.id === req.id);
    assert.equal(done.approved, true);
    assert.equal(done.outcome, 'approved');
    assert.equal(done.sessionId, sessionId);
  }

  // A denial ends the call with success:false and the reason.
  const denied = alice.invoke('ExecuteTool', {
    agentId: 'scripted-writer', sessionId, toolName: 'write_file', parameters: { file_path: 'other.txt', content: 'x' },
  });
  const req2 = await bob.waitFor('ToolApprovalRequired', (r) => r?.id !== req.id && r?.toolName === 'write_file');
  await bob.invoke('ApproveTool', req2.id, false, 'not now');
  const res2 = await denied;
  assert.equal(res2.success, false);
  assert.match(res2.error, /not now|denied/i);
  const done2 = await alice.waitFor('ToolApprovalResolved', (r) => r?.id === req2.id);
  assert.equal(done2.approved, false);
  assert.equal(done2.outcome, 'denied');
  assert.equal(done2.reason, 'not now');
});

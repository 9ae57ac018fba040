// The message size limit as the official client meets it: --max-message-size
// (100 KiB here) caps each hub message, not the WebSocket message that carries
// them, because the client sends the invocations it queued together as one.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EVENT_TIMEOUT_MS, uniqueName, useFarm, withTimeout } from './harness.mjs';

const farm = useFarm();

/** Connects a client for a new user and creates a session; returns both. */
async function userWithSession(prefix) {
  const c = farm().client('orchestrator', { user: uniqueName(prefix), events: ['SessionCreated', 'ReceiveSessionMessage'] });
  await c.start();
  const res = await c.invoke('CreateSession', { name: uniqueName('limits'), type: 1, agentIds: [], workingDirectory: '' });
  assert.equal(res?.success, true, `CreateSession succeeded: ${JSON.stringify(res)}`);
  return { c, sessionId: res.sessionId };
}

test('several 40 KiB messages sent at once all arrive (together over the 100 KiB limit)', async () => {
  const { c, sessionId } = await userWithSession('alice');
  const texts = Array.from({ length: 4 }, (_, i) => `${i}:${'x'.repeat(40 << 10)}`);
  // Started in the same tick: the client concatenates the four invocations
  // into one WebSocket message of about 160 KiB.
  await Promise.all(texts.map((t) => c.invoke('SendSessionMessage', sessionId, t)));
  for (const t of texts) {
    await c.waitFor('ReceiveSessionMessage', (m) => m?.content === t);
  }
  assert.equal(c.connection.state, 'Connected');
});

test('one hub message over the limit closes the connection with an error the client reports', async () => {
  const { c, sessionId } = await userWithSession('bob');
  const closed = new Promise((resolve) => c.connection.onclose(resolve));
  await assert.rejects(c.connection.invoke('SendSessionMessage', sessionId, 'y'.repeat(120 << 10)), (err) => {
    assert.match(String(err?.message), /message too big: \d+ bytes, limit 102400/);
    return true;
  });
  const reason = await withTimeout(closed, EVENT_TIMEOUT_MS, 'onclose');
  assert.match(String(reason?.message ?? reason), /Server returned an error on close: .*message too big: \d+ bytes, limit 102400/);
  assert.equal(c.connection.state, 'Disconnected');
});

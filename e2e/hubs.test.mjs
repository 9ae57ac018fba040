// Connecting to both hubs through the round-robin dev proxy, server-to-client
// streams, and errors for unknown methods.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { collectStream, useFarm } from './harness.mjs';

const farm = useFarm();

test('connects to both hubs; Connected arrives on the orchestrator hub', async () => {
  const orch = farm().client('orchestrator');
  const agent = farm().client('agent');
  await orch.start();
  await agent.start();

  assert.equal(orch.connection.state, 'Connected');
  assert.equal(agent.connection.state, 'Connected');
  assert.ok(orch.connection.connectionId, 'orchestrator connection has an id');
  assert.ok(agent.connection.connectionId, 'agent connection has an id');

  const info = await orch.waitFor('Connected');
  assert.equal(info.connectionId, orch.connection.connectionId, 'Connected names this connection');
  assert.equal(typeof info.connectedAt, 'string');
  assert.match(info.connectedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,7})?Z$/, 'connectedAt is UTC ISO 8601 with Z');
  const age = Date.now() - Date.parse(info.connectedAt);
  assert.ok(Math.abs(age) < 60_000, `connectedAt is about now (off by ${age} ms)`);
});

test('many connections start without sticky sessions (negotiate and WebSocket on different nodes)', async () => {
  // The dev proxy alternates backends per request, so each negotiate and the
  // WebSocket that follows it go to different nodes.
  const clients = Array.from({ length: 6 }, (_, i) => farm().client(i % 2 ? 'agent' : 'orchestrator'));
  await Promise.all(clients.map((c) => c.start()));
  const ids = new Set(clients.map((c) => c.connection.connectionId));
  assert.equal(ids.size, clients.length, 'every connection has its own id');
  // Each connection answers an invocation.
  const results = await Promise.all(clients.map((c) => collectStream(c.connection.stream('Counter', 2))));
  for (const r of results) assert.deepEqual(r, [0, 1]);
});

for (const hub of ['orchestrator', 'agent']) {
  test(`server-to-client stream Counter(3) yields 0,1,2 then completes (${hub} hub)`, async () => {
    const c = farm().client(hub);
    await c.start();
    const items = await collectStream(c.connection.stream('Counter', 3));
    assert.deepEqual(items, [0, 1, 2]);
    // The connection stays usable after the stream ends.
    assert.deepEqual(await collectStream(c.connection.stream('Counter', 0)), []);
  });

  test(`invoking an unknown method rejects with an error naming it (${hub} hub)`, async () => {
    const c = farm().client(hub);
    await c.start();
    await assert.rejects(c.invoke('NoSuchMethod'), (err) => {
      assert.match(String(err?.message), /NoSuchMethod/);
      return true;
    });
    // The failed invocation does not break the connection.
    assert.equal(c.connection.state, 'Connected');
    assert.deepEqual(await collectStream(c.connection.stream('Counter', 1)), [0]);
  });
}

// Automatic reconnect: the server closes a connection with allowReconnect,
// the client comes back on a new connection (usually on another node), and
// keeps receiving its sessions' messages without joining again, because
// session membership belongs to the user.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EVENT_TIMEOUT_MS, uniqueName, withTimeout, useFarm } from './harness.mjs';

const farm = useFarm();

test('after a server close with allowReconnect the client reconnects and keeps its sessions', async () => {
  const alice = farm().client('orchestrator', { user: uniqueName('alice'), reconnectDelays: [0, 100, 500] });
  const bob = farm().client('orchestrator', { user: uniqueName('bob') });
  await alice.start();
  await bob.start();
  const firstId = alice.connection.connectionId;

  const created = await alice.invoke('CreateSession', { name: uniqueName('session'), type: 1, agentIds: [], workingDirectory: '' });
  assert.equal(created?.success, true, `CreateSession succeeded: ${JSON.stringify(created)}`);
  const { sessionId } = created;
  await bob.invoke('JoinSession', sessionId);
  await bob.waitFor('SessionJoined', (s) => s?.id === sessionId);

  let closed = false;
  alice.connection.onclose(() => {
    closed = true;
  });
  const reconnecting = new Promise((resolve) => alice.connection.onreconnecting(resolve));
  const reconnected = new Promise((resolve) => alice.connection.onreconnected(resolve));

  // DebugClose (dev farm only) makes the server send
  // {"type":7,"error":"...","allowReconnect":true} and close. No completion is
  // expected, so fire and forget.
  await alice.connection.send('DebugClose');

  const reason = await withTimeout(reconnecting, EVENT_TIMEOUT_MS, 'onreconnecting');
  assert.match(String(reason?.message ?? reason), /Server returned an error on close/);
  const newId = await withTimeout(reconnected, EVENT_TIMEOUT_MS, 'onreconnected');
  assert.equal(alice.connection.state, 'Connected');
  assert.ok(newId, 'onreconnected gives the new connection id');
  assert.notEqual(newId, firstId, 'a reconnect is a new connection');
  assert.equal(alice.connection.connectionId, newId);
  assert.equal(closed, false, 'onclose did not fire');

  // Without JoinSession, alice gets her session's messages as soon as the
  // client reports the reconnect (a UI does not wait for anything else) ...
  await bob.invoke('SendSessionMessage', sessionId, 'after reconnect');
  const msg = await alice.waitFor('ReceiveSessionMessage', (m) => m?.content === 'after reconnect');
  assert.equal(msg.role, 0);

  // The new connection is greeted like any other.
  await alice.waitFor('Connected', (c) => c?.connectionId === newId);

  // ... and can still send to it.
  await alice.invoke('SendSessionMessage', sessionId, 'alice is back');
  await bob.waitFor('ReceiveSessionMessage', (m) => m?.content === 'alice is back');
  await alice.waitFor('ReceiveSessionMessage', (m) => m?.content === 'alice is back');
});

test('two connections of one user both receive the session, and a reconnect leaves the other intact', async () => {
  const name = uniqueName('dave');
  const tab1 = farm().client('orchestrator', { user: name, reconnectDelays: [0, 100, 500], label: `${name}/tab1` });
  const tab2 = farm().client('orchestrator', { user: name, label: `${name}/tab2` });
  await tab1.start();
  await tab2.start();

  const created = await tab1.invoke('CreateSession', { name: uniqueName('session'), type: 1, agentIds: [], workingDirectory: '' });
  assert.equal(created?.success, true);
  const { sessionId } = created;

  await tab1.invoke('SendSessionMessage', sessionId, 'one');
  await tab2.waitFor('ReceiveSessionMessage', (m) => m?.content === 'one');

  const reconnected = new Promise((resolve) => tab1.connection.onreconnected(resolve));
  await tab1.connection.send('DebugClose');
  await withTimeout(reconnected, EVENT_TIMEOUT_MS, 'onreconnected');

  await tab2.invoke('SendSessionMessage', sessionId, 'two');
  await tab1.waitFor('ReceiveSessionMessage', (m) => m?.content === 'two');
  await tab2.waitFor('ReceiveSessionMessage', (m) => m?.content === 'two');
});

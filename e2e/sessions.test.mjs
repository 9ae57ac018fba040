// Sessions across nodes: create, join, messages to the session group, history.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { uniqueName, useFarm } from './harness.mjs';

const farm = useFarm();

/** Session type 1 with no agents, as the web UI creates it. */
function sessionRequest(name) {
  return { name, type: 1, agentIds: [], workingDirectory: '' };
}

/** Connects a client for a new user to the orchestrator hub. */
async function user(prefix) {
  const c = farm().client('orchestrator', { user: uniqueName(prefix) });
  await c.start();
  return c;
}

/** Creates a session as c and returns its id (after the SessionCreated callback). */
async function createSession(c, name) {
  const res = await c.invoke('CreateSession', sessionRequest(name));
  assert.equal(res?.success, true, `CreateSession succeeded: ${JSON.stringify(res)}`);
  await c.waitFor('SessionCreated', (s) => s?.id === res.sessionId);
  return res.sessionId;
}

test('CreateSession answers with the session and sends SessionCreated', async () => {
  const alice = await user('alice');
  const name = uniqueName('session');
  const res = await alice.invoke('CreateSession', sessionRequest(name));

  assert.equal(res.success, true);
  assert.equal(typeof res.sessionId, 'string');
  assert.ok(res.sessionId.length > 0, 'sessionId is not empty');
  assert.equal(res.session?.id, res.sessionId, 'session.id equals sessionId');
  assert.equal(res.session.name, name);
  assert.equal(res.session.type, 1);
  assert.equal(res.session.status, 0, 'a new session is Active');

  const created = await alice.waitFor('SessionCreated', (s) => s?.id === res.sessionId);
  assert.equal(created.name, name);
});

test('a second client joins with JoinSession and gets SessionJoined', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const sessionId = await createSession(alice, uniqueName('session'));

  await bob.invoke('JoinSession', sessionId);
  const joined = await bob.waitFor('SessionJoined', (s) => s?.id === sessionId);
  assert.equal(joined.id, sessionId);
});

test('JoinSession of an unknown session sends ReceiveError SESSION_NOT_FOUND', async () => {
  const bob = await user('bob');
  await bob.invoke('JoinSession', 'nope');
  const err = await bob.waitFor('ReceiveError', (e) => e?.code === 'SESSION_NOT_FOUND');
  assert.equal(typeof err.error, 'string');
  assert.ok(err.error.length > 0, 'the error has a message');
  assert.equal(bob.all('SessionJoined').length, 0, 'no SessionJoined for a missing session');
});

test('SendSessionMessage reaches every member, and GetSessionHistory returns it oldest first', async () => {
  const alice = await user('alice');
  const bob = await user('bob');
  const sessionId = await createSession(alice, uniqueName('session'));
  await bob.invoke('JoinSession', sessionId);
  await bob.waitFor('SessionJoined', (s) => s?.id === sessionId);

  await alice.invoke('SendSessionMessage', sessionId, 'hello');
  const atAlice = await alice.waitFor('ReceiveSessionMessage', (m) => m?.content === 'hello');
  const atBob = await bob.waitFor('ReceiveSessionMessage', (m) => m?.content === 'hello');
  for (const msg of [atAlice, atBob]) {
    assert.equal(msg.role, 0, 'role is User (0)');
    assert.equal(typeof msg.eventId, 'string', 'the message carries its history eventId');
    assert.ok(msg.eventId.length > 0);
  }
  assert.equal(atAlice.eventId, atBob.eventId, 'both members see the same event');

  await bob.invoke('SendSessionMessage', sessionId, 'world');
  const second = await alice.waitFor('ReceiveSessionMessage', (m) => m?.content === 'world');
  await bob.waitFor('ReceiveSessionMessage', (m) => m?.content === 'world');

  const history = await alice.invoke('GetSessionHistory', sessionId, null, 100);
  assert.ok(Array.isArray(history), 'history is an array');
  for (const e of history) {
    assert.equal(typeof e.eventId, 'string');
    assert.equal(typeof e.target, 'string');
    assert.ok('payload' in e, 'entry has a payload');
    assert.ok(!Number.isNaN(Date.parse(e.timestamp)), `entry timestamp parses: ${e.timestamp}`);
  }
  const iHello = history.findIndex((e) => e.eventId === atAlice.eventId);
  const iWorld = history.findIndex((e) => e.eventId === second.eventId);
  assert.ok(iHello >= 0, 'history contains the first message');
  assert.ok(iWorld > iHello, 'history is oldest first');
  assert.equal(history[iHello].target, 'ReceiveSessionMessage');
  assert.equal(history[iHello].payload?.content, 'hello');
  assert.equal(history[iWorld].payload?.content, 'world');

  // Catching up after an event returns only what came later.
  const later = await bob.invoke('GetSessionHistory', sessionId, atAlice.eventId, 100);
  assert.ok(Array.isArray(later));
  assert.ok(!later.some((e) => e.eventId === atAlice.eventId), 'afterEventId is exclusive');
  assert.ok(later.some((e) => e.eventId === second.eventId), 'later events are returned');
});

test('a session message does not reach connections outside the session', async () => {
  const alice = await user('alice');
  const carol = await user('carol');
  const aliceSession = await createSession(alice, uniqueName('session'));
  const carolSession = await createSession(carol, uniqueName('session'));

  await alice.invoke('SendSessionMessage', aliceSession, 'for alice only');
  await alice.waitFor('ReceiveSessionMessage', (m) => m?.content === 'for alice only');
  // A marker through carol's own session: by the time it arrives, a leaked
  // message would most likely have arrived too.
  await carol.invoke('SendSessionMessage', carolSession, 'marker');
  await carol.waitFor('ReceiveSessionMessage', (m) => m?.content === 'marker');

  assert.deepEqual(
    carol.all('ReceiveSessionMessage').map((m) => m.content),
    ['marker'],
    'carol sees only her own session',
  );
  assert.ok(!alice.all('ReceiveSessionMessage').some((m) => m.content === 'marker'), 'alice does not see carol\'s session');
});

// The web console in a real browser: headless Chromium (Debian's package,
// driven by playwright-core) against a `hubfarm dev` farm. Two browser
// contexts (two people, separate storage), served by different nodes, share
// one session: chat crosses between them, an agent's answer streams into
// both (without moving the page), a plan runs to 100 %, a tool approval
// raised by one is approved by the other (and both prompts say so, then
// go), and a console whose connection was killed reconnects and shows the
// messages sent while it was away, once. The farm view, the phone and
// laptop widths and the tabs' keyboard use are checked on the way.
// Screenshots go to e2e/artifacts/.
//
// Environment:
//   HUBFARM_CHROMIUM   the Chromium binary (default /usr/bin/chromium)
//   plus the harness's variables (HUBFARM_BIN, HUBFARM_E2E_TIMEOUT_MS, ...)

import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { EVENT_TIMEOUT_MS, uniqueName, useFarm } from '../harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const artifactsDir = resolve(here, '..', 'artifacts');
const CHROMIUM = process.env.HUBFARM_CHROMIUM || '/usr/bin/chromium';
/** Deadline of one wait in the browser (rendering adds to the hub's latency). */
const WAIT_MS = Math.max(EVENT_TIMEOUT_MS, 15000);
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const farm = useFarm({ name: 'console.test' });

let browser;
const consoles = []; // {label, context, page, log}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}: install Debian's chromium package (scripts/test.sh does) or set HUBFARM_CHROMIUM`);
  mkdirSync(artifactsDir, { recursive: true });
  // launch() runs Chromium on a fresh temporary profile (user data dir) and
  // removes it on close.
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
});

after(async () => {
  await browser?.close();
});

/**
 * Opens a console in a new browser context. Page errors and console output
 * are kept and printed if the test fails.
 */
async function openConsole(label, viewport) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, reducedMotion: 'reduce' });
  context.setDefaultTimeout(WAIT_MS);
  const page = await context.newPage();
  const c = { label, context, page, log: [], errors: [] };
  page.on('console', (m) => c.log.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => c.errors.push(`[${label}] page error: ${e.stack || e.message}`));
  consoles.push(c);
  return c;
}

/** Waits until fn(arg) is truthy in the page; describes what in the timeout error. */
async function until(page, what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 50 })).jsonValue();
  } catch (err) {
    throw new Error(`timed out after ${WAIT_MS} ms waiting for ${what}: ${err.message.split('\n')[0]}`);
  }
}

/** The node that holds the console's orchestrator-hub connection, once known. */
function orchestratorNode(page) {
  return until(page, 'the node of the orchestrator connection', () => {
    const c = globalThis.hubfarmConsole?.store.connections.orchestrator;
    return c?.state === 'connected' && c.node ? c.node : false;
  });
}

async function shot(c, name) {
  await c.page.screenshot({ path: join(artifactsDir, `console-${name}.png`), fullPage: false });
}

async function openTab(page, id) {
  await page.click(`#${id}`);
  await page.locator(`#${id}[aria-selected="true"]`).waitFor();
}

/** On a phone-width page the sessions list is a drawer: open it. */
async function openDrawer(page) {
  const toggle = page.locator('#nav-toggle');
  if ((await toggle.isVisible()) && (await toggle.getAttribute('aria-expanded')) !== 'true') await toggle.click();
}

async function sendChat(page, text) {
  await openTab(page, 'tab-chat');
  await page.selectOption('#chat-to', '');
  await page.fill('#chat-input', text);
  await page.press('#chat-input', 'Enter');
}

function message(page, text) {
  return page.locator('#chat-log .msg', { hasText: text });
}

test('two consoles on different nodes share a session: chat, streamed answers, plans, approvals, reconnect', async (t) => {
  const started = Date.now();
  const aliceName = uniqueName('alice');
  const bobName = uniqueName('bob');
  const base = farm().baseUrl;

  const alice = await openConsole('alice', { width: 1280, height: 860 });
  const bob = await openConsole('bob', { width: 390, height: 844 }); // a phone's width
  t.after(() => {
    // The pages' console output is kept with the artifacts; errors are printed.
    const lines = consoles.flatMap((c) => [...c.errors, ...c.log]);
    writeFileSync(join(artifactsDir, 'console-pages.log'), lines.join('\n') + '\n');
    const errors = consoles.flatMap((c) => c.errors);
    if (errors.length) process.stderr.write(errors.join('\n') + '\n');
  });

  let aliceNode;
  let bobNode;
  await t.test('each console signs in and is served by its own node', async () => {
    await alice.page.goto(`${base}/?user=${encodeURIComponent(aliceName)}`);
    aliceNode = await orchestratorNode(alice.page);

    // Bob signs in through the form; the name is remembered, so reloading
    // (to land on another node behind the round-robin proxy) keeps him in.
    await bob.page.goto(`${base}/`);
    await bob.page.fill('#signin-user', bobName);
    await bob.page.click('#signin button[type="submit"]');
    bobNode = await orchestratorNode(bob.page);
    for (let i = 0; bobNode === aliceNode && i < 10; i++) {
      await bob.page.reload();
      bobNode = await orchestratorNode(bob.page);
    }
    assert.notEqual(bobNode, aliceNode, `both consoles stayed on node ${aliceNode} after 10 reloads`);
    assert.equal(await bob.page.locator('.who-name').textContent(), bobName);

    // The farm view lists the nodes and marks the one serving this browser.
    await openTab(alice.page, 'tab-farm');
    await alice.page.locator(`#farm-nodes tr.mine[data-node="${aliceNode}"]`).waitFor();
    const nodes = await alice.page.locator('#farm-nodes tbody tr[data-node]').count();
    assert.equal(nodes, farm().nodes, 'the farm view lists every node');
    // A node's connection count comes with its heartbeat (2 s apart on the
    // dev farm): poll until the one after alice connected is in.
    const conns = async () => Number(await alice.page.locator(`#farm-nodes tr[data-node="${aliceNode}"] td.num`).first().textContent());
    for (const deadline = Date.now() + 15_000; Date.now() < deadline && (await conns()) < 1;) {
      await alice.page.evaluate(() => globalThis.hubfarmConsole.service.pollFarm());
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok((await conns()) >= 1, `the node serving alice counts her connection (${await conns()})`);
    // Every node's message rate comes from the counts of two of its
    // heartbeats, whichever node answers the poll: poll until each row has
    // one (heartbeats are 2 s apart on the dev farm).
    const rates = () => alice.page.evaluate(() => [...document.querySelectorAll('#farm-nodes tbody tr[data-node] td:nth-of-type(3)')]
      .map((td) => td.textContent));
    const allRated = async () => (await rates()).every((r) => /^\d+\.\d$/.test(r));
    for (const deadline = Date.now() + 15_000; Date.now() < deadline && !(await allRated());) {
      await alice.page.evaluate(() => globalThis.hubfarmConsole.service.pollFarm());
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(await allRated(), `every node shows its message rate: ${await rates()}`);
    await shot(alice, 'farm');
  });

  const agentsAvailable = await alice.page.evaluate(() => globalThis.hubfarmConsole.store.agentsAvailable);
  if (!agentsAvailable) {
    t.diagnostic('the agent hub has no GetAgents on this farm: agent streaming and tool approval steps are skipped');
  }
  // ExecuteTool and ApproveTool come together, on farms with a tool sandbox:
  // ask for a decision on an approval that does not exist.
  const toolsAvailable = agentsAvailable && await alice.page.evaluate(() => globalThis.hubfarmConsole.service.hubs.agent
    .invoke('ApproveTool', 'no-such-approval', false, '').then(() => true, (err) => !/Method does not exist/.test(err.message)));
  if (agentsAvailable && !toolsAvailable) t.diagnostic('the farm runs no tools (no ExecuteTool/ApproveTool): the tool approval step is skipped');
  const agentIds = agentsAvailable
    ? await alice.page.evaluate(() => [...globalThis.hubfarmConsole.store.agents.keys()])
    : ['scripted-writer', 'scripted-reviewer'];

  const sessionName = uniqueName('console');
  let sessionId;
  await t.test('alice creates a session and bob joins it by id', async () => {
    await openTab(alice.page, 'tab-chat');
    await alice.page.fill('#new-session-name', sessionName);
    await alice.page.selectOption('#new-session-type', '1');
    await alice.page.click('#create-session button[type="submit"]');
    await alice.page.locator('#session-title', { hasText: sessionName }).waitFor();
    sessionId = (await alice.page.locator('#session-id').textContent()).trim();
    assert.match(sessionId, /^[0-9a-f-]{36}$/);

    await openDrawer(bob.page);
    await bob.page.fill('#join-session-id', sessionId);
    await bob.page.click('#join-session button[type="submit"]');
    await bob.page.locator('#session-title', { hasText: sessionName }).waitFor();
    assert.equal(await bob.page.locator('#nav-toggle').getAttribute('aria-expanded'), 'false', 'the drawer closed after joining');
  });

  await t.test('chat messages cross between the nodes', async () => {
    await sendChat(alice.page, 'Hello from **alice**');
    await message(bob.page, 'Hello from alice').waitFor();
    assert.equal(await message(bob.page, 'Hello from alice').locator('strong').textContent(), 'alice', 'markdown is rendered');
    await sendChat(bob.page, 'Hi alice, bob here:\n```\ncode block\n```');
    await message(alice.page, 'bob here').locator('pre.code').waitFor();
    // Each side sees each message once.
    assert.equal(await message(alice.page, 'Hello from alice').count(), 1);
    assert.equal(await message(bob.page, 'bob here').count(), 1);
  });

  await t.test('an agent answer streams into both consoles', { skip: !agentsAvailable && 'no GetAgents on this farm' }, async () => {
    // Record how the answer grows in each console, chunk by chunk (several
    // chunks may arrive in one frame and be drawn once: count them in the store).
    // And where the chat log and the composer are on the page after each
    // drawn change: an answer growing must not move them.
    for (const c of [alice, bob]) {
      await c.page.evaluate(() => {
        const { store } = globalThis.hubfarmConsole;
        const seen = (globalThis.answerGrowth = []);
        const boxes = (globalThis.answerLayout = []);
        const where = () => ['#chat-log', '#composer', '#agents-bar'].map((sel) => {
          const r = document.querySelector(sel).getBoundingClientRect();
          return `${sel} ${r.top + window.scrollY} ${r.height}`;
        }).join(' | ');
        boxes.push(where());
        store.addEventListener('change', (e) => {
          if (e.detail.what !== 'item' || !e.detail.key.startsWith('ans:')) return;
          const item = store.sessions.get(e.detail.sessionId).items.get(e.detail.key);
          seen.push({ len: item.content.length, complete: item.complete });
          requestAnimationFrame(() => requestAnimationFrame(() => boxes.push(where())));
        });
      });
    }
    await openTab(alice.page, 'tab-chat');
    await alice.page.selectOption('#chat-to', agentIds[0]);
    await alice.page.fill('#chat-input', 'Write a short poem about hub nodes');
    await alice.page.press('#chat-input', 'Enter');
    for (const c of [alice, bob]) {
      await c.page.locator('#chat-log .msg.agent[data-complete="true"]').waitFor();
    }
    const texts = await Promise.all([alice, bob].map((c) => c.page.locator('#chat-log .msg.agent .msg-body').first().textContent()));
    assert.ok(texts[0].trim().length > 0, 'the answer has text');
    assert.equal(texts[1], texts[0], 'both consoles show the same answer');
    for (const c of [alice, bob]) {
      const growth = await c.page.evaluate(() => globalThis.answerGrowth);
      const partial = new Set(growth.filter((g) => !g.complete && g.len > 0).map((g) => g.len));
      assert.ok(partial.size >= 2, `${c.label}: the answer arrived in pieces before it completed: ${JSON.stringify(growth)}`);
      assert.equal(growth.at(-1)?.complete, true, `${c.label}: the answer completed`);
      const layouts = await c.page.evaluate(() => globalThis.answerLayout);
      assert.ok(layouts.length > 2, `${c.label}: the layout was measured while the answer streamed (${layouts.length})`);
      const moved = [...new Set(layouts)];
      assert.equal(moved.length, 1, `${c.label}: the page did not move while the answer streamed: ${moved.join('\n')}`);
    }
    await shot(alice, 'agent-answer');
  });

  await t.test('a plan runs: preview, execute, progress to 100 % in both consoles', async () => {
    await openTab(alice.page, 'tab-plan');
    await openTab(bob.page, 'tab-plan');
    await alice.page.fill('#plan-goal', 'Draft and review release notes');
    await alice.page.selectOption('#plan-strategy', '0');
    if (agentsAvailable) {
      for (const id of agentIds.slice(0, 2)) await alice.page.check(`#plan-form input[value="${id}"]`);
    } else {
      await alice.page.fill('#plan-form input[name="agentIds"]', agentIds.join(', '));
    }
    await alice.page.click('#plan-preview');
    const card = alice.page.locator('#plans .plan').first();
    await card.locator('.plan-execute').waitFor();
    const planId = await card.getAttribute('data-plan');
    const steps = await card.locator('.timeline .step').count();
    assert.ok(steps >= 2, `the preview shows the steps (${steps})`);
    // Bob sees the same plan appear.
    const bobCard = bob.page.locator(`#plans .plan[data-plan="${planId}"]`);
    await bobCard.waitFor();

    await card.locator('.plan-execute').click();
    for (const [c, k] of [[alice, card], [bob, bobCard]]) {
      await k.locator('.progress[data-value="100"]').waitFor();
      await c.page.locator(`#plans .plan[data-plan="${planId}"][data-status="completed"]`).waitFor();
      assert.equal(await k.locator('.step-completed').count(), steps, `${c.label}: every step completed`);
      assert.equal(await k.locator('.pct').textContent(), '100 %');
      assert.ok((await k.locator('.final-output').textContent()).length > 0, `${c.label}: final output shown`);
    }
    await alice.page.locator(`#chat-log .plan-note[data-plan="${planId}"][data-status="completed"]`).waitFor({ state: 'attached' });
    await shot(alice, 'plan');
    await shot(bob, 'plan-phone');
  });

  await t.test('a tool approval raised in one console is approved in the other', { skip: !toolsAvailable && 'no ExecuteTool on this farm' }, async () => {
    await openTab(alice.page, 'tab-tools');
    await alice.page.check(`#tool-form input[value="${agentIds[0]}"]`);
    await alice.page.fill('#tool-name', 'write_file');
    await alice.page.fill('#tool-params', JSON.stringify({ path: 'console-test.txt', content: 'written from the console test' }));
    await alice.page.click('#tool-run');
    const prompt = bob.page.locator('#approvals .approval', { hasText: 'write_file' });
    await prompt.waitFor();
    assert.ok(await prompt.locator('.danger-badge').isVisible(), 'write_file is marked dangerous');
    await alice.page.locator('#approvals .approval', { hasText: 'write_file' }).waitFor(); // raised in alice's console too
    await shot(bob, 'approval-phone');
    const alicePrompt = alice.page.locator('#approvals .approval', { hasText: 'write_file' });
    const heights = await Promise.all([prompt, alicePrompt].map(async (p) => (await p.boundingBox()).height));
    await prompt.locator('button.approve').click();
    // Both prompts end: in place and at their size, saying who decided,
    // without their buttons (alice's learns it from the approval named in
    // her tool's result)...
    for (const [i, [p, who]] of [[prompt, 'you'], [alicePrompt, bobName]].entries()) {
      await p.locator('.approval-outcome', { hasText: `Approved by ${who}` }).waitFor();
      assert.equal(await p.getAttribute('data-state'), 'approved');
      assert.equal(await p.locator('button').count(), 0, 'a decided prompt takes no decision');
      assert.equal((await p.boundingBox()).height, heights[i], 'the decided prompt keeps its height');
    }
    await shot(alice, 'approval-decided');
    // ... and then go.
    await prompt.waitFor({ state: 'detached' });
    // Alice's run ends (the tool ran once approved) and her prompt is gone.
    const run = alice.page.locator('#tool-runs .tool-run').first();
    await alice.page.locator('#tool-runs .tool-run[data-state="succeeded"], #tool-runs .tool-run[data-state="failed"]').first().waitFor();
    const outcome = await run.textContent();
    assert.doesNotMatch(outcome, /denied|not approved|rejected|timed out/i, `the tool was approved: ${outcome}`);
    await alice.page.locator('#approvals .approval', { hasText: 'write_file' }).waitFor({ state: 'detached' });
  });

  await t.test('callbacks this farm cannot send (answers, approvals) render as the contract shapes them', { skip: agentsAvailable && toolsAvailable && 'the farm streams real answers and raises real approvals (above)' }, async () => {
    // The farm cannot produce these callbacks yet; hand them to bob's console
    // as if they had arrived, and check what a person sees.
    const page = bob.page;
    await openTab(page, 'tab-chat');
    const deliver = (target, arg) => page.evaluate(([tg, a]) => globalThis.hubfarmConsole.service.apply(tg, a, '', ''), [target, arg]);
    await page.evaluate(() => globalThis.hubfarmConsole.store.setAgents([{ id: 'writer-x', name: 'Writer', status: 2 }], true));
    const dto = (content, id, isComplete = false) => ({ agentId: 'writer-x', sessionId, timestamp: new Date().toISOString(),
      response: { messageId: 'm-x', id, content, type: 0, isComplete } });
    await deliver('ReceiveStreamingUpdate', dto('Hel', 'r1'));
    await page.locator('.agent-chip.busy[data-agent="writer-x"]').waitFor();
    await deliver('ReceiveStreamingUpdate', dto('lo **wor', 'r2'));
    await deliver('ReceiveStreamingUpdate', dto('ld**', 'r3'));
    const bubble = page.locator('#chat-log .msg.agent[data-key="ans:writer-x:m-x"]');
    await bubble.locator('strong', { hasText: 'world' }).waitFor();
    assert.equal(await bubble.getAttribute('data-complete'), 'false');
    await deliver('ReceiveAgentResponse', dto('', 'r4', true));
    await page.locator('#chat-log .msg.agent[data-key="ans:writer-x:m-x"][data-complete="true"]').waitFor();
    assert.equal((await bubble.locator('.msg-body').textContent()).trim(), 'Hello world');
    await page.locator('.agent-chip[data-agent="writer-x"]:not(.busy)').waitFor();

    await deliver('ToolApprovalRequired', { id: 'ap-x', toolName: 'bash', parameters: { command: 'rm -rf build' }, agentId: 'writer-x', sessionId, isDangerous: true });
    const prompt = page.locator('#approvals .approval[data-approval="ap-x"]');
    await prompt.locator('.danger-badge').waitFor();
    assert.match(await prompt.locator('.params').textContent(), /rm -rf build/);
    await shot(bob, 'approval-phone');
    await prompt.locator('button.deny').click();
    // The farm has no ApproveTool yet: the answer fails visibly, and can be dismissed.
    await prompt.locator('.form-error').waitFor();
    await prompt.locator('button.link', { hasText: 'Dismiss' }).click();
    await prompt.waitFor({ state: 'detached' });
  });

  await t.test('a console whose connection was killed reconnects and shows what it missed', async () => {
    await openTab(bob.page, 'tab-chat');
    await openTab(alice.page, 'tab-chat');
    const before = await bob.page.evaluate(() => globalThis.hubfarmConsole.store.connections.orchestrator.connectionId);
    // Bob's browser cannot reach the farm's negotiate endpoint any more, so
    // his console cannot come back until we say so; then the server closes
    // his connections (DebugClose, development farms only).
    const away = (route) => route.abort('internetdisconnected');
    await bob.context.route('**/negotiate*', away);
    await bob.page.evaluate(() => globalThis.hubfarmConsole.service.dropConnections());
    await bob.page.locator('#conn-status[data-state="reconnecting"]').waitFor();

    const missed = ['While you were away (1)', 'While you were away (2)', 'While you were away (3)'];
    for (const text of missed) {
      await sendChat(alice.page, text);
      await message(alice.page, text).waitFor();
    }
    await shot(bob, 'reconnecting-phone');
    assert.equal(await message(bob.page, 'While you were away').count(), 0, 'nothing reached bob while he was offline');

    await until(bob.page, 'a failed reconnect attempt', () => globalThis.hubfarmConsole.store.connections.orchestrator.attempt >= 2);
    await bob.context.unroute('**/negotiate*', away);
    await bob.page.locator('#conn-status[data-state="connected"]').waitFor();
    const afterId = await bob.page.evaluate(() => globalThis.hubfarmConsole.store.connections.orchestrator.connectionId);
    assert.notEqual(afterId, before, 'the console reconnected on a new connection');
    for (const text of missed) await message(bob.page, text).waitFor();
    const order = await bob.page.locator('#chat-log .msg .msg-body').allTextContents();
    const idx = missed.map((m) => order.findIndex((o) => o.includes(m)));
    assert.deepEqual([...idx].sort((a, b) => a - b), idx, `missed messages in order: ${idx}`);
    assert.equal(await message(bob.page, 'While you were away (2)').count(), 1, 'caught-up messages are not doubled');
    // The catch-up re-read the 30 s before the last event bob saw: what he
    // had seen then is not shown again.
    await bob.page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    assert.equal(await message(bob.page, 'Hello from alice').count(), 1, 'messages seen before the loss are not doubled');

    // And the chat goes on both ways.
    await sendChat(bob.page, 'bob is back');
    await message(alice.page, 'bob is back').waitFor();
    await shot(bob, 'reconnected-phone');
    await shot(alice, 'chat');
  });

  await t.test('a reloaded console restores its sessions from the browser and shows their history', async () => {
    await alice.page.reload();
    await alice.page.locator('#conn-status[data-state="connected"]').waitFor();
    await alice.page.locator(`#session-list [data-session="${sessionId}"][aria-current="true"]`).waitFor();
    await alice.page.locator('#session-title', { hasText: sessionName }).waitFor();
    for (const text of ['Hello from alice', 'bob is back']) await message(alice.page, text).waitFor();
    await alice.page.locator('#chat-log .plan-note[data-status="completed"]').waitFor();
  });

  await t.test('the layout holds at 375 px and 1440 px, and the tabs work from the keyboard', async () => {
    await bob.page.setViewportSize({ width: 375, height: 740 });
    await alice.page.setViewportSize({ width: 1440, height: 900 });
    for (const c of [alice, bob]) {
      for (const tab of ['tab-chat', 'tab-plan', 'tab-tools', 'tab-farm']) {
        await openTab(c.page, tab);
        const overflow = await c.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `${c.label} ${tab}: the page is ${overflow} px wider than the window`);
      }
    }
    await alice.page.focus('#tab-farm');
    await alice.page.keyboard.press('ArrowRight'); // wraps to the first tab
    await alice.page.locator('#tab-chat[aria-selected="true"]').waitFor();
    assert.equal(await alice.page.evaluate(() => document.activeElement.id), 'tab-chat');
    await alice.page.keyboard.press('End');
    await alice.page.locator('#panel-farm:not([hidden])').waitFor();
  });

  for (const c of consoles) assert.deepEqual(c.errors, [], `${c.label}: no uncaught errors in the page`);
  t.diagnostic(`console test ran in ${((Date.now() - started) / 1000).toFixed(1)} s (alice on ${aliceNode}, bob on ${bobNode})`);
});

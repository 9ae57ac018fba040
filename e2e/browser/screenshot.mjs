// Makes the README's picture of the web console: starts a dev farm, has two
// people talk and run a plan in one session, and saves alice's console.
//
//   cd e2e && node browser/screenshot.mjs [out.png]     (default ../docs/console.png)
//
// Uses HUBFARM_BIN (or builds the binary) and HUBFARM_CHROMIUM like the tests.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { Farm, buildBinary } from '../harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, '..', '..', 'docs', 'console.png'));
const CHROMIUM = process.env.HUBFARM_CHROMIUM || '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let tmp;
if (!process.env.HUBFARM_BIN) {
  tmp = mkdtempSync(join(tmpdir(), 'hubfarm-shot-'));
  process.env.HUBFARM_BIN = buildBinary(tmp);
}
const farm = new Farm({ name: 'console-screenshot', nodes: 3, args: [], env: {} });
await farm.start();
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
try {
  const open = async (user, viewport) => {
    const ctx = await browser.newContext({ viewport, deviceScaleFactor: 1, reducedMotion: 'reduce' });
    ctx.setDefaultTimeout(15000);
    const page = await ctx.newPage();
    await page.goto(`${farm.baseUrl}/?user=${user}`);
    await page.waitForSelector('#conn-status[data-state="connected"]');
    return page;
  };
  const alice = await open('alice', { width: 1280, height: 800 });
  const bob = await open('bob', { width: 1280, height: 800 });
  const agents = await alice.evaluate(() => (globalThis.hubfarmConsole.store.agentsAvailable ? [...globalThis.hubfarmConsole.store.agents.keys()] : null));

  await alice.fill('#new-session-name', 'Release 2.4 notes');
  await alice.click('#create-session button[type="submit"]');
  const id = (await alice.locator('#session-id').textContent()).trim();
  await bob.fill('#join-session-id', id);
  await bob.click('#join-session button[type="submit"]');
  await bob.waitForSelector('#session-title');

  const say = async (page, text) => {
    await page.selectOption('#chat-to', '');
    await page.fill('#chat-input', text);
    await page.press('#chat-input', 'Enter');
    await page.locator('#chat-log .msg', { hasText: text.split('\n')[0].replace(/[*`]/g, '') }).first().waitFor();
  };
  await say(alice, 'Morning! Can we get the **release notes** for 2.4 drafted today?');
  await say(bob, 'Sure. The upgrade step changed, users need to run:\n```sh\nhubfarm serve --redis redis://cache:6379/0\n```');
  await say(alice, 'Thanks. I will ask the agents for a first draft and a review.');

  await alice.click('#tab-plan');
  await alice.fill('#plan-goal', 'Draft and review the release notes for 2.4');
  if (agents) for (const a of agents.slice(0, 2)) await alice.check(`#plan-form input[value="${a}"]`);
  else await alice.fill('#plan-form input[name="agentIds"]', 'scripted-writer, scripted-reviewer');
  await alice.click('#plan-preview');
  await alice.locator('#plans .plan .plan-execute').click();
  await alice.locator('#plans .plan[data-status="completed"]').waitFor();
  await alice.click('#tab-chat');
  if (agents) {
    await alice.selectOption('#chat-to', agents[0]);
    await alice.fill('#chat-input', 'Give me a one-line summary of the release.');
    await alice.press('#chat-input', 'Enter');
    await alice.locator('#chat-log .msg.agent[data-complete="true"]').waitFor();
  }
  await alice.locator('#chat-input').blur();
  await alice.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await farm.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}

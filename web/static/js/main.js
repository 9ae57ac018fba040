// Entry point: sign-in, then the console (sessions, chat, orchestration,
// tools, farm). `/?user=NAME` signs in to a development farm directly.

import { Store } from './store.js';
import { ConsoleService } from './console.js';
import { mountSignIn, readIdentity, saveIdentity, clearIdentity } from './views/signin.js';
import { mountStatus } from './views/status.js';
import { mountSessions } from './views/sessions.js';
import { mountSessionHead } from './views/session-head.js';
import { mountChat } from './views/chat.js';
import { mountPlans } from './views/plans.js';
import { mountTools, mountApprovals } from './views/tools.js';
import { mountFarm } from './views/farm.js';
import { mountTabs } from './views/tabs.js';
import { mountNotices } from './views/notices.js';

const $ = (id) => document.getElementById(id);

function start() {
  const store = new Store();
  const service = new ConsoleService(store);
  // For people debugging in the browser's devtools, and for the browser test.
  globalThis.hubfarmConsole = { store, service };

  mountNotices($('notices'), store);
  const fromUrl = new URL(location.href).searchParams.get('user');
  const identity = fromUrl ? { user: fromUrl, token: '' } : readIdentity();
  if (identity) open(store, service, identity);
  else signIn(store, service);
}

function signIn(store, service) {
  $('app').hidden = true;
  $('signin').hidden = false;
  mountSignIn($('signin'), async (identity) => {
    saveIdentity(identity);
    await open(store, service, identity);
  });
}

async function open(store, service, identity) {
  $('signin').hidden = true;
  $('app').hidden = false;
  const signOut = async () => {
    await service.signOut();
    clearIdentity();
    const u = new URL(location.href);
    u.searchParams.delete('user');
    location.replace(u);
  };
  mountStatus($('conn-status'), $('who'), store, service, signOut);
  mountSessions($('sessions'), $('nav-toggle'), store, service);
  mountSessionHead($('session-head'), store, service);
  mountApprovals($('approvals'), store, service);
  mountTabs($('tabs'));
  mountChat($('panel-chat'), store, service);
  mountPlans($('panel-plan'), store, service);
  mountTools($('panel-tools'), store, service);
  mountFarm($('panel-farm'), store, service);
  try {
    await service.signIn(identity);
  } catch (err) {
    store.notice(`Sign-in failed: ${err.message}`, 'error');
    await service.signOut();
    clearIdentity();
    signIn(store, service);
  }
}

start();

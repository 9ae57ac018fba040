// The connection indicator in the top bar (and who is signed in).

import { h, mount } from '../dom.js';

const LABELS = {
  connected: 'Connected',
  connecting: 'Connecting…',
  reconnecting: 'Reconnecting…',
  disconnected: 'Disconnected',
};

/** Overall state of the two hub connections: the worst of them. */
export function overallState(connections) {
  const states = Object.values(connections).map((c) => c.state);
  for (const s of ['disconnected', 'reconnecting', 'connecting']) if (states.includes(s)) return s;
  return 'connected';
}

export function mountStatus(root, whoRoot, store, service, signOut) {
  let shown = '';
  const render = () => {
    const state = overallState(store.connections);
    const orch = store.connections.orchestrator;
    const attempt = Math.max(...Object.values(store.connections).map((c) => c.attempt || 0));
    const detail = state === 'connected'
      ? orch.node ? `node ${orch.node}` : ''
      : state === 'reconnecting' && attempt > 1 ? `attempt ${attempt}` : '';
    const key = `${state}|${detail}`;
    if (key === shown) return;
    shown = key;
    root.dataset.state = state;
    const error = Object.values(store.connections).find((c) => c.error)?.error;
    mount(root,
      h('span', { class: 'dot', 'aria-hidden': 'true' }),
      h('span', { class: 'conn-label', id: 'conn-label' }, LABELS[state]),
      detail && h('span', { class: 'conn-detail' }, detail));
    root.title = state !== 'connected' && error ? error : '';
  };
  store.addEventListener('change', (e) => {
    if (e.detail.what === 'connection') render();
    if (e.detail.what === 'identity') renderWho();
  });
  const renderWho = () => mount(whoRoot,
    h('span', { class: 'who-name', title: 'Signed in as' }, store.identity?.user || ''),
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
  render();
  renderWho();
}

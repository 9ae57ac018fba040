// The farm: its live nodes with their connection counts, message rates and
// heartbeats, which node holds this browser's connections, and the state of
// those connections (with a button to drop them, on development farms).

import { h, mount, ago } from '../dom.js';
import { overallState } from './status.js';

export function mountFarm(root, store, service) {
  const summary = h('div', { class: 'farm-summary', id: 'farm-summary' });
  const table = h('table', { class: 'nodes', id: 'farm-nodes' });
  const note = h('p', { class: 'help' },
    'Messages/s: records each node received from and sent to its clients, measured between two of its heartbeats.');
  const drop = h('button', { type: 'button', id: 'drop-connection', onclick: () => service.dropConnections() }, 'Drop my connections');
  const dropHelp = h('p', { class: 'help', id: 'drop-help' }, 'Development farms only: the server closes this browser’s connections; the console reconnects (often to another node) and catches up.');
  drop.setAttribute('aria-describedby', 'drop-help');
  mount(root,
    h('h2', { class: 'section-title' }, 'This browser'), summary,
    h('h2', { class: 'section-title' }, 'Nodes'), h('div', { class: 'table-wrap' }, table), note,
    h('div', { class: 'actions' }, drop), dropHelp);

  const render = () => {
    const { farm, connections } = store;
    const state = overallState(connections);
    mount(summary,
      h('dl', { class: 'facts' },
        h('dt', {}, 'Connection'), h('dd', { id: 'farm-state', 'data-state': state }, state),
        ...Object.entries(connections).flatMap(([hub, c]) => [
          h('dt', {}, `${hub === 'agent' ? 'Agent' : 'Orchestrator'} hub`),
          h('dd', { 'data-hub': hub, 'data-node': c.node || '' }, c.connectionId ? `node ${c.node || '…'}` : c.state),
        ]),
        h('dt', {}, 'Last answer from'), h('dd', { id: 'farm-served-by' }, farm.servedBy || '–')),
      farm.error ? h('p', { class: 'form-error', role: 'alert' }, `The farm view is out of date: ${farm.error}`) : null);
    const mine = new Map();
    for (const [hub, c] of Object.entries(connections)) if (c.node) mine.set(c.node, [...(mine.get(c.node) || []), hub]);
    const now = Date.now();
    mount(table,
      h('caption', { class: 'visually-hidden' }, 'Live nodes of the farm'),
      h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Node'), h('th', { scope: 'col' }, 'Address'), h('th', { scope: 'col', class: 'num' }, 'Connections'),
        h('th', { scope: 'col', class: 'num' }, 'Messages/s'), h('th', { scope: 'col' }, 'Heartbeat'))),
      h('tbody', {}, farm.nodes.length ? farm.nodes.map((n) => {
        const rate = farm.rates.get(n.id);
        const hubs = mine.get(n.id);
        return h('tr', { 'data-node': n.id, class: hubs ? 'mine' : null },
          h('th', { scope: 'row' }, n.id, hubs ? h('span', { class: 'you' }, ` ← you (${hubs.join(', ')})`) : null,
            n.id === farm.servedBy ? h('span', { class: 'served' }, ' · answered') : null),
          h('td', {}, h('code', {}, n.address)),
          h('td', { class: 'num' }, String(n.connections)),
          h('td', { class: 'num' }, rate === undefined ? '–' : rate.toFixed(1)),
          h('td', {}, ago(n.lastHeartbeat, now)));
      }) : h('tr', {}, h('td', { colspan: 5, class: 'muted' }, farm.error ? 'Unavailable.' : 'Loading…'))));
  };
  store.addEventListener('change', (e) => {
    if (e.detail.what === 'farm' || e.detail.what === 'connection') render();
  });
  render();
}

// Tools: run a tool through an agent (ExecuteTool) and see its result; and
// the approval prompts (ToolApprovalRequired) of the current session, which
// any member may approve or deny, until someone did.

import { h, mount } from '../dom.js';
import { ToolNames } from '../contract.js';
import { agentPicker } from './agent-picker.js';
import { agentName } from './chat.js';
import { busy } from './sessions.js';
import { approvalShown } from '../store.js';

export function mountTools(root, store, service) {
  const agent = agentPicker(store, { legend: 'Agent', single: true });
  const tool = h('input', { id: 'tool-name', name: 'toolName', list: 'tool-names', required: true, autocomplete: 'off', spellcheck: 'false', placeholder: 'write_file' });
  const params = h('textarea', { id: 'tool-params', name: 'parameters', rows: 4, spellcheck: 'false', value: '{\n  \n}', 'aria-describedby': 'tool-params-help' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'card stack', id: 'tool-form', 'aria-labelledby': 'tool-form-title' },
    h('h2', { id: 'tool-form-title' }, 'Run a tool'),
    agent.el,
    h('div', { class: 'field' }, h('label', { for: 'tool-name' }, 'Tool'), tool,
      h('datalist', { id: 'tool-names' }, ToolNames.map((t) => h('option', { value: t })))),
    h('div', { class: 'field' }, h('label', { for: 'tool-params' }, 'Parameters (JSON object)'), params,
      h('p', { class: 'help', id: 'tool-params-help' }, 'e.g. {"path": "notes.md", "content": "hello"}. Tools that change things wait for a member’s approval.')),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'tool-run' }, 'Run')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    busy(null, form, error, async () => {
      const s = store.current;
      if (!s) throw new Error('Open a session first.');
      const [agentId] = agent.value();
      if (!agentId) throw new Error('Choose an agent.');
      if (!tool.value.trim()) throw new Error('Name the tool.');
      let parameters;
      try {
        parameters = JSON.parse(params.value || '{}');
      } catch (err) {
        throw new Error(`The parameters are not JSON: ${err.message}`);
      }
      if (!parameters || typeof parameters !== 'object' || Array.isArray(parameters)) throw new Error('The parameters must be a JSON object.');
      // Do not hold the form while the tool waits for approval.
      service.runTool(s.id, { agentId, toolName: tool.value.trim(), parameters });
    });
  });
  const runs = h('ul', { class: 'tool-runs', id: 'tool-runs', 'aria-label': 'Tool runs' });
  mount(root, form, h('h2', { class: 'section-title' }, 'Runs'), runs);

  const render = () => {
    const s = store.current;
    if (!s?.toolRuns.length) {
      mount(runs, h('li', { class: 'muted' }, 'No tool runs from this browser in this session.'));
      return;
    }
    mount(runs, s.toolRuns.map((r) => {
      const res = r.result;
      const state = r.status !== 'done' ? r.status : res?.success ? 'succeeded' : 'failed';
      return h('li', { class: `card tool-run tool-${state}`, 'data-run': r.id, 'data-state': state },
        h('p', {}, h('strong', {}, r.toolName), ` via ${agentName(store, r.agentId)} — `, h('span', { class: 'run-state' }, state)),
        h('pre', { class: 'params' }, JSON.stringify(r.parameters, null, 2)),
        res ? h('pre', { class: 'run-output' }, res.success ? res.output || '(no output)' : res.error || 'failed') : null);
    }));
  };
  store.addEventListener('change', (e) => {
    if (e.detail.what === 'current' || (e.detail.what === 'tools' && e.detail.sessionId === store.currentId)) render();
  });
  render();
}

/** What a decided prompt says, in place of its buttons. */
function outcomeText(store, state, decidedBy) {
  const who = decidedBy && decidedBy === store.identity?.user ? 'you' : decidedBy;
  switch (state) {
    case 'approved': return who ? `Approved by ${who}` : 'Approved';
    case 'denied': return who ? `Denied by ${who}` : 'Denied';
    case 'timedout': return 'Timed out: nobody answered, the tool did not run';
    case 'cancelled': return 'Cancelled: the request was withdrawn';
    default: return state;
  }
}

/**
 * The approval prompts of the current session. A decided prompt (here, by
 * another member, or by the farm's timeout) keeps its place and size and
 * says how it ended instead of offering the buttons, for a few seconds, then
 * goes.
 */
export function mountApprovals(root, store, service) {
  let timer = 0;
  const render = () => {
    clearTimeout(timer);
    timer = 0;
    const s = store.current;
    const now = Date.now();
    const items = [];
    for (const a of s ? s.approvals.values() : []) {
      const shown = approvalShown(a, now);
      if (shown) items.push({ a, shown });
    }
    root.hidden = items.length === 0;
    const active = root.contains(document.activeElement) ? document.activeElement : null;
    const focused = active && { action: active.dataset.action, approval: active.closest('[data-approval]')?.dataset.approval };
    mount(root, items.map(({ a: { request: r, state, note, decidedBy }, shown }) => {
      const decide = (approved) => service.decide(s.id, r.id, approved, approved ? 'approved in the console' : 'denied in the console');
      return h('article', {
        class: `approval${r.isDangerous ? ' dangerous' : ''}${shown.open ? '' : ' resolved'}`,
        'data-approval': r.id, 'data-state': shown.state, role: 'group', 'aria-labelledby': `ap-${r.id}`, tabindex: -1,
      },
      h('header', {},
        // The same heading either way: it wraps the same, and the prompt keeps its height.
        h('h2', { id: `ap-${r.id}` }, 'Tool approval: ', h('code', {}, r.toolName)),
        r.isDangerous ? h('span', { class: 'danger-badge' }, h('span', { 'aria-hidden': 'true' }, '⚠ '), 'Dangerous') : null),
      h('p', { class: 'approval-meta' }, `Requested by ${agentName(store, r.agentId)}`),
      h('pre', { class: 'params', 'aria-label': 'Parameters' }, JSON.stringify(r.parameters ?? {}, null, 2)),
      shown.open && note ? h('p', { class: 'form-error', role: 'alert' }, note) : null,
      shown.open
        ? h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'primary approve', 'data-action': 'approve', disabled: state === 'sending', onclick: () => decide(true) }, 'Approve'),
          h('button', { type: 'button', class: 'danger-outline deny', 'data-action': 'deny', disabled: state === 'sending', onclick: () => decide(false) }, 'Deny'),
          state === 'error' ? h('button', { type: 'button', class: 'link', 'data-action': 'dismiss', onclick: () => store.approvalDecided(s.id, r.id, 'dismissed') }, 'Dismiss') : null)
        : h('p', { class: 'actions approval-outcome', role: 'status' }, outcomeText(store, shown.state, decidedBy)));
    }));
    if (focused) {
      // Keep the keyboard where it was: the same button, else its prompt
      // (decided meanwhile), else the main area (the prompt went).
      const card = focused.approval && [...root.querySelectorAll('[data-approval]')].find((el) => el.dataset.approval === focused.approval);
      const target = (card && focused.action && card.querySelector(`[data-action="${focused.action}"]`)) || card || document.getElementById('main');
      target?.focus({ preventScroll: true });
    }
    const next = Math.min(...items.map((i) => i.shown.until));
    if (Number.isFinite(next)) timer = setTimeout(render, Math.max(0, next - now) + 50);
  };
  store.addEventListener('change', (e) => {
    if (e.detail.what === 'current' || (e.detail.what === 'approvals' && e.detail.sessionId === store.currentId)) render();
  });
  render();
}

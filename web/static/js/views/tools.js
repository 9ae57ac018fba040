// Tools: run a tool through an agent (ExecuteTool) and see its result; and
// the approval prompts (ToolApprovalRequired) of the current session, which
// any member may approve or deny.

import { h, mount } from '../dom.js';
import { ToolNames } from '../contract.js';
import { agentPicker } from './agent-picker.js';
import { agentName } from './chat.js';
import { busy } from './sessions.js';

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

export function mountApprovals(root, store, service) {
  const render = () => {
    const s = store.current;
    const items = s ? [...s.approvals.values()].filter((a) => !['approved', 'denied', 'expired'].includes(a.state)) : [];
    root.hidden = items.length === 0;
    const focused = root.contains(document.activeElement) ? document.activeElement.dataset.action : null;
    mount(root, items.map(({ request: r, state, note }) => {
      const decide = (approved) => service.decide(s.id, r.id, approved, approved ? 'approved in the console' : 'denied in the console');
      return h('article', { class: `approval${r.isDangerous ? ' dangerous' : ''}`, 'data-approval': r.id, role: 'group', 'aria-labelledby': `ap-${r.id}` },
        h('header', {},
          h('h2', { id: `ap-${r.id}` }, 'Approval needed: ', h('code', {}, r.toolName)),
          r.isDangerous ? h('span', { class: 'danger-badge' }, h('span', { 'aria-hidden': 'true' }, '⚠ '), 'Dangerous') : null),
        h('p', { class: 'approval-meta' }, `Requested by ${agentName(store, r.agentId)}`),
        h('pre', { class: 'params', 'aria-label': 'Parameters' }, JSON.stringify(r.parameters ?? {}, null, 2)),
        note ? h('p', { class: 'form-error', role: 'alert' }, note) : null,
        h('div', { class: 'actions' },
          h('button', { type: 'button', class: 'primary approve', 'data-action': 'approve', disabled: state === 'sending', onclick: () => decide(true) }, 'Approve'),
          h('button', { type: 'button', class: 'danger-outline deny', 'data-action': 'deny', disabled: state === 'sending', onclick: () => decide(false) }, 'Deny'),
          state === 'error' ? h('button', { type: 'button', class: 'link', onclick: () => store.approvalDecided(s.id, r.id, 'denied') }, 'Dismiss') : null));
    }));
    if (focused) root.querySelector(`[data-action="${focused}"]`)?.focus();
  };
  store.addEventListener('change', (e) => {
    if (e.detail.what === 'current' || (e.detail.what === 'approvals' && e.detail.sessionId === store.currentId)) render();
  });
  render();
}

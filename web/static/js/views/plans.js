// Orchestration: goal + strategy + agents → plan preview → execute; each
// plan shows a progress bar, a timeline of its steps with status and output,
// the final output, and Cancel while it runs.

import { h, mount } from '../dom.js';
import { Strategy } from '../contract.js';
import { agentPicker } from './agent-picker.js';
import { agentName } from './chat.js';
import { busy } from './sessions.js';
import { errorText } from '../console.js';

const STATUS_LABEL = {
  preview: 'Preview', starting: 'Starting…', running: 'Running', completed: 'Completed', failed: 'Failed',
  cancelled: 'Cancelled', pending: 'Pending', created: 'Preview',
};

export function mountPlans(root, store, service) {
  const goal = h('textarea', { id: 'plan-goal', name: 'goal', rows: 2, maxlength: 4000, required: true, placeholder: 'What should the agents achieve?' });
  const strategy = h('select', { id: 'plan-strategy', name: 'strategy' }, Strategy.map((s, i) => h('option', { value: i }, s)));
  const maxSteps = h('input', { id: 'plan-max-steps', name: 'maxSteps', type: 'number', min: 1, max: 50, value: 10, inputmode: 'numeric' });
  const agents = agentPicker(store, { legend: 'Agents' });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'card stack', id: 'plan-form', 'aria-labelledby': 'plan-form-title' },
    h('h2', { id: 'plan-form-title' }, 'New plan'),
    h('div', { class: 'field' }, h('label', { for: 'plan-goal' }, 'Goal'), goal),
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'plan-strategy' }, 'Strategy'), strategy),
      h('div', { class: 'field narrow' }, h('label', { for: 'plan-max-steps' }, 'Max steps'), maxSteps)),
    agents.el,
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', id: 'plan-preview' }, 'Preview plan')));
  form.addEventListener('submit', (e) => busy(e, form, error, async () => {
    const s = store.current;
    if (!s) throw new Error('Open a session first.');
    if (!goal.value.trim()) throw new Error('Describe the goal.');
    const ids = agents.value();
    if (!ids.length) throw new Error('Choose at least one agent.');
    const plan = await service.createPlan(s.id, { goal: goal.value.trim(), strategy: Number(strategy.value), agentIds: ids, maxSteps: Number(maxSteps.value) || 10 });
    requestAnimationFrame(() => document.querySelector(`[data-plan="${CSS.escape(plan.id)}"] .plan-execute`)?.focus());
  }));

  const list = h('div', { class: 'plans', id: 'plans' });
  mount(root, form, h('h2', { class: 'section-title' }, 'Plans'), list);

  const cards = new Map(); // planId -> element
  let shownSession = null;

  const card = (s, p) => {
    const bar = h('div', { class: 'bar-fill' });
    const progress = h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': 'Plan progress' }, bar);
    const pct = h('span', { class: 'pct' });
    const status = h('span', { class: 'status-badge' });
    const steps = h('ol', { class: 'timeline', 'aria-label': 'Steps' });
    const final = h('div', { class: 'final' });
    const err = h('p', { class: 'form-error', role: 'alert' });
    const execute = h('button', { type: 'button', class: 'primary plan-execute', onclick: async () => {
      err.textContent = '';
      try {
        await service.executePlan(s.id, p.id);
      } catch (e) {
        err.textContent = errorText(e);
      }
    } }, 'Execute');
    const cancel = h('button', { type: 'button', class: 'danger-outline plan-cancel', onclick: async () => {
      err.textContent = '';
      try {
        await service.cancelPlan(p.id);
      } catch (e) {
        err.textContent = errorText(e);
      }
    } }, 'Cancel');
    const title = h('h3', { class: 'plan-title' });
    const meta = h('p', { class: 'plan-meta' });
    const el = h('article', { class: 'card plan', 'data-plan': p.id, 'aria-labelledby': `plan-${p.id}-title` },
      h('header', { class: 'plan-head' }, title, status),
      meta,
      h('div', { class: 'progress-row' }, progress, pct),
      steps, final, err,
      h('div', { class: 'actions' }, execute, cancel));
    title.id = `plan-${p.id}-title`;
    el.refs = { bar, progress, pct, status, steps, final, execute, cancel, title, meta };
    return el;
  };

  const fill = (el, p) => {
    const plan = p.plan;
    el.refs.title.textContent = plan?.name || plan?.goal || `Plan ${p.id}`;
    el.refs.meta.textContent = plan ? `${Strategy[plan.strategy] ?? ''} · ${p.steps.size} step${p.steps.size === 1 ? '' : 's'} · goal: ${plan.goal}` : '';
    const pct = Math.round(Math.min(100, Math.max(0, p.percent)));
    el.refs.bar.style.width = `${pct}%`;
    el.refs.progress.setAttribute('aria-valuenow', String(pct));
    el.refs.progress.dataset.value = String(pct);
    el.refs.pct.textContent = `${pct} %`;
    el.refs.status.textContent = STATUS_LABEL[p.status] || p.status;
    el.dataset.status = p.status;
    el.refs.execute.hidden = p.status !== 'preview';
    el.refs.cancel.hidden = !(p.status === 'running' || p.status === 'starting');
    mount(el.refs.steps, [...p.steps.values()].sort((a, b) => a.step.order - b.step.order).map(({ step, status, result }) => {
      const out = result?.output || result?.error || '';
      return h('li', { class: `step step-${status}`, 'data-step': step.order },
        h('span', { class: 'step-mark', 'aria-hidden': 'true' }),
        h('div', { class: 'step-main' },
          h('p', { class: 'step-line' },
            h('strong', {}, `${step.order}. `), step.name || step.task || '',
            h('span', { class: 'step-agent' }, ` — ${agentName(store, step.agentId || step.assignedAgentId)}`)),
          h('p', { class: 'step-status' }, STATUS_LABEL[status] || status),
          out ? h('details', { class: 'step-output' }, h('summary', {}, result?.success === false ? 'Error' : 'Output'), h('pre', {}, out)) : null));
    }));
    mount(el.refs.final, p.result
      ? [h('h4', {}, p.result.success ? 'Final output' : 'Result'), h('pre', { class: 'final-output' }, p.result.finalOutput || '')]
      : []);
  };

  const render = (planId) => {
    const s = store.current;
    if (!s) {
      mount(list, h('p', { class: 'muted' }, 'Open a session to plan in it.'));
      cards.clear();
      shownSession = null;
      return;
    }
    if (shownSession !== s.id) {
      shownSession = s.id;
      cards.clear();
      list.replaceChildren();
    }
    const ids = planId ? [planId] : [...s.planOrder];
    for (const id of ids) {
      const p = s.plans.get(id);
      if (!p) continue;
      let el = cards.get(id);
      if (!el) {
        el = card(s, p);
        cards.set(id, el);
        list.prepend(el);
      }
      fill(el, p);
    }
    list.querySelector('.muted')?.remove();
    if (!s.planOrder.length) list.append(h('p', { class: 'muted' }, 'No plans in this session yet.'));
  };

  store.addEventListener('change', (e) => {
    const { what, sessionId, planId } = e.detail;
    if (what === 'current') render();
    else if (what === 'plans' && sessionId === store.currentId) render(planId);
    else if (what === 'agents') render();
  });
  render();
}

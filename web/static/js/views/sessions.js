// The sessions sidebar: my sessions (kept in this browser), create one, join
// one by id. On narrow screens it is a drawer opened from the top bar.

import { h, mount } from '../dom.js';
import { SessionType } from '../contract.js';
import { errorText } from '../console.js';
import { agentPicker } from './agent-picker.js';

const NARROW = '(max-width: 760px)';

export function mountSessions(root, toggle, store, service) {
  const list = h('ul', { class: 'session-list', id: 'session-list', 'aria-label': 'My sessions' });

  // ---- create ----
  const name = h('input', { id: 'new-session-name', name: 'name', required: true, maxlength: 256, autocomplete: 'off', placeholder: 'Design review' });
  const type = h('select', { id: 'new-session-type', name: 'type' },
    SessionType.map((t, i) => h('option', { value: i, selected: i === 1 }, t)));
  const agents = agentPicker(store, { legend: 'Agents' });
  const createError = h('p', { class: 'form-error', role: 'alert' });
  const create = h('form', { class: 'stack', id: 'create-session', 'aria-labelledby': 'create-title' },
    h('h2', { id: 'create-title' }, 'New session'),
    h('div', { class: 'field' }, h('label', { for: 'new-session-name' }, 'Name'), name),
    h('div', { class: 'field' }, h('label', { for: 'new-session-type' }, 'Type'), type),
    agents.el,
    createError,
    h('button', { type: 'submit', class: 'primary' }, 'Create session'));
  create.addEventListener('submit', (e) => busy(e, create, createError, async () => {
    if (!name.value.trim()) throw new Error('Give the session a name.');
    await service.createSession({ name: name.value.trim(), type: Number(type.value), agentIds: agents.value() });
    name.value = '';
    close();
  }));

  // ---- join ----
  const joinId = h('input', { id: 'join-session-id', name: 'sessionId', required: true, maxlength: 128, autocomplete: 'off', spellcheck: 'false', placeholder: 'session id' });
  const joinError = h('p', { class: 'form-error', role: 'alert' });
  const join = h('form', { class: 'stack', id: 'join-session', 'aria-labelledby': 'join-title' },
    h('h2', { id: 'join-title' }, 'Join a session'),
    h('div', { class: 'field' }, h('label', { for: 'join-session-id' }, 'Session id'), joinId),
    joinError,
    h('button', { type: 'submit' }, 'Join'));
  join.addEventListener('submit', (e) => busy(e, join, joinError, async () => {
    const id = joinId.value.trim();
    if (!id) throw new Error('Paste the id of the session.');
    await service.joinSession(id);
    joinId.value = '';
    close();
  }));

  mount(root, h('h2', { class: 'nav-title' }, 'My sessions'), list, create, join);

  // ---- list ----
  const renderList = () => {
    const sessions = [...store.sessions.values()];
    if (!sessions.length) {
      mount(list, h('li', { class: 'empty' }, 'No sessions yet: create one or join one by id.'));
      return;
    }
    mount(list, sessions.map((s) => {
      const pending = store.pendingApprovals(s.id).length;
      const current = s.id === store.currentId;
      return h('li', {},
        h('button', { type: 'button', class: `session-item${current ? ' current' : ''}`, 'aria-current': current ? 'true' : null,
          'data-session': s.id, onclick: () => { store.select(s.id); close(); } },
          h('span', { class: 'session-name' }, s.name || s.id),
          h('span', { class: 'session-meta' },
            s.status === 'joined' ? SessionType[s.info?.type] || '' : s.status === 'joining' ? 'joining…' : s.status === 'missing' ? 'not found' : s.status,
            s.unread ? h('span', { class: 'badge', 'aria-label': `${s.unread} new` }, String(s.unread)) : null,
            pending ? h('span', { class: 'badge badge-warn', 'aria-label': `${pending} approvals waiting` }, `${pending} ⚑`) : null)));
    }));
  };
  store.addEventListener('change', (e) => {
    if (['sessions', 'current', 'approvals', 'item'].includes(e.detail.what)) schedule();
  });
  let queued = false;
  const schedule = () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      renderList();
    });
  };
  renderList();

  // ---- drawer on narrow screens ----
  const mq = matchMedia(NARROW);
  const setOpen = (open) => {
    root.dataset.open = String(open);
    toggle.setAttribute('aria-expanded', String(open));
    if (open) root.querySelector('button, input')?.focus();
  };
  function close() {
    if (mq.matches && root.dataset.open === 'true') {
      setOpen(false);
      toggle.focus();
    }
  }
  const layout = () => {
    toggle.hidden = !mq.matches;
    if (!mq.matches) delete root.dataset.open;
    else if (!root.dataset.open) setOpen(false);
  };
  mq.addEventListener('change', layout);
  layout();
  toggle.addEventListener('click', () => setOpen(root.dataset.open !== 'true'));
  root.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') close();
  });
}

/** Runs a form action: disables the form, shows the error, re-enables. */
export async function busy(event, form, errorEl, fn) {
  event?.preventDefault();
  const controls = [...form.querySelectorAll('button, input, select, textarea')];
  controls.forEach((c) => (c.disabled = true));
  errorEl.textContent = '';
  try {
    await fn();
  } catch (err) {
    errorEl.textContent = errorText(err);
  } finally {
    controls.forEach((c) => (c.disabled = false));
  }
}

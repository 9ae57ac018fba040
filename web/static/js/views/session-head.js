// The current session's header: name, type, id (copyable), invite, leave.

import { h, mount } from '../dom.js';
import { SessionType } from '../contract.js';
import { busy } from './sessions.js';

export function mountSessionHead(root, store, service) {
  let shownId = null;
  const render = () => {
    const s = store.current;
    shownId = s?.id ?? '';
    if (!s) {
      mount(root, h('div', { class: 'empty-head' },
        h('h1', {}, 'No session open'),
        h('p', {}, 'Create a session or join one by id to chat with people and agents and run plans.')));
      return;
    }
    const user = h('input', { id: 'invite-user', name: 'userId', autocomplete: 'off', spellcheck: 'false', maxlength: 128, placeholder: 'user id', required: true });
    const inviteError = h('p', { class: 'form-error', role: 'alert' });
    const invite = h('form', { class: 'inline-form', id: 'invite-form', 'aria-label': 'Invite a user' },
      h('label', { for: 'invite-user', class: 'visually-hidden' }, 'User to invite'),
      user,
      h('button', { type: 'submit' }, 'Invite'),
      inviteError);
    invite.addEventListener('submit', (e) => busy(e, invite, inviteError, async () => {
      const who = user.value.trim();
      if (!who) throw new Error('Whom should I invite?');
      await service.invite(s.id, who);
      store.notice(`${who} may now join this session (id ${s.id}).`, 'info', s.id);
      user.value = '';
    }));
    const copy = h('button', { type: 'button', class: 'link', onclick: async () => {
      try {
        await navigator.clipboard.writeText(s.id);
        copy.textContent = 'Copied';
      } catch {
        copy.textContent = 'Select the id to copy';
      }
      setTimeout(() => (copy.textContent = 'Copy id'), 1500);
    } }, 'Copy id');
    mount(root,
      h('div', { class: 'head-title' },
        h('h1', { id: 'session-title' }, s.name || 'Session'),
        h('p', { class: 'head-meta' },
          h('span', {}, SessionType[s.info?.type] ?? ''),
          h('code', { class: 'session-id', id: 'session-id', title: 'Session id' }, s.id),
          copy),
        s.status === 'missing' || s.status === 'forbidden'
          ? h('p', { class: 'form-error', role: 'alert' }, s.error || 'This session is not available.')
          : null),
      h('div', { class: 'head-actions' },
        invite,
        h('button', { type: 'button', class: 'danger-outline', id: 'leave-session', onclick: async () => {
          if (!confirm(`Leave “${s.name || s.id}”?`)) return;
          await service.leaveSession(s.id).catch((err) => store.notice(err.message, 'error'));
        } }, 'Leave')));
  };
  store.addEventListener('change', (e) => {
    const { what, sessionId } = e.detail;
    if (what === 'current' || (what === 'sessions' && (!sessionId || sessionId === shownId))) render();
  });
  render();
}

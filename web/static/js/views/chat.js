// The chat: the agents of the farm (and which one is busy), the session's
// messages and agents' answers (streamed token by token), and the composer
// (to everyone, or to one agent).
//
// Items are rendered once and then updated in place; a streaming answer
// re-renders its own body at most once per frame. The log stays pinned to
// the bottom while the reader is there, and leaves the scroll alone when they
// scrolled up.

import { h, mount, clock } from '../dom.js';
import { MessageRole } from '../contract.js';
import { renderMarkdown } from '../markdown.js';
import { errorText } from '../console.js';

export function mountChat(root, store, service) {
  const agentsBar = h('ul', { class: 'agents-bar', id: 'agents-bar', 'aria-label': 'Agents' });
  const log = h('ol', { class: 'log', id: 'chat-log', role: 'log', 'aria-label': 'Messages', 'aria-live': 'polite', 'aria-relevant': 'additions', tabindex: 0 });
  const empty = h('p', { class: 'log-empty' }, 'No messages yet. Say hello, or ask an agent.');
  const to = h('select', { id: 'chat-to', name: 'to', 'aria-label': 'Send to' });
  const input = h('textarea', { id: 'chat-input', name: 'message', rows: 2, maxlength: 65536, placeholder: 'Write a message — Enter sends, Shift+Enter adds a line', 'aria-label': 'Message' });
  const send = h('button', { type: 'submit', class: 'primary', id: 'chat-send' }, 'Send');
  const error = h('p', { class: 'form-error', role: 'alert' });
  const form = h('form', { class: 'composer', id: 'composer', 'aria-label': 'Write a message' },
    h('div', { class: 'composer-row' }, h('label', { for: 'chat-to', class: 'composer-to' }, 'To'), to),
    h('div', { class: 'composer-row' }, input, send),
    error);
  mount(root, agentsBar, h('div', { class: 'log-wrap' }, log, empty), form);

  let sessionId = null;
  const rendered = new Map(); // key -> element
  const dirty = new Set();
  let frame = 0;

  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;

  // ---- items ----
  const itemEl = (item) => {
    if (item.kind === 'plan') {
      const bar = h('span', { class: 'bar-fill' });
      const el = h('li', { class: 'plan-note', 'data-key': item.key, 'data-plan': item.planId },
        h('span', { class: 'plan-note-text' }),
        h('span', { class: 'progress mini', 'aria-hidden': 'true' }, bar));
      el.bar = bar;
      return el;
    }
    if (item.kind === 'notice') {
      return h('li', { class: `notice notice-${item.level}`, role: item.level === 'error' ? 'alert' : null }, item.text);
    }
    const mine = item.kind === 'message' && item.senderId && item.senderId === store.identity?.user;
    const agent = item.kind === 'answer' || item.role === MessageRole.Assistant;
    const who = agent ? agentName(store, item.agentId) : item.senderId || (item.role === MessageRole.System ? 'system' : 'someone');
    const body = h('div', { class: 'msg-body' });
    const el = h('li', { class: `msg${mine ? ' mine' : ''}${agent ? ' agent' : ''}`, 'data-key': item.key },
      h('p', { class: 'msg-head' },
        h('span', { class: 'msg-who' }, who),
        item.kind === 'message' && item.agentId && !agent ? h('span', { class: 'msg-to' }, `to ${agentName(store, item.agentId)}`) : null,
        h('time', { class: 'msg-time', datetime: item.timestamp || null }, clock(item.timestamp)),
        item.kind === 'answer' ? h('span', { class: 'msg-state', 'aria-hidden': 'true' }) : null),
      body);
    el.body = body;
    return el;
  };

  const update = (item, el) => {
    if (item.kind === 'plan') {
      const p = store.sessions.get(sessionId)?.plans.get(item.planId);
      if (!p) return;
      const pct = Math.round(Math.min(100, p.percent));
      const name = p.plan?.goal || 'plan';
      const what = { preview: 'planned', starting: 'starting', running: `running, step ${p.currentStep || 1} of ${p.totalSteps || '?'}` }[p.status] || p.status;
      el.querySelector('.plan-note-text').textContent = `Plan “${name}”: ${what} · ${pct} %`;
      el.bar.style.width = `${pct}%`;
      el.dataset.status = p.status;
      return;
    }
    el.body.replaceChildren(renderMarkdown(item.content));
    if (item.kind === 'answer') {
      el.classList.toggle('streaming', !item.complete);
      el.classList.toggle('failed', !!item.error);
      el.setAttribute('aria-busy', String(!item.complete));
      el.dataset.complete = String(!!item.complete);
      el.querySelector('.msg-state').textContent = item.complete ? '' : 'typing…';
    }
  };

  const flush = () => {
    frame = 0;
    const s = store.sessions.get(sessionId);
    if (!s) return;
    const stick = atBottom();
    for (const key of dirty) {
      const item = s.items.get(key);
      if (!item) continue;
      let el = rendered.get(key);
      if (!el) {
        el = itemEl(item);
        rendered.set(key, el);
        const i = s.order.indexOf(key);
        const next = s.order.slice(i + 1).map((k) => rendered.get(k)).find(Boolean);
        log.insertBefore(el, next || null);
      }
      if (item.kind !== 'notice') update(item, el);
    }
    dirty.clear();
    empty.hidden = rendered.size > 0;
    if (stick) log.scrollTop = log.scrollHeight;
  };
  const schedule = (key) => {
    dirty.add(key);
    if (!frame) frame = requestAnimationFrame(flush);
  };

  const renderSession = () => {
    const s = store.current;
    sessionId = s?.id ?? null;
    rendered.clear();
    log.replaceChildren();
    dirty.clear();
    for (const key of s?.order || []) dirty.add(key);
    flush();
    log.scrollTop = log.scrollHeight;
    renderComposer();
  };

  // ---- agents bar and composer ----
  const renderAgents = () => {
    const agents = [...store.agents.values()];
    if (!agents.length) {
      mount(agentsBar, h('li', { class: 'muted' }, store.agentsAvailable === false ? 'This farm does not list agents.' : 'No agents.'));
    } else {
      mount(agentsBar, agents.map((a) => {
        const isBusy = store.isBusy(a.id);
        return h('li', { class: `agent-chip${isBusy ? ' busy' : ''}`, 'data-agent': a.id },
          h('span', { class: 'dot', 'aria-hidden': 'true' }),
          h('span', {}, a.name || a.id),
          h('span', { class: 'agent-state' }, isBusy ? 'busy' : 'idle'));
      }));
    }
  };
  const renderComposer = () => {
    const chosen = to.value;
    mount(to, h('option', { value: '' }, 'Everyone in the session'),
      [...store.agents.values()].map((a) => h('option', { value: a.id }, `Agent: ${a.name || a.id}`)));
    to.value = [...to.options].some((o) => o.value === chosen) ? chosen : '';
    const ok = !!store.current && store.current.status !== 'missing';
    input.disabled = send.disabled = !ok;
  };

  const submit = async () => {
    const s = store.current;
    const text = input.value.trim();
    if (!s || !text) return;
    error.textContent = '';
    send.disabled = true;
    try {
      if (to.value) await service.sendToAgent(s.id, to.value, text);
      else await service.sendMessage(s.id, text);
      input.value = '';
    } catch (err) {
      error.textContent = `Not sent: ${errorText(err)}`;
    } finally {
      send.disabled = false;
      input.focus();
    }
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    }
  });

  store.addEventListener('change', (e) => {
    const { what, sessionId: sid, key } = e.detail;
    if (what === 'current') renderSession();
    else if (what === 'item' && sid === sessionId) schedule(key);
    else if (what === 'agents') {
      renderAgents();
      if (!form.contains(document.activeElement) || document.activeElement !== to) renderComposer();
    } else if (what === 'sessions' && sid === sessionId) renderComposer();
  });
  renderAgents();
  renderSession();
}

export function agentName(store, id) {
  return store.agents.get(id)?.name || id || 'agent';
}

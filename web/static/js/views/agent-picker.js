// Choosing agents: checkboxes from the farm's catalogue (GetAgents), or a
// comma-separated list of ids when the farm does not list its agents.

import { h, mount, uid } from '../dom.js';

/**
 * @returns {{el: HTMLElement, value: () => string[], refresh: () => void}}
 */
export function agentPicker(store, { legend = 'Agents', single = false } = {}) {
  const el = h('fieldset', { class: 'agents-pick' });
  const id = uid('agents');
  let text = null;
  const refresh = () => {
    const chosen = new Set(value());
    if (store.agentsAvailable && store.agents.size) {
      text = null;
      mount(el, h('legend', {}, legend),
        h('div', { class: 'checks' }, [...store.agents.values()].map((a, i) => {
          const cid = `${id}-${i}`;
          return h('label', { class: 'check', for: cid },
            h('input', { type: single ? 'radio' : 'checkbox', id: cid, name: id, value: a.id,
              checked: chosen.size ? chosen.has(a.id) : single && i === 0 }),
            h('span', {}, a.name || a.id));
        })));
    } else {
      const prev = text?.value || [...chosen].join(', ');
      text = h('input', { id, name: 'agentIds', value: prev, spellcheck: 'false', autocomplete: 'off',
        placeholder: single ? 'agent id' : 'agent ids, comma-separated', 'aria-describedby': `${id}-help` });
      mount(el, h('legend', {}, legend), text,
        h('p', { class: 'help', id: `${id}-help` },
          store.agentsAvailable === false ? 'This farm does not list its agents: type their ids.' : 'Agent ids.'));
    }
  };
  const value = () => {
    if (text) return text.value.split(/[\s,]+/).filter(Boolean);
    return [...el.querySelectorAll('input:checked')].map((i) => i.value);
  };
  store.addEventListener('change', (e) => e.detail.what === 'agents' && !el.contains(document.activeElement) && refresh());
  refresh();
  return { el, value, refresh };
}

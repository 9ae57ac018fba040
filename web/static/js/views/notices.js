// Console-wide notices (errors not tied to a session), dismissible.

import { h, mount } from '../dom.js';

export function mountNotices(root, store) {
  const render = () => mount(root, store.notices.map((n) => h('div', { class: `toast toast-${n.level}`, role: n.level === 'error' ? 'alert' : 'status' },
    h('span', {}, n.text),
    h('button', { type: 'button', class: 'icon', 'aria-label': 'Dismiss', onclick: () => store.dismissNotice(n.id) }, '×'))));
  store.addEventListener('change', (e) => e.detail.what === 'notices' && render());
  render();
}

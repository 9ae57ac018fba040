// Sign-in: a name (development farms trust it) or a JWT pasted from the
// identity provider. The name is remembered in localStorage, a token only
// for this tab (sessionStorage).

import { h, mount } from '../dom.js';

const USER_KEY = 'hubfarm.console.v1.user';
const TOKEN_KEY = 'hubfarm.console.v1.token';

/** The subject of a JWT (unverified: for display and storage keys only). */
export function tokenSubject(token) {
  try {
    const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(payload.padEnd(payload.length + ((4 - (payload.length % 4)) % 4), '=')));
    return typeof claims.sub === 'string' ? claims.sub : '';
  } catch {
    return '';
  }
}

export function readIdentity() {
  const token = sessionStorage.getItem(TOKEN_KEY) || '';
  if (token) return { user: tokenSubject(token) || 'token user', token };
  const user = localStorage.getItem(USER_KEY) || '';
  return user ? { user, token: '' } : null;
}

export function saveIdentity({ user, token }) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else localStorage.setItem(USER_KEY, user);
}

export function clearIdentity() {
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(USER_KEY);
}

/** Renders the sign-in form; onSubmit({user, token}) is awaited. */
export function mountSignIn(root, onSubmit) {
  const error = h('p', { class: 'form-error', role: 'alert', id: 'signin-error' });
  const name = h('input', { id: 'signin-user', name: 'user', autocomplete: 'username', spellcheck: 'false',
    maxlength: 64, placeholder: 'e.g. alice', 'aria-describedby': 'signin-user-help' });
  const token = h('textarea', { id: 'signin-token', name: 'token', rows: 3, spellcheck: 'false',
    placeholder: 'eyJhbGciOi…', 'aria-describedby': 'signin-token-help' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'card signin-card', 'aria-labelledby': 'signin-title', novalidate: true },
    h('h1', { id: 'signin-title' }, 'Sign in to the farm'),
    h('div', { class: 'field' },
      h('label', { for: 'signin-token' }, 'Access token'),
      token,
      h('p', { class: 'help', id: 'signin-token-help' }, 'Paste a JWT from your identity provider (or from ', h('code', {}, 'hubfarm token'), ').')),
    h('p', { class: 'or' }, h('span', {}, 'or, on a development farm')),
    h('div', { class: 'field' },
      h('label', { for: 'signin-user' }, 'Your name'),
      name,
      h('p', { class: 'help', id: 'signin-user-help' }, 'hubfarm dev runs without authentication and trusts this name.')),
    error,
    h('div', { class: 'actions' }, button));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const t = token.value.trim();
    const u = name.value.trim();
    if (!t && !u) {
      error.textContent = 'Paste a token or enter a name.';
      (t ? token : name).focus();
      return;
    }
    if (t && t.split('.').length !== 3) {
      error.textContent = 'That does not look like a JWT (three dot-separated parts).';
      token.focus();
      return;
    }
    error.textContent = '';
    button.disabled = true;
    try {
      await onSubmit(t ? { user: tokenSubject(t) || 'token user', token: t } : { user: u, token: '' });
    } finally {
      button.disabled = false;
    }
  });
  mount(root, form);
  token.focus();
}

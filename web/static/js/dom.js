// Tiny DOM helpers: h() builds elements, never from HTML strings.

/**
 * h('button', {class: 'primary', onclick: fn, 'aria-label': 'Send'}, 'Send')
 * Attributes: class, text, on<event> handlers, dataset via data-*, boolean
 * true/false toggles the attribute, null/undefined skips it.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k === 'value') el.value = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces el's children. */
export function mount(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A short relative time ("3 s ago", "2 min ago") or a clock time. */
export function ago(date, now = Date.now()) {
  const t = new Date(date).getTime();
  if (!Number.isFinite(t) || t <= 0) return '–';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return new Date(t).toLocaleString();
}

/** Clock time of a DateTime string, or ''. */
export function clock(date) {
  const t = new Date(date);
  return Number.isFinite(t.getTime()) && t.getFullYear() > 1 ? t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
}

let idSeq = 0;
/** A unique element id with a readable prefix. */
export function uid(prefix) {
  idSeq++;
  return `${prefix}-${idSeq}`;
}

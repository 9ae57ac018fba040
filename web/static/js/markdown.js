// Markdown-ish rendering of chat text into DOM nodes (never through HTML
// strings): fenced code blocks, inline code, **bold**, *italic*, links to
// http(s) URLs, headings, bullet and numbered lists, paragraphs. An open
// code fence (an answer still streaming) renders as a code block too.

import { h } from './dom.js';

/** Renders text into a DocumentFragment. */
export function renderMarkdown(text) {
  const frag = document.createDocumentFragment();
  const lines = String(text ?? '').replace(/\r\n?/g, '\n').split('\n');
  let para = [];
  let list = null;
  const flushPara = () => {
    if (para.length) frag.append(h('p', {}, inline(para.join('\n'))));
    para = [];
  };
  const flushList = () => {
    if (list) frag.append(list);
    list = null;
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const fence = /^\s*(```+|~~~+)\s*([\w+.#-]*)\s*$/.exec(line);
    if (fence) {
      flushPara();
      flushList();
      const code = [];
      let j = i + 1;
      while (j < lines.length && !lines[j].trim().startsWith(fence[1])) code.push(lines[j++]);
      const lang = fence[2];
      frag.append(
        h('pre', { class: 'code', 'data-lang': lang || null, tabindex: 0, 'aria-label': lang ? `${lang} code` : 'code' },
          h('code', {}, code.join('\n'))),
      );
      i = j; // the closing fence (or the end)
      continue;
    }
    const heading = /^(#{1,4})\s+(.*)$/.exec(line);
    if (heading) {
      flushPara();
      flushList();
      frag.append(h('p', { class: `md-h md-h${heading[1].length}` }, h('strong', {}, inline(heading[2]))));
      continue;
    }
    const item = /^\s*(?:([-*+])|(\d+)[.)])\s+(.*)$/.exec(line);
    if (item) {
      flushPara();
      const tag = item[1] ? 'ul' : 'ol';
      if (!list || list.tagName.toLowerCase() !== tag) {
        flushList();
        list = h(tag);
      }
      list.append(h('li', {}, inline(item[3])));
      continue;
    }
    if (!line.trim()) {
      flushPara();
      flushList();
      continue;
    }
    flushList();
    para.push(line);
  }
  flushPara();
  flushList();
  return frag;
}

const INLINE = /(`+)([^`]+?)\1|\*\*([^*]+)\*\*|(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])|\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

/** Inline spans of one paragraph. */
function inline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[2] !== undefined) out.push(h('code', {}, m[2]));
    else if (m[3] !== undefined) out.push(h('strong', {}, m[3]));
    else if (m[4] !== undefined) out.push(h('em', {}, m[4]));
    else if (m[5] !== undefined) out.push(link(m[6], m[5]));
    else out.push(link(m[7], m[7]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function link(href, label) {
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, label);
}

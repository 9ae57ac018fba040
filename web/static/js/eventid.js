// Session event ids are Redis stream ids, "<milliseconds>-<sequence>". The
// console orders a session's items by them; items without an event id (live
// callbacks the farm does not record) sort right after the newest event seen
// when they arrived.

/** Parses "ms-seq" into [ms, seq]; null when id is not an event id. */
export function parseEventId(id) {
  const m = /^(\d+)-(\d+)$/.exec(String(id ?? ''));
  return m ? [Number(m[1]), Number(m[2])] : null;
}

/** Compares two sort keys [ms, seq, local]. */
export function compareKeys(a, b) {
  return a[0] - b[0] || a[1] - b[1] || a[2] - b[2];
}

/** True when event id a is newer than b (either may be empty). */
export function newerEventId(a, b) {
  const pa = parseEventId(a);
  const pb = parseEventId(b);
  if (!pa) return false;
  if (!pb) return true;
  return pa[0] - pb[0] > 0 || (pa[0] === pb[0] && pa[1] > pb[1]);
}

/**
 * How far before the last event seen a catch-up starts. Events of a session
 * reach a member out of id order (each node publishes its own), and after a
 * Redis restart a node asks its clients to reconnect only once its
 * subscriptions have been back for a while, spread over its drain window,
 * while they keep receiving that node's events live: the event a console
 * missed can be many seconds older than the newest one it saw.
 */
export const CATCH_UP_OVERLAP_MS = 30000;

/**
 * Where a catch-up after lastEventId starts: an event id CATCH_UP_OVERLAP_MS
 * before it (the history is read from after that id, which need not exist),
 * or null (the whole history) when nothing was seen or the overlap reaches
 * back past the start.
 */
export function catchUpStart(lastEventId) {
  const p = parseEventId(lastEventId);
  if (!p) return null;
  const ms = p[0] - CATCH_UP_OVERLAP_MS;
  return ms > 0 ? `${ms}-0` : null;
}

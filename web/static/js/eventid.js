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

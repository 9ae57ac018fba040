// The console's state: who is signed in, the sessions (their chat items,
// plans, tool runs and approvals), the agents, the hub connections and the
// farm. Views subscribe to 'change' events ({detail: {what, sessionId, key}})
// and read what they need; only the service (console.js) writes.

import { compareKeys, newerEventId, parseEventId } from './eventid.js';
import { BusyStatuses, MessageRole, ResponseType } from './contract.js';

const STORAGE_PREFIX = 'hubfarm.console.v1';
/** How long the farm waits for a tool approval by default (then it denies). */
export const APPROVAL_TIMEOUT_MS = 5 * 60 * 1000;
/**
 * Event ids remembered per session to apply each event once. A catch-up
 * re-reads the last 30 s of the history, so this must hold more events than
 * a session records in that time; past it the oldest are forgotten (their
 * items de-duplicate by their own ids as well).
 */
export const SEEN_EVENTS_LIMIT = 10000;
/** How long a decided approval prompt stays up, saying who decided, before it goes. */
export const RESOLVED_APPROVAL_SHOWN_MS = 4000;
/** Decisions remembered for approvals this console has not seen (yet). */
const RESOLVED_APPROVALS_LIMIT = 500;

/** One session as the console knows it. */
export class SessionState {
  constructor(id, name = '') {
    this.id = id;
    this.name = name;
    this.info = null; // the contract's Session, once joined
    this.status = 'joining'; // joining | joined | missing | forbidden | left
    this.error = '';
    this.lastEventId = ''; // newest event id seen
    this.seen = new Set(); // event ids applied, oldest first (at most SEEN_EVENTS_LIMIT)
    this.items = new Map(); // key -> chat item
    this.order = []; // keys, sorted by item.sort
    this.localSeq = 0;
    this.plans = new Map(); // planId -> PlanState (below)
    this.planOrder = [];
    this.toolRuns = []; // {id, agentId, toolName, parameters, status, result}
    this.approvals = new Map(); // approvalId -> {request, state, note, decidedBy, at, resolvedAt}
    this.unread = 0;
  }

  /** The sort key for an item: its event id, or right after the newest seen. */
  sortKey(eventId) {
    const p = parseEventId(eventId);
    if (p) return [p[0], p[1], 0];
    const last = parseEventId(this.lastEventId) || [0, 0];
    return [last[0], last[1], ++this.localSeq];
  }

  /** Inserts or returns the item under key; returns [item, created]. */
  upsertItem(key, eventId, make) {
    let item = this.items.get(key);
    if (item) return [item, false];
    item = { key, sort: this.sortKey(eventId), ...make() };
    this.items.set(key, item);
    let lo = 0;
    let hi = this.order.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareKeys(this.items.get(this.order[mid]).sort, item.sort) <= 0) lo = mid + 1;
      else hi = mid;
    }
    this.order.splice(lo, 0, key);
    return [item, true];
  }

  /** Records an event id; false if it was applied before. */
  markEvent(eventId) {
    if (!eventId) return true;
    if (this.seen.has(eventId)) return false;
    this.seen.add(eventId);
    // A Set iterates in insertion order: the first one is the oldest.
    if (this.seen.size > SEEN_EVENTS_LIMIT) this.seen.delete(this.seen.values().next().value);
    if (newerEventId(eventId, this.lastEventId)) this.lastEventId = eventId;
    return true;
  }

  /** Moves lastEventId forward without marking the event applied. */
  advance(eventId) {
    if (newerEventId(eventId, this.lastEventId)) this.lastEventId = eventId;
  }

  plan(planId) {
    let p = this.plans.get(planId);
    if (!p) {
      p = { id: planId, plan: null, status: 'preview', percent: 0, currentStep: 0, totalSteps: 0,
        currentAgent: '', steps: new Map(), result: null, error: '' };
      this.plans.set(planId, p);
      this.planOrder.push(planId);
    }
    return p;
  }
}

/** The console's whole state. */
export class Store extends EventTarget {
  constructor(storage = globalThis.localStorage) {
    super();
    this.storage = storage;
    this.identity = null; // {user, token, label}
    this.sessions = new Map();
    this.currentId = '';
    this.agents = new Map(); // id -> AgentInfo
    this.agentsAvailable = null; // null unknown, true, false
    this.agentActivity = new Map(); // agentId -> Set of answer keys in progress
    this.connections = {
      orchestrator: { state: 'disconnected', connectionId: '', node: '', attempt: 0, error: '' },
      agent: { state: 'disconnected', connectionId: '', node: '', attempt: 0, error: '' },
    };
    this.farm = { nodes: [], servedBy: '', rates: new Map(), error: '', updated: 0 };
    this.notices = []; // {id, text, level}
    this.seenResponses = new Set(); // AgentResponse ids (chunks may arrive on two paths), oldest first
    this.resolvedApprovals = new Map(); // approvalId -> decision, for prompts not seen (yet)
  }

  changed(what, detail = {}) {
    this.dispatchEvent(new CustomEvent('change', { detail: { what, ...detail } }));
  }

  get current() {
    return this.sessions.get(this.currentId) || null;
  }

  // ---- persistence: the session list lives in the browser ----------------

  storageKey() {
    return `${STORAGE_PREFIX}.${this.identity?.user || 'anonymous'}`;
  }

  load() {
    try {
      const saved = JSON.parse(this.storage?.getItem(this.storageKey()) || '{}');
      for (const s of saved.sessions || []) {
        if (s && typeof s.id === 'string' && !this.sessions.has(s.id)) this.sessions.set(s.id, new SessionState(s.id, s.name));
      }
      if (saved.current && this.sessions.has(saved.current)) this.currentId = saved.current;
    } catch {
      // a damaged entry is dropped on the next save
    }
  }

  save() {
    const sessions = [...this.sessions.values()].filter((s) => s.status !== 'left').map((s) => ({ id: s.id, name: s.name }));
    try {
      this.storage?.setItem(this.storageKey(), JSON.stringify({ sessions, current: this.currentId }));
    } catch {
      // storage full or disabled: the list lasts for this page only
    }
  }

  // ---- sessions ---------------------------------------------------------

  session(id, name) {
    let s = this.sessions.get(id);
    if (!s) {
      s = new SessionState(id, name);
      this.sessions.set(id, s);
      this.save();
      this.changed('sessions');
    }
    return s;
  }

  select(id) {
    this.currentId = id;
    const s = this.sessions.get(id);
    if (s) s.unread = 0;
    this.save();
    this.changed('current');
  }

  sessionInfo(info, status = 'joined') {
    if (!info?.id) return;
    const s = this.session(info.id, info.name);
    s.info = info;
    s.name = info.name || s.name;
    s.status = status;
    s.error = '';
    this.save();
    this.changed('sessions', { sessionId: s.id });
  }

  sessionStatus(id, status, error = '') {
    const s = this.sessions.get(id);
    if (!s) return;
    s.status = status;
    s.error = error;
    this.changed('sessions', { sessionId: id });
  }

  forget(id) {
    this.sessions.delete(id);
    if (this.currentId === id) this.currentId = this.sessions.keys().next().value || '';
    this.save();
    this.changed('sessions');
    this.changed('current');
  }

  /** A line in the session's chat (or a console-wide toast); `id` de-duplicates. */
  notice(text, level = 'info', sessionId = '', id = '', eventId = '') {
    const s = sessionId && this.sessions.get(sessionId);
    if (s) {
      if (eventId && !s.markEvent(eventId)) return;
      const [item, created] = s.upsertItem(`notice:${id || `${Date.now()}:${Math.random()}`}`, eventId, () => ({ kind: 'notice', text, level }));
      if (created) this.changed('item', { sessionId, key: item.key });
      return;
    }
    if (id && this.notices.some((n) => n.key === id)) return;
    const n = { id: `${Date.now()}-${Math.random()}`, key: id, text, level };
    this.notices = [...this.notices.slice(-4), n];
    this.changed('notices');
  }

  dismissNotice(id) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.changed('notices');
  }

  bump(s) {
    if (s.id !== this.currentId) s.unread++;
  }

  // ---- chat -------------------------------------------------------------

  /** A chat message: ReceiveSessionMessage or AgentMessage (AgentMessage DTO). */
  message(m, eventId = m.eventId) {
    if (!m?.sessionId) return;
    const s = this.session(m.sessionId);
    if (!s.markEvent(eventId)) return;
    const [item, created] = s.upsertItem(`msg:${m.id || eventId}`, eventId, () => ({
      kind: 'message',
      id: m.id,
      role: m.role ?? MessageRole.User,
      senderId: m.senderId || '',
      agentId: m.agentId || '',
      content: m.content || '',
      timestamp: m.timestamp,
    }));
    if (!created) return;
    this.bump(s);
    this.changed('item', { sessionId: s.id, key: item.key });
  }

  /** A chunk (or the end) of an agent's answer (AgentResponseDto). */
  agentResponse(dto, eventId = dto?.eventId) {
    const r = dto?.response;
    if (!r || !dto.sessionId) return;
    const s = this.session(dto.sessionId);
    if (!s.markEvent(eventId)) return;
    if (r.id) {
      const seenKey = `${r.id}:${r.isComplete ? 1 : 0}`;
      if (this.seenResponses.has(seenKey)) return;
      this.seenResponses.add(seenKey);
      if (this.seenResponses.size > 20000) this.seenResponses.delete(this.seenResponses.values().next().value);
    }
    const answerKey = `ans:${dto.agentId}:${r.messageId || r.id}`;
    const [item, created] = s.upsertItem(answerKey, eventId, () => ({
      kind: 'answer', agentId: dto.agentId, messageId: r.messageId, content: '', complete: false,
      error: false, timestamp: r.timestamp || dto.timestamp,
    }));
    if (!item.complete) {
      const text = r.content || '';
      if (r.type === ResponseType.Error) {
        item.error = true;
        item.content += text;
      } else if (r.isComplete) {
        // The end carries the whole answer (the farm's does); an empty end
        // just closes what was streamed.
        if (text) item.content = text;
      } else if (r.metadata?.sequence === 0 && item.content) {
        item.content = text; // a new attempt streams the answer again from its start
      } else if (r.type === ResponseType.Text || r.type === undefined) {
        item.content += text;
      } else if (r.type === ResponseType.ToolCall && r.toolCalls?.length) {
        item.content += r.toolCalls.map((t) => `\n\`[tool ${t.toolName}]\`\n`).join('');
      }
      if (r.isComplete) item.complete = true;
    }
    this.activity(dto.agentId, answerKey, !item.complete);
    if (created) this.bump(s);
    this.changed('item', { sessionId: s.id, key: item.key });
  }

  /** Marks an agent as working on key (or done with it). */
  activity(agentId, key, busy) {
    if (!agentId) return;
    let set = this.agentActivity.get(agentId);
    if (!set) this.agentActivity.set(agentId, (set = new Set()));
    const had = set.has(key);
    if (busy) set.add(key);
    else set.delete(key);
    if (had !== busy) this.changed('agents');
  }

  /** An agent's answer failed: close its open answers in the session. */
  answerFailed(sessionId, agentId) {
    const s = this.sessions.get(sessionId);
    for (const item of s ? s.items.values() : []) {
      if (item.kind === 'answer' && item.agentId === agentId && !item.complete) {
        item.complete = true;
        item.error = true;
        this.changed('item', { sessionId, key: item.key });
      }
    }
    const set = this.agentActivity.get(agentId);
    if (set?.size) {
      set.clear();
      this.changed('agents');
    }
  }

  agentStatus(dto) {
    if (!dto?.agentId) return;
    const a = this.agents.get(dto.agentId) || { id: dto.agentId, name: dto.agentId };
    this.agents.set(dto.agentId, { ...a, status: dto.status });
    this.changed('agents');
  }

  setAgents(list, available) {
    this.agentsAvailable = available;
    this.agents = new Map((list || []).map((a) => [a.id, a]));
    this.changed('agents');
  }

  isBusy(agentId) {
    return (this.agentActivity.get(agentId)?.size || 0) > 0 || BusyStatuses.has(this.agents.get(agentId)?.status);
  }

  // ---- orchestration ----------------------------------------------------

  planCreated(sessionId, plan, eventId = plan?.eventId) {
    if (!plan?.id) return;
    const s = this.session(sessionId);
    if (!s.markEvent(eventId)) return;
    const p = s.plan(plan.id);
    p.plan = plan;
    p.totalSteps = plan.steps?.length || 0;
    for (const step of plan.steps || []) {
      const cur = p.steps.get(step.order);
      p.steps.set(step.order, { step, status: cur?.status || 'pending', result: cur?.result || null });
    }
    this.planItem(s, plan.id, eventId);
    this.changed('plans', { sessionId, planId: plan.id });
  }

  /** Keeps the plan's line in the chat (created, progress, outcome) up to date. */
  planItem(s, planId, eventId) {
    const [item] = s.upsertItem(`plan:${planId}`, eventId, () => ({ kind: 'plan', planId }));
    this.changed('item', { sessionId: s.id, key: item.key });
  }

  planState(sessionId, state) {
    const s = this.session(sessionId);
    const p = s.plan(state.plan.id);
    this.planCreated(sessionId, state.plan, '');
    p.status = state.status === 'created' ? 'preview' : state.status;
    p.percent = state.percentComplete || p.percent;
    for (const st of state.steps || []) {
      const cur = p.steps.get(st.order);
      if (cur) {
        cur.status = st.state || cur.status;
        if (st.result) cur.result = st.result;
      }
    }
    if (state.result) p.result = state.result;
    this.changed('plans', { sessionId, planId: p.id });
  }

  progress(sessionId, pr, eventId = pr?.eventId) {
    const s = this.session(sessionId);
    if (!s.markEvent(eventId)) return;
    const p = s.plan(pr.planId);
    if (p.status === 'preview') p.status = 'running';
    p.percent = Math.max(p.percent, Number(pr.percentComplete) || 0);
    p.currentStep = pr.currentStep;
    p.totalSteps = pr.totalSteps || p.totalSteps;
    p.currentAgent = pr.currentAgent || '';
    const step = p.steps.get(pr.currentStep);
    if (step && step.status === 'pending') step.status = 'running';
    this.planItem(s, p.id, eventId);
    this.changed('plans', { sessionId, planId: p.id });
  }

  stepCompleted(sessionId, ev, eventId = ev?.eventId) {
    const s = this.session(sessionId);
    if (!s.markEvent(eventId)) return;
    const p = s.plan(ev.planId);
    if (p.status === 'preview') p.status = 'running';
    const cur = p.steps.get(ev.order) || { step: ev, status: 'pending', result: null };
    cur.result = ev.result || null;
    cur.status = ev.result?.success === false ? 'failed' : 'completed';
    p.steps.set(ev.order, cur);
    this.planItem(s, p.id, eventId);
    this.changed('plans', { sessionId, planId: p.id });
  }

  planCompleted(sessionId, result, eventId = result?.eventId) {
    const s = this.session(sessionId);
    if (!s.markEvent(eventId)) return;
    const p = s.plan(result.planId);
    p.result = result;
    const cancelled = /cancel/i.test(result.finalOutput || '');
    p.status = result.success ? 'completed' : cancelled ? 'cancelled' : 'failed';
    if (result.success) p.percent = 100;
    this.planItem(s, p.id, eventId);
    this.changed('plans', { sessionId, planId: p.id });
  }

  // ---- tools ------------------------------------------------------------

  toolRun(sessionId, run) {
    const s = this.session(sessionId);
    s.toolRuns = [run, ...s.toolRuns].slice(0, 50);
    this.changed('tools', { sessionId });
    return run;
  }

  toolRunUpdate(sessionId, run, fields) {
    Object.assign(run, fields);
    this.changed('tools', { sessionId });
  }

  /**
   * A tool waits for approval. `recordedAt` (from the history) dates it: one
   * past the farm's approval timeout is over and never shown; one already
   * decided (the decision came first) is recorded as decided.
   */
  approvalRequired(req, eventId = req?.eventId, recordedAt = '') {
    if (!req?.id || !req.sessionId) return;
    const s = this.session(req.sessionId);
    if (!s.markEvent(eventId)) return;
    if (s.approvals.has(req.id)) return;
    const now = Date.now();
    const at = recordedAt && Number.isFinite(Date.parse(recordedAt)) ? Math.min(now, Date.parse(recordedAt)) : now;
    const a = { request: req, state: 'pending', note: '', decidedBy: '', at, resolvedAt: 0 };
    s.approvals.set(req.id, a);
    // A run of this console waiting for this approval: their result names it.
    const params = canonicalJSON(req.parameters ?? {});
    const run = s.toolRuns.findLast((r) => r.status !== 'done' && !r.approvalId && r.toolName === req.toolName && r.agentId === req.agentId &&
      canonicalJSON(r.parameters ?? {}) === params);
    if (run) run.approvalId = req.id;
    const decided = this.resolvedApprovals.get(req.id);
    if (decided) {
      Object.assign(a, decided);
    } else if (now - at > APPROVAL_TIMEOUT_MS) {
      a.state = 'expired';
      return;
    }
    if (a.state === 'pending') this.bump(s);
    this.changed('approvals', { sessionId: s.id });
  }

  /**
   * This console's own answer to an approval: 'sending', then 'approved' /
   * 'denied' (decided by this user), 'error' (with the server's reason) or
   * 'dismissed' (a failed one put away; hidden at once).
   */
  approvalDecided(sessionId, id, state, note = '') {
    const s = this.sessions.get(sessionId);
    const a = s?.approvals.get(id);
    if (!a) return;
    if (FinalApprovalStates.has(a.state) && a.decidedBy && state !== 'dismissed') return; // someone's decision arrived first
    a.state = state;
    a.note = note;
    if (FinalApprovalStates.has(state)) {
      a.decidedBy = this.identity?.user || '';
      a.resolvedAt = Date.now();
    }
    this.changed('approvals', { sessionId });
  }

  /**
   * ToolExecutionCompleted for a call that waited for approval: its
   * metadata (or the result itself) names the approval (`approvalId`) and
   * who decided (`decidedBy`: a user, "timeout" or "cancelled"); the error
   * of a call that was not approved starts with "Tool call not approved".
   * Ends the prompt in whichever session holds it, for every member whose
   * console hears of it; remembered for a prompt not seen yet.
   */
  approvalResolved(result, sessionId = '', eventId = '') {
    const id = approvalIdOf(result);
    if (!id) return false;
    const meta = result.metadata && typeof result.metadata === 'object' ? result.metadata : {};
    const s0 = sessionId ? this.sessions.get(sessionId) : null;
    if (s0 && !s0.markEvent(eventId)) return true;
    const by = String(meta.decidedBy ?? result.decidedBy ?? '');
    const explicit = meta.approved ?? result.approved;
    const approved = typeof explicit === 'boolean' ? explicit : !/^Tool call not approved/i.test(result.error || '');
    const state = approved ? 'approved' : by === 'timeout' ? 'timedout' : by === 'cancelled' ? 'cancelled' : 'denied';
    const decision = { state, decidedBy: ['timeout', 'cancelled', 'policy'].includes(by) ? '' : by, note: '', resolvedAt: Date.now() };
    const holders = s0?.approvals.has(id) ? [s0] : [...this.sessions.values()].filter((s) => s.approvals.has(id));
    if (!holders.length) {
      this.resolvedApprovals.set(id, decision);
      if (this.resolvedApprovals.size > RESOLVED_APPROVALS_LIMIT) this.resolvedApprovals.delete(this.resolvedApprovals.keys().next().value);
      return true;
    }
    for (const s of holders) {
      const a = s.approvals.get(id);
      // The first news of a decision wins; a later copy (the other hub, the
      // history) changes nothing, and neither does it revive a dismissed prompt.
      if (a.state === 'expired' || a.state === 'dismissed' || (FinalApprovalStates.has(a.state) && a.decidedBy)) continue;
      const shownSince = FinalApprovalStates.has(a.state) ? a.resolvedAt : decision.resolvedAt;
      Object.assign(a, decision, { resolvedAt: shownSince });
      this.changed('approvals', { sessionId: s.id });
    }
    return true;
  }

  /**
   * A tool run of this console ended without news of its approval (an older
   * farm): its approval prompts here were answered, by someone.
   */
  approvalsAnswered(sessionId, run, approved) {
    const s = this.sessions.get(sessionId);
    if (!s) return;
    // The server echoes parameters from a Go map (keys sorted), so compare
    // in a key-order-independent form.
    const params = canonicalJSON(run.parameters ?? {});
    let changed = false;
    for (const a of s.approvals.values()) {
      const r = a.request;
      if (a.state === 'pending' && r.toolName === run.toolName && r.agentId === run.agentId && canonicalJSON(r.parameters ?? {}) === params) {
        a.state = approved ? 'approved' : 'denied';
        a.resolvedAt = Date.now();
        changed = true;
      }
    }
    if (changed) this.changed('approvals', { sessionId });
  }

  pendingApprovals(sessionId) {
    const s = this.sessions.get(sessionId);
    const now = Date.now();
    return s ? [...s.approvals.values()].filter((a) => approvalShown(a, now)?.open) : [];
  }

  // ---- connections and farm ---------------------------------------------

  connection(hub, fields) {
    Object.assign(this.connections[hub], fields);
    this.changed('connection', { hub });
  }

  /**
   * An answer of GET /api/farm. Every node's message counts come with its
   * heartbeat, so a node's rate is the change of its counts between two of
   * its heartbeats, whichever node answered. (A farm of an older version
   * gives counts only for the answering node: then the rate is measured
   * between two answers of that node.)
   */
  farmView(view) {
    const now = Date.now();
    const served = view.servedBy || {};
    const samples = this.farm.samples || new Map();
    const rate = (id, at, total) => {
      const prev = samples.get(id);
      if (prev && at === prev.at) return; // the same heartbeat again
      if (prev && at > prev.at && total >= prev.total) this.farm.rates.set(id, ((total - prev.total) * 1000) / (at - prev.at));
      samples.set(id, { at, total });
    };
    const nodes = view.nodes || [];
    const counted = new Set();
    for (const n of nodes) {
      const at = Date.parse(n.lastHeartbeat);
      if (typeof n.messagesIn !== 'number' || !Number.isFinite(at)) continue;
      rate(n.id, at, (n.messagesIn || 0) + (n.messagesOut || 0));
      counted.add(n.id);
    }
    if (served.id && !counted.has(served.id)) rate(served.id, now, (served.messagesIn || 0) + (served.messagesOut || 0));
    // Forget nodes that left the farm.
    const live = new Set(nodes.map((n) => n.id));
    for (const id of [...samples.keys()]) if (!live.has(id) && id !== served.id) { samples.delete(id); this.farm.rates.delete(id); }
    const conns = view.connections || {};
    for (const hub of ['orchestrator', 'agent']) {
      const c = this.connections[hub];
      if (c.connectionId && c.connectionId in conns) c.node = conns[c.connectionId] || '';
    }
    this.farm = { ...this.farm, samples, nodes, servedBy: served.id || '', error: '', updated: now };
    this.changed('farm');
    this.changed('connection', { hub: 'orchestrator' });
  }

  farmError(err) {
    this.farm = { ...this.farm, error: err.message || String(err) };
    this.changed('farm');
  }
}

/** The approval a ToolExecutionResult names (in its metadata, or itself), or ''. */
export function approvalIdOf(result) {
  const meta = result?.metadata && typeof result.metadata === 'object' ? result.metadata : {};
  const id = meta.approvalId ?? result?.approvalId;
  return typeof id === 'string' ? id : '';
}

/** Approval states that end a prompt. */
const FinalApprovalStates = new Set(['approved', 'denied', 'timedout', 'cancelled']);

/**
 * How an approval prompt shows at time now: null when it is not shown (never
 * shown, dismissed, or decided more than RESOLVED_APPROVAL_SHOWN_MS ago);
 * otherwise {state, open, until}: open prompts take a decision; a decided
 * one says how it ended until it goes. A prompt nobody answered within the
 * farm's approval timeout shows as timed out (the farm denied it). `until`
 * is when this changes next (the view redraws then).
 */
export function approvalShown(a, now = Date.now()) {
  if (!a || a.state === 'expired' || a.state === 'dismissed') return null;
  if (FinalApprovalStates.has(a.state)) {
    const until = (a.resolvedAt || 0) + RESOLVED_APPROVAL_SHOWN_MS;
    return now < until ? { state: a.state, open: false, until } : null;
  }
  const deadline = (a.at || now) + APPROVAL_TIMEOUT_MS;
  if (now < deadline) return { state: a.state, open: true, until: deadline };
  const until = deadline + RESOLVED_APPROVAL_SHOWN_MS;
  return now < until ? { state: 'timedout', open: false, until } : null;
}

/** JSON with object keys sorted at every level: equal values, equal text. */
export function canonicalJSON(v) {
  if (Array.isArray(v)) return `[${v.map(canonicalJSON).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJSON(v[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

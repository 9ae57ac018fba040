// The console's service: two hub connections (orchestrator and agent) feeding
// the store, the actions the views call, catch-up from the session history
// after a reconnect, and the farm poller.

import { HubClient, HubError } from './signalr.js';
import { AgentTargets, Targets } from './contract.js';
import { catchUpStart } from './eventid.js';
import { approvalIdOf } from './store.js';

const HISTORY_PAGE = 500;
const HISTORY_PAGES = 20;
const FARM_POLL_MS = 3000;

/**
 * Whether a callback without an eventId can be taken from either hub: it is
 * sent to the caller only, is idempotent, or carries an id of its own that
 * the store de-duplicates by.
 */
function selfDeduplicating(target, arg) {
  switch (target) {
    case 'ReceiveStreamingUpdate':
    case 'ReceiveAgentResponse':
      return !!arg?.response?.id;
    case 'ToolApprovalRequired':
      return !!arg?.id;
    case 'Connected':
    case 'ReceiveError':
    case 'SessionCreated':
    case 'SessionJoined':
    case 'AgentStatusUpdate':
      return true;
    default:
      return false;
  }
}

/**
 * A ToolApprovalResolved payload ({id, approved, outcome, decidedBy, ...})
 * in the shape the store takes decisions in (a tool result naming its
 * approval): the outcome says who, when no user decided.
 */
export function resolutionAsResult(r) {
  const by = { timed_out: 'timeout', cancelled: 'cancelled', policy_denied: 'policy' }[r?.outcome] ?? r?.decidedBy ?? '';
  return { approvalId: r?.id, approved: r?.approved === true, decidedBy: by, metadata: {} };
}

/** The readable part of a hub error ("…HubException: X" → "X"). */
export function errorText(err) {
  const msg = String(err?.message ?? err);
  const m = /HubException: (.*)$/s.exec(msg);
  return m ? m[1] : msg;
}

function uuid() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

export class ConsoleService {
  /** @param {import('./store.js').Store} store */
  constructor(store) {
    this.store = store;
    this.hubs = null;
    this.planSessions = new Map(); // planId -> sessionId
    this.planLookups = new Map(); // planId -> Promise<sessionId> (GetPlan in flight)
  }

  /** Signs in: connects both hubs as identity {user, token} and restores the saved sessions. */
  async signIn(identity) {
    const { store } = this;
    store.identity = identity;
    store.load();
    store.changed('identity');
    store.changed('sessions');
    store.changed('current');
    const query = identity.token ? {} : { user: identity.user };
    const accessToken = () => identity.token || undefined;
    this.hubs = {
      orchestrator: new HubClient('/hubs/orchestrator', { query, accessToken, label: 'orchestrator' }),
      agent: new HubClient('/hubs/agent', { query, accessToken, label: 'agent' }),
    };
    for (const [name, hub] of Object.entries(this.hubs)) this.wire(name, hub);
    this.startFarmPoller();
    const results = await Promise.allSettled([this.hubs.orchestrator.start(), this.hubs.agent.start()]);
    const refused = results.find((r) => r.status === 'rejected');
    if (refused) throw refused.reason;
  }

  async signOut() {
    clearInterval(this.farmTimer);
    document.removeEventListener('visibilitychange', this.onVisible);
    await Promise.allSettled(Object.values(this.hubs || {}).map((h) => h.stop()));
    this.hubs = null;
  }

  wire(name, hub) {
    const { store } = this;
    hub.addEventListener('state', (e) => {
      const { state, attempt, error } = e.detail;
      store.connection(name, { state, attempt, error: error ? errorText(error) : '' });
      if (name === 'orchestrator' && state === 'reconnecting' && !this.resumeFrom) {
        // Where each session's catch-up starts: the newest event before the loss.
        this.resumeFrom = new Map([...store.sessions.values()].map((s) => [s.id, s.lastEventId]));
      }
    });
    const onConnected = (e, again) => {
      store.connection(name, { connectionId: e.detail.connectionId, node: '' });
      this.pollFarm();
      if (name === 'orchestrator') this.afterConnect(again);
      else this.loadAgents();
    };
    hub.addEventListener('connected', (e) => onConnected(e, false));
    hub.addEventListener('reconnected', (e) => onConnected(e, true));
    for (const target of Targets) {
      hub.on(target, (arg) => {
        // Both connections of this browser are members of the session groups
        // and may get the same callback. Events recorded in a session's
        // history carry an eventId, and the store applies each once; so are
        // callbacks with ids of their own. Anything else is taken from one
        // hub only.
        if (!arg?.eventId && !selfDeduplicating(target, arg) && AgentTargets.has(target) !== (name === 'agent')) {
          // Except the news that an approval was decided, which ends its
          // prompt whichever connection hears of it (the store takes each
          // decision once).
          if (target === 'ToolExecutionCompleted') store.approvalResolved(arg);
          return;
        }
        this.apply(target, arg, arg?.eventId || '', '');
      });
    }
  }

  /** Applies one callback (live, or from the history of sessionId, recorded at `at`). */
  apply(target, arg, eventId, sessionId, at = '') {
    const { store } = this;
    if (!arg) return;
    switch (target) {
      case 'Connected':
        break;
      case 'SessionCreated':
      case 'SessionJoined':
        store.sessionInfo(arg);
        break;
      case 'ReceiveSessionMessage':
      case 'AgentMessage':
        store.message(sessionId && !arg.sessionId ? { ...arg, sessionId } : arg, eventId);
        break;
      case 'ReceiveStreamingUpdate':
      case 'ReceiveAgentResponse':
        store.agentResponse(sessionId && !arg.sessionId ? { ...arg, sessionId } : arg, eventId);
        break;
      case 'AgentStatusUpdate':
        store.agentStatus(arg);
        break;
      case 'ReceiveError':
        this.receiveError(arg);
        break;
      case 'ToolApprovalRequired':
        store.approvalRequired(sessionId && !arg.sessionId ? { ...arg, sessionId } : arg, eventId, at);
        break;
      case 'ToolExecutionStarted':
      case 'ToolExecutionUpdate':
        this.toolEvent(target, arg, sessionId);
        break;
      case 'ToolExecutionCompleted':
        store.approvalResolved(arg, sessionId, eventId);
        this.toolEvent(target, arg, sessionId);
        break;
      case 'ToolApprovalResolved':
        // The farm's news to every member that an approval is over.
        store.approvalResolved(resolutionAsResult(arg), arg.sessionId || sessionId, eventId);
        break;
      case 'OrchestrationPlanCreated':
      case 'OrchestrationPlanUpdated':
        this.withPlanSession(arg.id, sessionId, (sid) => store.planCreated(sid, arg, eventId));
        break;
      case 'OrchestrationProgress':
        this.withPlanSession(arg.planId, sessionId, (sid) => store.progress(sid, arg, eventId));
        break;
      case 'StepCompleted':
        this.withPlanSession(arg.planId, sessionId, (sid) => store.stepCompleted(sid, arg, eventId));
        break;
      case 'OrchestrationCompleted':
        this.withPlanSession(arg.planId, sessionId, (sid) => store.planCompleted(sid, arg, eventId));
        break;
      default:
        break;
    }
  }

  /**
   * Plan callbacks do not name their session: it is known for plans made
   * here and for history events; otherwise GetPlan tells. Callbacks of a plan
   * whose session is being looked up wait for the answer, in arrival order.
   */
  withPlanSession(planId, sessionId, fn) {
    if (!planId) return;
    const pending = this.planLookups.get(planId);
    const known = sessionId || this.planSessions.get(planId);
    if (known && !pending) {
      this.planSessions.set(planId, known);
      fn(known);
      return;
    }
    let lookup = pending;
    if (!lookup) {
      lookup = this.hubs.orchestrator.invoke('GetPlan', planId).then((st) => {
        if (st?.sessionId) {
          this.planSessions.set(planId, st.sessionId);
          this.store.planState(st.sessionId, st);
        }
        return st?.sessionId;
      }).finally(() => this.planLookups.delete(planId));
      this.planLookups.set(planId, lookup);
    }
    lookup.then((sid) => sid && fn(sid)).catch(() => {});
  }

  receiveError(e) {
    const { store } = this;
    const sid = e.sessionId || '';
    if (e.agentId && sid) store.answerFailed(sid, e.agentId);
    if (sid && store.sessions.has(sid) && (e.code === 'SESSION_NOT_FOUND' || e.code === 'FORBIDDEN')) {
      const s = store.sessions.get(sid);
      if (s.status === 'joining') {
        store.sessionStatus(sid, e.code === 'FORBIDDEN' ? 'forbidden' : 'missing', e.error);
        return;
      }
    }
    // The same error may reach both connections: one line per error.
    const id = e.eventId || (e.timestamp ? `${e.timestamp}:${e.code || ''}:${e.error}` : '');
    store.notice(e.error || 'error', 'error', store.sessions.has(sid) ? sid : '', id, e.eventId || '');
  }

  /**
   * A tool run of this console moves on. Results do not name their session
   * or run: a result that names an approval belongs to the run that waited
   * for it (the store linked them when the prompt came), and a result
   * without one to the oldest run still going that waited for none.
   */
  toolEvent(target, arg, sessionId) {
    const { store } = this;
    const sid = arg.sessionId || sessionId;
    const sessions = sid ? [store.sessions.get(sid)] : [store.current, ...store.sessions.values()];
    const approvalId = approvalIdOf(arg);
    for (const s of sessions) {
      if (!s) continue;
      const going = (r) => r.status !== 'done' && (!arg.toolName || r.toolName === arg.toolName) && (!arg.agentId || r.agentId === arg.agentId);
      const run = target !== 'ToolExecutionCompleted'
        ? s.toolRuns.find(going)
        : s.toolRuns.findLast((r) => going(r) && (approvalId ? r.approvalId === approvalId : !r.approvalId));
      if (!run) continue;
      if (target === 'ToolExecutionCompleted') store.toolRunUpdate(s.id, run, { status: 'done', result: arg });
      else store.toolRunUpdate(s.id, run, { status: arg.status || 'running', message: arg.message || '' });
      return;
    }
  }

  /**
   * After (re)connecting: join the saved sessions and catch up with their
   * history, from the newest event each had before the loss.
   */
  async afterConnect(again) {
    const { store } = this;
    const resume = this.resumeFrom || new Map();
    this.resumeFrom = null;
    await Promise.allSettled(
      [...store.sessions.values()].filter((s) => s.status !== 'left').map(async (s) => {
        if (!again || s.status !== 'joined') {
          try {
            await this.hubs.orchestrator.invoke('JoinSession', s.id);
          } catch (err) {
            store.sessionStatus(s.id, /FORBIDDEN/.test(String(err)) ? 'forbidden' : 'missing', errorText(err));
            return;
          }
        }
        await this.catchUp(s.id, again ? resume.get(s.id) ?? s.lastEventId : s.lastEventId);
      }),
    );
    store.changed('caughtUp');
  }

  /**
   * Applies the session's events that were not applied yet, from
   * CATCH_UP_OVERLAP_MS before lastEventId (the whole history when it is
   * empty): an event missed in a loss can be older than the newest one seen
   * (see catchUpStart). The store skips the events it has already applied,
   * by eventId, and places the others in event id order.
   */
  async catchUp(sessionId, lastEventId) {
    const s = this.store.sessions.get(sessionId);
    if (!s || s.status === 'missing' || s.status === 'forbidden') return;
    let after = catchUpStart(lastEventId);
    for (let page = 0; page < HISTORY_PAGES; page++) {
      let events;
      try {
        events = await this.hubs.orchestrator.invoke('GetSessionHistory', sessionId, after, HISTORY_PAGE);
      } catch (err) {
        this.store.notice(`Could not load the history: ${errorText(err)}`, 'error', sessionId);
        return;
      }
      for (const ev of events || []) {
        const payload = ev.payload && typeof ev.payload === 'object' ? ev.payload : {};
        this.apply(ev.target, payload, ev.eventId, sessionId, ev.timestamp);
        s.advance(ev.eventId); // also past events the console does not show
      }
      if (!events || events.length < HISTORY_PAGE) break;
      after = events[events.length - 1].eventId;
    }
    this.store.changed('history', { sessionId });
  }

  async loadAgents() {
    try {
      const list = await this.hubs.agent.invoke('GetAgents');
      this.store.setAgents(list, true);
      // Status updates (busy, ready, error) of every agent, farm-wide.
      for (const a of list || []) this.hubs.agent.invoke('SubscribeToAgent', a.id).catch(() => {});
    } catch (err) {
      if (err instanceof HubError) this.store.setAgents([], false); // this farm has no agent methods
    }
  }

  // ---- actions ------------------------------------------------------------

  get orch() {
    return this.hubs.orchestrator;
  }

  async createSession({ name, type, agentIds }) {
    const res = await this.orch.invoke('CreateSession', { name, type, agentIds, workingDirectory: '' });
    if (!res?.success) throw new Error(res?.error || 'the session was not created');
    this.store.sessionInfo(res.session || { id: res.sessionId, name });
    this.store.select(res.sessionId);
    return res.sessionId;
  }

  async joinSession(id) {
    const s = this.store.session(id);
    s.status = 'joining';
    await this.orch.invoke('JoinSession', id);
    if (s.status === 'missing' || s.status === 'forbidden') {
      const err = s.error || 'the session was not found';
      this.store.forget(id);
      throw new Error(err);
    }
    this.store.select(id);
    await this.catchUp(id, s.lastEventId);
  }

  async leaveSession(id) {
    try {
      await this.orch.invoke('LeaveSession', id);
    } finally {
      this.store.forget(id);
    }
  }

  invite(sessionId, userId) {
    return this.orch.invoke('InviteToSession', sessionId, userId);
  }

  sendMessage(sessionId, content) {
    return this.orch.invoke('SendSessionMessage', sessionId, content);
  }

  async sendToAgent(sessionId, agentId, content) {
    const commandId = uuid();
    this.store.activity(agentId, `cmd:${commandId}`, true);
    try {
      await this.hubs.agent.invoke('SendAgentMessage', { agentId, sessionId, content, attachments: [], commandId });
    } finally {
      // The answer's own chunks keep the agent marked busy from here on.
      setTimeout(() => this.store.activity(agentId, `cmd:${commandId}`, false), 1500);
    }
  }

  async createPlan(sessionId, { goal, strategy, agentIds, maxSteps = 10 }) {
    const plan = await this.orch.invoke('CreateOrchestrationPlan', {
      sessionId, goal, strategy, availableAgentIds: agentIds, maxSteps,
    });
    this.planSessions.set(plan.id, sessionId);
    this.store.planCreated(sessionId, plan, plan.eventId || '');
    return plan;
  }

  async executePlan(sessionId, planId) {
    const p = this.store.sessions.get(sessionId)?.plan(planId);
    if (p && p.status === 'preview') p.status = 'starting';
    this.store.changed('plans', { sessionId, planId });
    try {
      await this.orch.invoke('ExecutePlan', planId);
    } catch (err) {
      if (p) p.status = 'preview';
      this.store.changed('plans', { sessionId, planId });
      throw err;
    }
  }

  cancelPlan(planId) {
    return this.orch.invoke('CancelExecution', planId);
  }

  async runTool(sessionId, { agentId, toolName, parameters }) {
    const run = this.store.toolRun(sessionId, { id: uuid(), agentId, toolName, parameters, status: 'sent', result: null });
    try {
      const res = await this.hubs.agent.invoke('ExecuteTool', { agentId, sessionId, toolName, parameters });
      this.store.toolRunUpdate(sessionId, run, { status: 'done', result: run.result || res });
      // Normally ToolExecutionCompleted, just before, named the approval and
      // who decided; this covers a farm whose result does not.
      this.store.approvalsAnswered(sessionId, run, !!res?.success || !/not approved/i.test(res?.error || ''));
    } catch (err) {
      this.store.toolRunUpdate(sessionId, run, { status: 'done', result: { success: false, error: errorText(err) } });
    }
  }

  async decide(sessionId, approvalId, approved, reason = '') {
    this.store.approvalDecided(sessionId, approvalId, 'sending');
    try {
      await this.hubs.agent.invoke('ApproveTool', approvalId, approved, reason);
      this.store.approvalDecided(sessionId, approvalId, approved ? 'approved' : 'denied');
    } catch (err) {
      this.store.approvalDecided(sessionId, approvalId, 'error', errorText(err));
    }
  }

  /** Development farms only: the server closes this browser's connections (they come back). */
  dropConnections() {
    for (const hub of Object.values(this.hubs || {})) hub.send('DebugClose');
  }

  // ---- farm ---------------------------------------------------------------

  startFarmPoller() {
    clearInterval(this.farmTimer);
    this.farmTimer = setInterval(() => {
      if (document.visibilityState !== 'hidden') this.pollFarm();
    }, FARM_POLL_MS);
    this.onVisible = () => document.visibilityState === 'visible' && this.pollFarm();
    document.addEventListener('visibilitychange', this.onVisible);
    this.pollFarm();
  }

  async pollFarm() {
    const u = new URL('/api/farm', location.href);
    for (const c of Object.values(this.store.connections)) if (c.connectionId) u.searchParams.append('connection', c.connectionId);
    try {
      const token = this.store.identity?.token;
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch(u, { cache: 'no-store', headers, signal: AbortSignal.timeout(4000) });
      if (!res.ok) throw new Error(`farm view: HTTP ${res.status}`);
      this.store.farmView(await res.json());
    } catch (err) {
      this.store.farmError(err);
    }
  }
}

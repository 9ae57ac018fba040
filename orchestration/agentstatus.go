package orchestration

import (
	"context"
	"sync"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Agent status.
//
// An agent's status follows the calls it serves — plan steps, answers to
// SendAgentMessage and StreamAgentMessage alike — farm-wide: it is Busy
// from the moment a first call starts on any node until the last call
// running anywhere ends; then it is Ready, or Error when the call that
// ended last with an outcome failed for good. A call without an outcome (an
// attempt that will be retried, a job given back at shutdown or taken over
// by another node, a cancelled step) leaves the previous outcome standing.
// AgentStatusUpdate goes to the agent's group on each of these changes and
// only then: concurrent calls of one agent give one Busy and one Ready,
// which is what GetAgents reports meanwhile.
//
// Counting is per node in memory and farm-wide in Redis: each node counts
// its own calls of each agent, and the agent's running set (a sorted set)
// holds one member per node that serves the agent, scored by when its
// calls must be over (so a node that dies leaves a member that expires by
// itself; the agent shows Busy until then). A node adds its member when
// its count goes from 0 to 1, pushes the score further when a new call
// would outlast it (by VisibilityTimeout more than needed, so a steady
// stream of calls refreshes it about once per VisibilityTimeout), and
// removes it Config.AgentIdleAfter after its count fell back to 0 with no
// new call meanwhile. So a busy agent costs no Redis round trip per call,
// and calls that follow each other closely (the steps of a plan, a
// conversation) keep the agent Busy without a Ready and Busy in between.
// The status changes when the set gains its first member or loses its
// last one.
//
// The removal is made by the node's idle sweeper (started by Start); on a
// node that does not run it (not started, or shut down) a node's last call
// removes the member itself when it ends. Shutdown and the sweeper's exit
// remove the members still waiting.
//
// Updates of one agent by one node are made in order under a lock held
// across the Redis call and the status send, so one node never sends Ready
// before its own Busy. Two nodes changing the status at the same moment
// (one ends the last call as another starts the next) may have their
// updates arrive in either order; GetAgents and SubscribeToAgent read the
// current status.

// Outcomes of an agent call, as kept in the agent's last-outcome key.
const (
	callNone  = ""      // no outcome: retried, released, taken over, cancelled
	callReady = "ready" // answered, or step succeeded
	callError = "error" // failed for good (error, timeout, attempts exhausted)
)

// agentLoad counts this node's calls of each agent.
type agentLoad struct {
	mu     sync.Mutex
	agents map[string]*agentCalls
	// idle holds the agents whose count fell to 0 and whose member still
	// waits to be removed, for the sweeper.
	idle map[string]*agentCalls
	// sweeping is set while the idle sweeper runs: ends leave the
	// removal to it.
	sweeping bool
	wake     chan struct{} // (capacity 1) an agent became idle
}

// agentCalls is this node's count of one agent's calls.
type agentCalls struct {
	// mu is held across the Redis update and the status send of a
	// transition, so this node's updates of the agent reach Redis and the
	// agent's group in the order they were made.
	mu        sync.Mutex
	info      contract.AgentInfo
	n         int       // calls in flight on this node
	member    bool      // this node's member is in the running set (as far as it knows)
	until     time.Time // its score
	last      string    // outcome of the call that ended last here with one, not yet written
	idleSince time.Time // when n fell to 0 with the member left in place (zero: not idle)
}

// beginCall counts a call of agentID on this node that will be over within
// span, marking the agent Busy when it is the farm's first. It returns nil
// (whose end does nothing) for an agent the catalogue does not know.
func (e *Engine) beginCall(agentID string, span time.Duration) *agentCall {
	c, ok := e.callsOf(agentID)
	if !ok {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.idleSince = time.Time{} // a member left in place by the last call serves again
	now := e.cfg.Now()
	if c.member && !now.Add(span).After(c.until) {
		return &agentCall{e: e, c: c}
	}
	first := !c.member
	c.until = now.Add(span + e.cfg.VisibilityTimeout)
	ctx, cancel := e.op()
	defer cancel()
	ttl := span + e.cfg.VisibilityTimeout + time.Minute
	running, err := e.msc.agentBegin.Run(ctx, e.rdb, []string{e.keys.agentRunning(agentID)},
		now.UnixMilli(), e.cfg.NodeID, c.until.UnixMilli(), ttl.Milliseconds()).Int()
	if err != nil {
		e.log.Warn("agent status: begin", "agent", agentID, "err", err)
		return &agentCall{e: e, c: c}
	}
	c.member = true
	if first && running == 1 {
		e.sendStatus(ctx, c.info, contract.AgentStatusBusy)
	}
	return &agentCall{e: e, c: c}
}

// callsOf returns this node's count of an agent the catalogue knows.
func (e *Engine) callsOf(agentID string) (*agentCalls, bool) {
	_, info, ok := e.agents.Lookup(agentID)
	if !ok {
		return nil, false
	}
	if info.ID == "" {
		info.ID = agentID
	}
	l := &e.load
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.agents == nil {
		l.agents = map[string]*agentCalls{}
	}
	c := l.agents[agentID]
	if c == nil {
		c = &agentCalls{info: info}
		l.agents[agentID] = c
	}
	return c, true
}

// agentCall is one call of an agent in flight on this node; end it once
// with its outcome (later ends are ignored, so a deferred end(callNone)
// covers every path that ends none explicitly).
type agentCall struct {
	e    *Engine
	c    *agentCalls
	once sync.Once
}

// end ends the call with its outcome (callNone, callReady, callError).
func (a *agentCall) end(outcome string) {
	if a == nil {
		return
	}
	a.once.Do(func() { a.e.endCall(a.c, outcome, true) })
}

// noteOutcome records the outcome of a call this node did not count (a
// step or message abandoned after its workers kept dying) as if such a
// call had just ended.
func (e *Engine) noteOutcome(agentID, outcome string) {
	c, ok := e.callsOf(agentID)
	if !ok || outcome == callNone {
		return
	}
	e.endCall(c, outcome, false)
}

// endCall takes a call (counted: it was begun here) off this node's count;
// when the node has none left its member leaves the running set, after
// AgentIdleAfter when the sweeper runs, at once otherwise.
func (e *Engine) endCall(c *agentCalls, outcome string, counted bool) {
	if e.crashed.Load() { // a dead process updates nothing
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if counted {
		c.n--
	}
	if outcome != callNone {
		c.last = outcome
	}
	if c.n > 0 { // the node's last call to end will report it
		return
	}
	l := &e.load
	l.mu.Lock()
	if l.sweeping {
		c.idleSince = time.Now() // runtime time: a frozen Config.Now must not keep members forever
		if l.idle == nil {
			l.idle = map[string]*agentCalls{}
		}
		l.idle[c.info.ID] = c
		l.mu.Unlock()
		select {
		case l.wake <- struct{}{}:
		default:
		}
		return
	}
	l.mu.Unlock()
	e.leave(c)
}

// leave removes this node's member of an agent's running set (c.mu held)
// and, when it was the last, sends the agent's status: Ready, or Error
// when the last outcome was a failure.
func (e *Engine) leave(c *agentCalls) {
	c.idleSince = time.Time{}
	ctx, cancel := e.op()
	defer cancel()
	res, err := e.msc.agentEnd.Run(ctx, e.rdb, []string{e.keys.agentRunning(c.info.ID), e.keys.agentLast(c.info.ID)},
		e.nowMs(), e.cfg.NodeID, c.last, e.cfg.ConversationTTL.Milliseconds()).Slice()
	if err != nil || len(res) != 2 {
		e.log.Warn("agent status: end", "agent", c.info.ID, "err", err)
		return
	}
	c.member, c.last = false, callNone
	if running, _ := res[0].(int64); running > 0 {
		return
	}
	status := contract.AgentStatusReady
	if last, _ := res[1].(string); last == callError {
		status = contract.AgentStatusError
	}
	e.sendStatus(ctx, c.info, status)
}

// startIdleSweeper starts the goroutine that removes this node's members
// of agents it stopped serving AgentIdleAfter ago; e.stopSweeper stops it
// and waits for it (Shutdown, crash).
func (e *Engine) startIdleSweeper() {
	l := &e.load
	l.mu.Lock()
	l.sweeping = true
	l.wake = make(chan struct{}, 1)
	l.mu.Unlock()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	e.stopSweeper = func() { stop(); <-done }
	go func() {
		defer close(done)
		e.sweepIdle(ctx)
	}()
}

// sweepIdle removes idle members as they come due until ctx is done; then
// it stops deferring removals and makes those still waiting (unless the
// engine crashed).
func (e *Engine) sweepIdle(ctx context.Context) {
	l := &e.load
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		next := e.sweep(false)
		if next > 0 {
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			l.mu.Lock()
			l.sweeping = false
			l.mu.Unlock()
			e.sweep(true)
			return
		case <-l.wake:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// sweep removes the idle members that are due (all of them with all) and
// returns when the next one is (0: none waits).
func (e *Engine) sweep(all bool) time.Duration {
	l := &e.load
	l.mu.Lock()
	idle := make([]*agentCalls, 0, len(l.idle))
	for id, c := range l.idle {
		idle = append(idle, c)
		delete(l.idle, id)
	}
	l.mu.Unlock()
	var next time.Duration
	for _, c := range idle {
		c.mu.Lock()
		switch wait := time.Until(c.idleSince.Add(e.cfg.AgentIdleAfter)); {
		case c.n > 0 || c.idleSince.IsZero(): // serving again, or already removed
		case e.crashed.Load(): // a dead process updates nothing
		case wait <= 0 || all:
			e.leave(c)
		default:
			if next == 0 || wait < next {
				next = wait
			}
			l.mu.Lock()
			l.idle[c.info.ID] = c
			l.mu.Unlock()
		}
		c.mu.Unlock()
	}
	return next
}

// sendStatus sends AgentStatusUpdate to the agent's subscribers (nowhere
// without a Router).
func (e *Engine) sendStatus(ctx context.Context, info contract.AgentInfo, status contract.AgentStatus) {
	if e.router == nil {
		return
	}
	dto := contract.AgentStatusDto{AgentID: info.ID, Status: status, Capabilities: info.Capabilities,
		Timestamp: contract.DateTime(e.cfg.Now().UTC())}
	if err := e.router.SendGroup(ctx, AgentGroup(info.ID), "", contract.TargetAgentStatusUpdate, dto); err != nil {
		e.log.Debug("agent status update not delivered", "agent", info.ID, "err", err)
	}
}

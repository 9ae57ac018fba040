package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// messageOutcome is how an answer ended; it is stored with the job record
// so that a redelivery can send the same final callback again. The zero
// value means "no outcome" (the attempt was retried, released or lost).
type messageOutcome struct {
	OK        bool                `json:"ok"`
	Cancelled bool                `json:"cancelled,omitempty"`
	Content   string              `json:"content,omitempty"`
	Usage     contract.TokenUsage `json:"usage"`
	Code      string              `json:"code,omitempty"`
	Error     string              `json:"error,omitempty"`
	Attempt   int                 `json:"attempt"`
	Chunks    int                 `json:"chunks"`
	// ResponseID is the id of the final AgentResponse, stable across a
	// redelivery.
	ResponseID string `json:"responseId"`
	AtMs       int64  `json:"at"`
}

func (o messageOutcome) none() bool { return !o.OK && o.Code == "" }

// turn is one attempt at answering one message: it streams the agent's
// chunks to the answer's audience and delivers the outcome. The audience
// is the session group (one publish per callback) plus the watchers —
// connections outside the session group that also get the answer (agent
// subscribers allowed to see the session, and the caller when it is not a
// member) — resolved once when the attempt begins, so that every
// callback of the attempt reaches a given connection by the same path and
// in order. A connection that joins the agent's group mid-answer gets the
// next answer, not the rest of this one.
type turn struct {
	e       *Engine
	job     messageJob
	attempt int
	info    contract.AgentInfo
	conv    []contract.AgentMessage
	// exclude is left out of the chunk callbacks (a streaming caller,
	// which gets the chunks as stream items).
	exclude string
	// items, when set, receives every chunk and (from the caller) the
	// final answer: StreamAgentMessage's stream.
	items func(contract.AgentResponse)

	watchers []string
	call     *agentCall // the agent call counted for its status (nil before begin)

	mu      sync.Mutex
	closed  bool
	acc     strings.Builder
	held    string // a chunk repeating the whole text so far, held back
	holding bool
	seq     int  // chunks sent
	sendErr bool // a chunk send failed (logged once)
}

func (e *Engine) newTurn(j messageJob, attempt int, info contract.AgentInfo, conv []contract.AgentMessage) *turn {
	if info.ID == "" {
		info.ID = j.AgentID
	}
	return &turn{e: e, job: j, attempt: attempt, info: info, conv: conv}
}

// request is the agent call of this attempt.
func (t *turn) request() AgentRequest {
	return AgentRequest{AgentID: t.job.AgentID, SessionID: t.job.SessionID, Attempt: t.attempt,
		Task: t.job.Content, MessageID: t.job.ID, Messages: t.conv, WorkingDirectory: t.job.WorkDir}
}

// begin counts the call for the agent's status (AgentStatusUpdate Busy to
// its group when no call of it was running in the farm) and resolves the
// watchers.
func (t *turn) begin() {
	e := t.e
	t.call = e.beginCall(t.job.AgentID, e.cfg.AgentTimeout+e.cfg.VisibilityTimeout)
	ctx, cancel := e.op()
	defer cancel()
	t.resolveWatchers(ctx)
}

func (t *turn) resolveWatchers(ctx context.Context) {
	w, err := t.e.router.Watchers(ctx, t.job.SessionID, t.job.AgentID, t.job.CallerConn)
	if err != nil {
		// Redis is failing: the session group still gets the answer, and
		// the final answer is in the history.
		t.e.log.Warn("agent message: resolve watchers", "message", t.job.ID, "err", err)
	}
	t.watchers = w
}

// chunk is the agent's emit: it streams one chunk, holding back one that
// repeats the whole text so far (DESIGN decision 3, CONTRACT M2) until
// something follows it — only a repeat at the very end is dropped.
func (t *turn) chunk(s string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || s == "" {
		return
	}
	if t.holding {
		t.holding = false
		t.acc.WriteString(t.held)
		t.send(t.held)
	}
	if t.acc.Len() > 0 && s == t.acc.String() {
		t.held, t.holding = s, true
		return
	}
	t.acc.WriteString(s)
	t.send(s)
}

// close ends the chunk stream: later emits are ignored, a held repeat is
// dropped.
func (t *turn) close() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
}

// text is the answer streamed so far.
func (t *turn) text() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.acc.String()
}

func (t *turn) chunks() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seq
}

// metadata is a response's metadata: the attempt, and the request's
// CommandId (CONTRACT M5: clients correlate by it).
func (t *turn) metadata() contract.Map {
	m := contract.Map{"attempt": t.attempt}
	if t.job.CommandID != nil {
		m["CommandId"] = *t.job.CommandID
	}
	return m
}

// send delivers one chunk (t.mu held): ReceiveStreamingUpdate to the
// session group and the watchers, and a stream item.
func (t *turn) send(text string) {
	e := t.e
	r := contract.NewAgentResponse(t.job.ID, e.cfg.Now().UTC())
	r.Content, r.Type, r.Metadata = text, contract.ResponseTypeText, t.metadata()
	r.Metadata["sequence"] = t.seq
	t.seq++
	dto := contract.AgentResponseDto{AgentID: t.job.AgentID, SessionID: t.job.SessionID, Response: r, Timestamp: r.Timestamp}
	raw, err := json.Marshal(dto)
	if err != nil {
		e.log.Error("encode chunk", "message", t.job.ID, "err", err)
		return
	}
	ctx, cancel := e.op()
	defer cancel()
	// Chunks are notifications, sent at most once: a lost one is covered
	// by the final answer, which carries the whole text and is recorded.
	err = e.router.SendGroup(ctx, SessionGroup(t.job.SessionID), t.exclude, contract.TargetReceiveStreamingUpdate, json.RawMessage(raw))
	for _, w := range t.watchers {
		if w != t.exclude {
			if werr := e.router.SendConnection(ctx, w, contract.TargetReceiveStreamingUpdate, json.RawMessage(raw)); werr != nil && err == nil {
				err = werr
			}
		}
	}
	if err != nil && !t.sendErr {
		t.sendErr = true
		e.log.Warn("agent message: chunk not delivered everywhere", "message", t.job.ID, "err", err)
	}
	if t.items != nil {
		t.items(r)
	}
}

// success is the outcome of an answer: the streamed text (the agent's
// Output when it streamed nothing) and its usage, if it reported one.
func (t *turn) success(res AgentResult) messageOutcome {
	content := t.text()
	if content == "" {
		content = res.Output
	}
	o := messageOutcome{OK: true, Content: content, Attempt: t.attempt, Chunks: t.chunks(),
		ResponseID: uuid.NewString(), AtMs: t.e.nowMs()}
	if u, ok := res.OutputData["usage"].(contract.TokenUsage); ok {
		o.Usage = u
	}
	return o
}

// failure is the outcome of a failed answer.
func (t *turn) failure(code, msg string) messageOutcome {
	return messageOutcome{Code: code, Error: msg, Attempt: t.attempt, Chunks: t.chunks(),
		ResponseID: uuid.NewString(), AtMs: t.e.nowMs()}
}

// finalResponse is the final AgentResponse of a successful outcome.
func (t *turn) finalResponse(o messageOutcome) contract.AgentResponse {
	r := contract.NewAgentResponse(t.job.ID, time.UnixMilli(o.AtMs).UTC())
	r.ID = o.ResponseID
	r.Content, r.Type, r.IsComplete, r.Usage = o.Content, contract.ResponseTypeText, true, o.Usage
	r.Metadata = t.metadata()
	r.Metadata["attempt"] = o.Attempt
	r.Metadata["chunks"] = o.Chunks
	if o.Cancelled {
		r.Metadata["cancelled"] = true
	}
	return r
}

// answerMessage is the assistant's answer as a conversation entry.
func (t *turn) answerMessage(o messageOutcome) contract.AgentMessage {
	return contract.AgentMessage{ID: o.ResponseID, Content: o.Content, Role: contract.MessageRoleAssistant,
		AgentID: t.job.AgentID, SessionID: t.job.SessionID, Timestamp: contract.DateTime(time.UnixMilli(o.AtMs).UTC()),
		Metadata: contract.Map{}, ParentMessageID: t.job.ID}
}

// deliver sends an outcome's callbacks: the final ReceiveAgentResponse
// (success) or ReceiveError (failure), recorded in the session history and
// sent to the session group and the caller once (Sessions.Emit), then to
// the other watchers.
func (t *turn) deliver(ctx context.Context, o messageOutcome) {
	e := t.e
	var target string
	var payload any
	if o.OK {
		r := t.finalResponse(o)
		target = contract.TargetReceiveAgentResponse
		payload = contract.AgentResponseDto{AgentID: t.job.AgentID, SessionID: t.job.SessionID, Response: r, Timestamp: r.Timestamp}
	} else {
		target = contract.TargetReceiveError
		payload = contract.ErrorResponse{Error: o.Error, Code: o.Code, AgentID: contract.Ptr(t.job.AgentID),
			SessionID: contract.Ptr(t.job.SessionID), Timestamp: contract.DateTime(time.UnixMilli(o.AtMs).UTC())}
	}
	// One Emit, no retry (a retry after a failed send would record the
	// answer twice); members that missed it find it in the history.
	if err := e.sessions.Emit(ctx, t.job.SessionID, t.job.caller(), target, payload); err != nil {
		e.log.Warn("agent message: deliver outcome", "message", t.job.ID, "target", target, "err", err)
	}
	raw, err := json.Marshal(payload)
	if err != nil {
		e.log.Error("encode outcome", "message", t.job.ID, "err", err)
		return
	}
	for _, w := range t.watchers {
		if w == t.job.CallerConn { // Emit reached it
			continue
		}
		if err := e.router.SendConnection(ctx, w, target, json.RawMessage(raw)); err != nil {
			e.log.Debug("agent message: outcome to watcher", "message", t.job.ID, "conn", w, "err", err)
		}
	}
}

// end ends the attempt's call for the agent's status (see agentstatus.go):
// a success counts as Ready, a failure as Error, an attempt without an
// outcome (retried, released, lost) as neither. Only the first end of a
// turn counts. A turn that was not begun (an abandoned message's
// failure) records its outcome all the same.
func (t *turn) end(o messageOutcome) {
	outcome := callNone
	switch {
	case o.OK:
		outcome = callReady
	case !o.none():
		outcome = callError
	}
	if t.call == nil {
		t.e.noteOutcome(t.job.AgentID, outcome)
		return
	}
	t.call.end(outcome)
}

// Agents lists the agent catalogue with each agent's live status: Busy
// while it answers a message anywhere in the farm, Error after its last
// answer failed (until one succeeds), else the catalogue's status (Ready
// when the catalogue leaves it unset). When Redis cannot answer, the
// catalogue's statuses are returned.
func (e *Engine) Agents(ctx context.Context) []contract.AgentInfo {
	list := e.agents.List()
	if len(list) == 0 {
		return list
	}
	statuses, err := e.liveStatuses(ctx, list)
	if err != nil {
		e.log.Warn("agent statuses unavailable", "err", err)
		return list
	}
	for i := range list {
		list[i].Status = statuses[i]
	}
	return list
}

// AgentStatus returns the live status of an agent (see Agents); ok is
// false for an agent the catalogue does not know.
func (e *Engine) AgentStatus(ctx context.Context, agentID string) (dto contract.AgentStatusDto, ok bool, err error) {
	_, info, ok := e.agents.Lookup(agentID)
	if !ok {
		return contract.AgentStatusDto{}, false, nil
	}
	if info.ID == "" {
		info.ID = agentID
	}
	dto = contract.AgentStatusDto{AgentID: info.ID, Status: info.Status, Capabilities: info.Capabilities,
		Timestamp: contract.DateTime(e.cfg.Now().UTC())}
	st, err := e.liveStatuses(ctx, []contract.AgentInfo{info})
	if err != nil {
		return dto, true, internal("agent status", err)
	}
	dto.Status = st[0]
	return dto, true, nil
}

// liveStatuses reads the running sets and last outcomes of agents in one
// round trip.
func (e *Engine) liveStatuses(ctx context.Context, infos []contract.AgentInfo) ([]contract.AgentStatus, error) {
	now := itoa64(e.nowMs())
	type reads struct {
		running interface{ Val() int64 }
		last    interface{ Val() string }
	}
	rs := make([]reads, len(infos))
	pipe := e.rdb.Pipeline()
	for i, a := range infos {
		rs[i].running = pipe.ZCount(ctx, e.keys.agentRunning(a.ID), "("+now, "+inf")
		rs[i].last = pipe.Get(ctx, e.keys.agentLast(a.ID))
	}
	if _, err := pipe.Exec(ctx); err != nil && !isNil(err) {
		return nil, err
	}
	out := make([]contract.AgentStatus, len(infos))
	for i, a := range infos {
		switch {
		case rs[i].running.Val() > 0:
			out[i] = contract.AgentStatusBusy
		case rs[i].last.Val() == "error":
			out[i] = contract.AgentStatusError
		case a.Status == contract.AgentStatusUninitialized:
			out[i] = contract.AgentStatusReady
		default:
			out[i] = a.Status
		}
	}
	return out, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// isNil reports a missing key (redis.Nil), which is no failure here.
func isNil(err error) bool { return errors.Is(err, redis.Nil) }

// Agent returns the catalogue's description of an agent.
func (e *Engine) Agent(agentID string) (contract.AgentInfo, bool) {
	_, info, ok := e.agents.Lookup(agentID)
	return info, ok
}

package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// maxMessageContent bounds the text of one agent message.
const maxMessageContent = 64 << 10

// messageJob is what an agent message job carries: the request as
// accepted (the record's "req" field). The conversation snapshot is kept
// beside it (field "conv") and dropped once the job finished.
type messageJob struct {
	ID          string                             `json:"id"` // the user message's id: the answer's messageId
	AgentID     string                             `json:"agentId"`
	SessionID   string                             `json:"sessionId"`
	CallerConn  string                             `json:"callerConn"`
	CallerUser  string                             `json:"callerUser"`
	Content     string                             `json:"content"`
	Attachments contract.List[contract.Attachment] `json:"attachments"`
	CommandID   *string                            `json:"commandId,omitempty"`
	CreatedMs   int64                              `json:"created"`
	// WorkDir is the session's working directory (SessionDirectories).
	WorkDir string `json:"workDir,omitempty"`
}

func (j messageJob) caller() Caller {
	return Caller{ConnectionID: j.CallerConn, User: j.CallerUser}
}

// userMessage is the AgentMessage the request becomes in the session.
func (j messageJob) userMessage() contract.AgentMessage {
	m := contract.AgentMessage{ID: j.ID, Content: j.Content, Role: contract.MessageRoleUser, AgentID: j.AgentID,
		SessionID: j.SessionID, Timestamp: contract.DateTime(time.UnixMilli(j.CreatedMs).UTC()),
		Attachments: j.Attachments, Metadata: contract.Map{}}
	if j.CommandID != nil {
		m.Metadata["CommandId"] = *j.CommandID
	}
	if j.CallerUser != "" {
		m.SenderID = contract.Ptr(j.CallerUser)
	}
	return m
}

// SendAgentMessage accepts a message for an agent (AgentHub.SendAgentMessage,
// DESIGN decisions 3, 4 and 9) and returns its id once the answer's job is
// durably in the job stream; any node's worker answers it.
//
// Before the job is enqueued, the message is recorded in the session's
// history and sent to the session group and the caller as AgentMessage
// (role User, metadata.CommandId when the request had a commandId), so it
// precedes its answer everywhere. The job carries the session's recent
// conversation (Config.ConversationMessages, ending with this message).
//
// The answer, from whichever worker runs it, goes to the session group,
// to the subscribers of AgentGroup(agentId) that may see the session, and
// to the caller — each connection once, in this order per connection:
// AgentStatusUpdate(Busy) to the agent group; one ReceiveStreamingUpdate
// per chunk (isComplete false, type Text, messageId = the returned id,
// metadata {attempt, sequence, CommandId}); then one ReceiveAgentResponse
// with the complete text (isComplete true, recorded in the history); then
// AgentStatusUpdate(Ready) when the agent has nothing else running. A last
// chunk repeating the whole text so far is dropped. A failed answer ends
// with ReceiveError (code TIMEOUT, AGENT_NOT_FOUND or PROCESSING_ERROR,
// recorded) instead, and AgentStatusUpdate(Error).
//
// Retries: an attempt that fails with a retryable error is retried after
// Config's back-off, up to Config.MaxAttempts, then dead-lettered; a
// worker's death is retried the same way after the visibility timeout.
// Each attempt streams its chunks again from the start with a higher
// metadata.attempt and a sequence restarting at 0: a client that
// accumulates chunks must start over when the attempt grows (and ignore
// chunks of a lower attempt). The final ReceiveAgentResponse carries the
// complete answer of the attempt that succeeded, so a client that only
// shows it (the original UI) never sees a partial or doubled answer.
//
// Errors: VALIDATION_FAILED, AGENT_NOT_FOUND, SESSION_NOT_FOUND, FORBIDDEN,
// PROCESSING_ERROR.
func (e *Engine) SendAgentMessage(ctx context.Context, caller Caller, req contract.AgentMessageRequest) (string, error) {
	j, err := e.acceptMessage(ctx, caller, req)
	if err != nil {
		return "", err
	}
	if _, err := e.enqueueMessage(ctx, j, true); err != nil {
		return "", internal("send agent message: enqueue", err)
	}
	e.observeJobs(JobKindAgentMessage, JobEnqueued, 1)
	e.log.Info("agent message accepted", "message", j.ID, "agent", j.AgentID, "session", j.SessionID, "user", caller.User)
	return j.ID, nil
}

// StreamAgentMessage answers a message like SendAgentMessage, but on this
// node, inside the call, and also hands every chunk and then the final
// answer (isComplete true) to send, for AgentHub.StreamAgentMessage's
// server-to-client stream. The caller's connection is left out of the
// chunk callbacks (it has the stream); the session and the agent's
// subscribers get the same callbacks as for SendAgentMessage, and the
// final answer is recorded.
//
// It runs in-process rather than as a job because the stream lives and
// dies with the caller's connection, which is on this node: if the node
// dies, the stream is gone with it and nothing is left to retry. There is
// one attempt. Cancelling ctx (the client cancels the stream or
// disconnects) cancels the agent; the session then gets the final
// ReceiveAgentResponse with the partial text and metadata.cancelled true,
// and ctx's error is returned. An error of send cancels the agent the same
// way. Other errors are returned as *Error (TIMEOUT, PROCESSING_ERROR)
// after ReceiveError went to the session and the caller.
func (e *Engine) StreamAgentMessage(ctx context.Context, caller Caller, req contract.AgentMessageRequest, send func(contract.AgentResponse) error) error {
	j, err := e.acceptMessage(ctx, caller, req)
	if err != nil {
		return err
	}
	agent, info, ok := e.agents.Lookup(j.AgentID)
	if !ok {
		return errf(contract.CodeAgentNotFound, "Agent %s not found", j.AgentID)
	}
	conv, err := e.enqueueMessage(ctx, j, false)
	if err != nil {
		return internal("stream agent message: conversation", err)
	}
	agentCtx, cancelAgent := context.WithCancel(ctx)
	defer cancelAgent()
	t := e.newTurn(j, 1, info, conv)
	t.exclude = caller.ConnectionID
	t.items = func(r contract.AgentResponse) {
		if send(r) != nil {
			cancelAgent() // the stream is gone: stop the agent
		}
	}
	t.begin()
	defer t.end(messageOutcome{}) // a no-op after the end below
	runCtx, cancelRun := context.WithTimeout(agentCtx, e.cfg.AgentTimeout)
	res, runErr := e.runAgent(runCtx, agent, t.request(), t.chunk)
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded) && agentCtx.Err() == nil
	cancelRun()
	t.close()

	var o messageOutcome
	switch {
	case runErr == nil && !timedOut: // done, even if the stream went away meanwhile
		o = t.success(res)
	case agentCtx.Err() != nil:
		o = t.success(res)
		o.Cancelled = true
	case timedOut:
		o = t.failure(contract.CodeTimeout, fmt.Sprintf("Agent %s did not answer within %v", j.AgentID, e.cfg.AgentTimeout))
	default:
		o = t.failure(contract.CodeProcessingError, agentErrorText(j.AgentID, runErr))
	}
	opCtx, cancel := e.op()
	defer cancel()
	if o.OK {
		entry, err := jsonString(t.answerMessage(o))
		if err == nil {
			err = e.appendConversation(opCtx, j.SessionID, entry)
		}
		if err != nil {
			e.log.Warn("record answer in conversation", "message", j.ID, "err", err)
		}
	}
	t.deliver(opCtx, o)
	t.end(o)
	switch {
	case o.Cancelled:
		e.log.Info("streamed agent message cancelled", "message", j.ID, "agent", j.AgentID)
		if err := ctx.Err(); err != nil {
			return err
		}
		return errf(contract.CodeProcessingError, "The stream was closed")
	case !o.OK:
		return errf(o.Code, "%s", o.Error)
	}
	if t.items != nil {
		t.items(t.finalResponse(o))
	}
	return nil
}

// acceptMessage validates a request, checks the agent, the session and the
// caller's right to use it, and records the user message (AgentMessage to
// the session and the caller).
func (e *Engine) acceptMessage(ctx context.Context, caller Caller, req contract.AgentMessageRequest) (messageJob, error) {
	agentID, sessionID := strings.TrimSpace(req.AgentID), strings.TrimSpace(req.SessionID)
	switch {
	case agentID == "":
		return messageJob{}, errf(contract.CodeValidationFailed, "agentId is required")
	case sessionID == "":
		return messageJob{}, errf(contract.CodeValidationFailed, "sessionId is required")
	case strings.TrimSpace(req.Content) == "" && len(req.Attachments) == 0:
		return messageJob{}, errf(contract.CodeValidationFailed, "Message content must not be empty")
	case len(req.Content) > maxMessageContent:
		return messageJob{}, errf(contract.CodeValidationFailed, "Message content is too long (at most %d bytes)", maxMessageContent)
	}
	if e.router == nil {
		return messageJob{}, &Error{Code: contract.CodeProcessingError, Message: "Agent messages are not available on this node",
			Err: errors.New("orchestration: the Sessions value does not implement Router")}
	}
	if _, _, ok := e.agents.Lookup(agentID); !ok {
		return messageJob{}, errf(contract.CodeAgentNotFound, "Agent %s not found", agentID)
	}
	workDir, err := e.openSession(ctx, caller, sessionID)
	if err != nil {
		return messageJob{}, err
	}
	j := messageJob{ID: uuid.NewString(), AgentID: agentID, SessionID: sessionID,
		CallerConn: caller.ConnectionID, CallerUser: caller.User, Content: req.Content,
		Attachments: req.Attachments, CommandID: req.CommandID, CreatedMs: e.nowMs(), WorkDir: workDir}
	// One Emit, no retry: it fails after recording when only the send
	// failed, and a retry would record the message twice. If the record
	// failed, Redis is failing and the enqueue that follows reports it.
	if err := e.sessions.Emit(ctx, sessionID, caller, contract.TargetAgentMessage, j.userMessage()); err != nil {
		e.log.Warn("agent message: emit user message", "message", j.ID, "session", sessionID, "err", err)
	}
	return j, nil
}

// enqueueMessage appends the user message to the session's conversation
// and returns the snapshot the answer works from; with enqueue it also
// writes the job record and adds the job, in the same atomic step.
func (e *Engine) enqueueMessage(ctx context.Context, j messageJob, enqueue bool) ([]contract.AgentMessage, error) {
	reqJSON, err := jsonString(j)
	if err != nil {
		return nil, err
	}
	um := j.userMessage()
	um.Attachments = nil // the conversation keeps text; the job keeps this message's attachments
	entry, err := jsonString(um)
	if err != nil {
		return nil, err
	}
	flag := "0"
	if enqueue {
		flag = "1"
	}
	conv, err := e.msc.enqueue.Run(ctx, e.rdb, []string{e.keys.msg(e.keys.partOf(j.SessionID), j.ID), e.keys.conv(j.SessionID), e.keys.part(j.SessionID).jobs},
		j.ID, reqJSON, entry, e.cfg.ConversationMessages, e.cfg.ConversationBytes,
		e.cfg.ConversationTTL.Milliseconds(), e.openRecordTTL().Milliseconds(), e.nowMs(), flag).Text()
	if err != nil {
		return nil, fmt.Errorf("enqueue agent message %s: %w", j.ID, err)
	}
	return decodeConversation(conv, j), nil
}

// openRecordTTL is how long an unfinished message job's record lives: as
// long as an unexecuted plan (Config.PlanRetention, so a backlog of that
// age is still answered) plus every attempt's run and back-off. Each start
// renews it; a finished record keeps Config.MessageRetention.
func (e *Engine) openRecordTTL() time.Duration {
	return e.cfg.PlanRetention + time.Duration(e.cfg.MaxAttempts)*(e.cfg.AgentTimeout+e.cfg.RetryBackoffMax)
}

// appendConversation appends one entry to a session's conversation (the
// answer of a streamed message, which has no job record).
func (e *Engine) appendConversation(ctx context.Context, sessionID, entry string) error {
	key := e.keys.conv(sessionID)
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, entry)
		p.LTrim(ctx, key, -int64(e.cfg.ConversationMessages), -1)
		p.PExpire(ctx, key, e.cfg.ConversationTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("append to conversation of %s: %w", sessionID, err)
	}
	return nil
}

// decodeConversation reads a conversation snapshot; the message being
// answered gets its attachments back. An undecodable snapshot degrades to
// the message alone.
func decodeConversation(raw string, j messageJob) []contract.AgentMessage {
	var conv []contract.AgentMessage
	if json.Unmarshal([]byte(raw), &conv) != nil || len(conv) == 0 {
		return []contract.AgentMessage{j.userMessage()}
	}
	for i := range conv {
		if conv[i].ID == j.ID {
			conv[i].Attachments = j.Attachments
		}
	}
	return conv
}

// msgDelivery is one delivery of an agent message job.
type msgDelivery struct {
	part     int    // the partition of the message's session
	streamID string // the job stream entry
	id       string // the message id
	owner    string // this delivery's ownership token
}

// handleMessage processes one delivery of an agent message job.
func (e *Engine) handleMessage(del delivery) {
	m := del.m
	id, _ := m.Values["msg"].(string)
	d := msgDelivery{part: del.part, streamID: m.ID, id: id, owner: e.cfg.NodeID + "/" + uuid.NewString()}
	if id == "" {
		e.log.Error("dropping malformed agent message job", "id", m.ID, "values", m.Values)
		e.ackStream(d)
		return
	}
	ctx, cancel := e.op()
	res, err := e.msc.start.Run(ctx, e.rdb, []string{e.keys.msg(d.part, id)}, d.owner, e.nowMs(), e.cfg.MaxAttempts,
		e.openRecordTTL().Milliseconds()).StringSlice()
	cancel()
	if err != nil {
		// Left pending: the reclaimer retries it after the visibility timeout.
		e.log.Warn("start agent message", "message", id, "err", err)
		return
	}
	switch res[0] {
	case "run":
		e.serveMessage(d, res)
	case "renotify":
		e.renotifyMessage(d)
	case "exhausted":
		e.exhaustedMessage(d, res)
	default: // gone, dup: nothing left to do for this delivery
		e.stats.dups.Add(1)
		e.ackStream(d)
	}
}

// serveMessage runs one attempt at answering a message this delivery owns.
func (e *Engine) serveMessage(d msgDelivery, res []string) {
	if len(res) < 4 {
		e.log.Error("bad agent message start", "message", d.id, "result", res)
		e.ackStream(d)
		return
	}
	attempt, _ := strconv.Atoi(res[1])
	var j messageJob
	if err := json.Unmarshal([]byte(res[2]), &j); err != nil || j.ID == "" {
		e.log.Error("bad agent message job", "message", d.id, "err", err)
		e.ackStream(d)
		return
	}
	e.stats.started.Add(1)
	e.observeStart(JobKindAgentMessage, d.streamID)
	agent, info, ok := e.agents.Lookup(j.AgentID)
	t := e.newTurn(j, attempt, info, decodeConversation(res[3], j))
	if !ok { // the catalogue of this node lacks it: retrying elsewhere is a guess, so fail
		e.finishMessage(d, t, t.failure(contract.CodeAgentNotFound, fmt.Sprintf("Agent %s not found", j.AgentID)), false)
		return
	}

	agentCtx, cancelAgent := context.WithCancel(e.runCtx)
	defer cancelAgent()
	check := func(ctx context.Context, claim, post string) (string, error) {
		return e.msc.keepalive.Run(ctx, e.rdb, []string{e.keys.msg(d.part, d.id), e.keys.parts[d.part].jobs},
			d.owner, groupName, e.cfg.NodeID, d.streamID, claim, post).Text()
	}
	ka := e.watch(check, cancelAgent, "message", d.id)
	defer ka.stop()

	t.begin()
	// Every path that records no outcome (retry, release, lost, stop)
	// ends the call without one; finishMessage's end comes first otherwise.
	defer t.end(messageOutcome{})
	runCtx, cancelRun := context.WithTimeout(agentCtx, e.cfg.AgentTimeout)
	t0 := time.Now()
	out, runErr := e.runAgent(runCtx, agent, t.request(), t.chunk)
	e.observeRun(JobKindAgentMessage, time.Since(t0))
	timedOut := errors.Is(runCtx.Err(), context.DeadlineExceeded) && agentCtx.Err() == nil
	cancelRun()
	t.close()
	ka.afterRun()

	if e.crashed.Load() {
		return
	}
	switch ka.verdict() {
	case "lost": // another delivery took the message over; it is theirs to answer
		e.stats.dups.Add(1)
		return
	case "stop", "gone":
		e.ackStream(d)
		return
	}
	if e.runCtx.Err() != nil && (runErr != nil || timedOut) { // forced shutdown cut the answer short
		e.releaseMessage(d, attempt)
		return
	}
	switch {
	case runErr == nil && !timedOut:
		e.finishMessage(d, t, t.success(out), false)
	case timedOut:
		e.finishMessage(d, t, t.failure(contract.CodeTimeout,
			fmt.Sprintf("Agent %s did not answer within %v", j.AgentID, e.cfg.AgentTimeout)), false)
	case !IsPermanent(runErr) && attempt < e.cfg.MaxAttempts:
		e.retryMessage(d, attempt, runErr.Error())
	default:
		msg := agentErrorText(j.AgentID, runErr)
		dead := !IsPermanent(runErr)
		if dead {
			msg = fmt.Sprintf("%s (after %d attempts)", msg, attempt)
		}
		e.finishMessage(d, t, t.failure(contract.CodeProcessingError, msg), dead)
	}
}

// agentErrorText is the client-facing text of an agent failure. Agent
// errors are written for people (the agents package keeps secrets out of
// them); a panic's text stays in the log.
func agentErrorText(agentID string, err error) string {
	return fmt.Sprintf("Agent %s failed: %v", agentID, err)
}

// runAgent calls agent once for a conversation turn, turning a panic into
// a permanent failure so one bad agent never takes the node down.
func (e *Engine) runAgent(ctx context.Context, agent Agent, req AgentRequest, emit func(string)) (res AgentResult, err error) {
	defer func(start time.Time) { e.observeAgent(ctx, agent, start, err) }(time.Now())
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("agent panicked", "agent", req.AgentID, "message", req.MessageID, "panic", p)
			err = Permanent(fmt.Errorf("agent %s crashed", req.AgentID))
		}
	}()
	return agent.Run(ctx, req, emit)
}

// finishMessage records the outcome (once) and, when this delivery
// recorded it, sends its callbacks, updates the agent's status and
// acknowledges the job.
func (e *Engine) finishMessage(d msgDelivery, t *turn, o messageOutcome, dead bool) {
	outcomeJSON, err := jsonString(o)
	if err != nil {
		e.log.Error("encode agent message outcome", "message", d.id, "err", err)
		return
	}
	entry := ""
	if o.OK {
		if entry, err = jsonString(t.answerMessage(o)); err != nil {
			entry = ""
		}
	}
	okFlag, deadFlag := "0", "0"
	if o.OK {
		okFlag = "1"
	}
	if dead {
		deadFlag = "1"
	}
	ctx, cancel := e.op()
	res, err := e.msc.record.Run(ctx, e.rdb, []string{e.keys.msg(d.part, d.id), e.keys.parts[d.part].dead, e.keys.conv(t.job.SessionID)},
		d.owner, okFlag, e.nowMs(), e.cfg.MessageRetention.Milliseconds(), deadFlag, o.Error, d.id, t.attempt,
		entry, e.cfg.ConversationMessages, e.cfg.ConversationTTL.Milliseconds(), outcomeJSON).Text()
	cancel()
	if err != nil {
		e.log.Warn("record agent message", "message", d.id, "err", err)
		return // left pending: redelivered after the visibility timeout
	}
	switch res {
	case "recorded":
	case "lost":
		e.stats.dups.Add(1)
		return
	default: // gone, dup
		e.stats.dups.Add(1)
		e.ackStream(d)
		return
	}
	switch {
	case o.OK:
		e.stats.answered.Add(1)
		e.observeJobs(JobKindAgentMessage, JobSucceeded, 1)
	case dead:
		e.stats.unanswered.Add(1)
		e.stats.dead.Add(1)
		e.observeJobs(JobKindAgentMessage, JobDeadLettered, 1)
		e.log.Warn("job dead-lettered", "message", d.id, "agent", t.job.AgentID, "error", o.Error)
	default:
		e.stats.unanswered.Add(1)
		e.observeJobs(JobKindAgentMessage, JobFailed, 1)
	}
	if e.crashed.Load() {
		return
	}
	// Callbacks and the acknowledgement get their own deadlines: a slow
	// send must not leave the acknowledgement without time (the job would
	// be redelivered and its callbacks sent twice).
	ctx, cancel = e.op()
	t.deliver(ctx, o)
	cancel()
	t.end(o)
	e.notifyMessage(d)
}

// notifyMessage marks a recorded message's callbacks sent and acknowledges
// its job.
func (e *Engine) notifyMessage(d msgDelivery) {
	if e.crashed.Load() {
		return
	}
	ctx, cancel := e.op()
	defer cancel()
	if err := e.msc.notify.Run(ctx, e.rdb, []string{e.keys.msg(d.part, d.id), e.keys.parts[d.part].jobs}, d.streamID, groupName).Err(); err != nil {
		e.log.Warn("acknowledge agent message", "message", d.id, "err", err)
	}
}

// renotifyMessage sends the callbacks of a message whose recording
// delivery died before marking them sent (the one case where an answer's
// final callback, and its history record, can be sent twice).
func (e *Engine) renotifyMessage(d msgDelivery) {
	ctx, cancel := e.op()
	defer cancel()
	v, err := e.rdb.HMGet(ctx, e.keys.msg(d.part, d.id), "req", "outcome", "attempts").Result()
	if err != nil {
		e.log.Warn("load agent message", "message", d.id, "err", err)
		return
	}
	reqJSON, _ := v[0].(string)
	outJSON, _ := v[1].(string)
	var j messageJob
	var o messageOutcome
	if json.Unmarshal([]byte(reqJSON), &j) != nil || json.Unmarshal([]byte(outJSON), &o) != nil {
		e.ackStream(d)
		return
	}
	_, info, _ := e.agents.Lookup(j.AgentID)
	t := e.newTurn(j, o.Attempt, info, nil)
	t.resolveWatchers(ctx)
	t.deliver(ctx, o)
	e.notifyMessage(d)
}

// exhaustedMessage fails a message whose starts exceeded MaxAttempts (its
// workers kept dying): the job is dead-lettered.
func (e *Engine) exhaustedMessage(d msgDelivery, res []string) {
	ctx, cancel := e.op()
	reqJSON, err := e.rdb.HGet(ctx, e.keys.msg(d.part, d.id), "req").Result()
	cancel()
	var j messageJob
	if err != nil || json.Unmarshal([]byte(reqJSON), &j) != nil {
		e.log.Warn("load exhausted agent message", "message", d.id, "err", err)
		return
	}
	n := atoi(res, 1)
	msg := fmt.Sprintf("Agent %s abandoned the message after %d attempts (its worker stopped responding)", j.AgentID, n)
	if len(res) > 2 && res[2] != "" {
		msg = fmt.Sprintf("Agent %s failed after %d attempts: %s", j.AgentID, n, res[2])
	}
	_, info, _ := e.agents.Lookup(j.AgentID)
	t := e.newTurn(j, n, info, nil)
	ctx, cancel = e.op()
	t.resolveWatchers(ctx)
	cancel()
	e.finishMessage(d, t, t.failure(contract.CodeProcessingError, msg), true)
}

// retryMessage parks the next attempt in the delayed set for its back-off.
func (e *Engine) retryMessage(d msgDelivery, attempt int, errText string) {
	ctx, cancel := e.op()
	defer cancel()
	due := e.cfg.Now().Add(e.cfg.backoff(attempt)).UnixMilli()
	member := fmt.Sprintf("msg|%s|%d", d.id, attempt+1)
	res, err := e.msc.retry.Run(ctx, e.rdb, []string{e.keys.msg(d.part, d.id), e.keys.parts[d.part].jobs, e.keys.parts[d.part].delayed},
		d.owner, d.streamID, groupName, due, member, errText).Text()
	if err != nil {
		e.log.Warn("schedule agent message retry", "message", d.id, "err", err)
		return
	}
	if res == "ok" {
		e.stats.retries.Add(1)
		e.observeJobs(JobKindAgentMessage, JobRetried, 1)
		e.log.Info("agent message retry scheduled", "message", d.id, "attempt", attempt+1, "error", errText)
	}
}

// releaseMessage gives a running job back at shutdown.
func (e *Engine) releaseMessage(d msgDelivery, attempt int) {
	ctx, cancel := e.op()
	defer cancel()
	res, err := e.msc.release.Run(ctx, e.rdb, []string{e.keys.msg(d.part, d.id), e.keys.parts[d.part].jobs},
		d.owner, d.streamID, groupName, d.id, attempt).Text()
	if err != nil {
		e.log.Warn("release agent message", "message", d.id, "err", err)
		return
	}
	if res == "ok" {
		e.stats.released.Add(1)
		e.observeJobs(JobKindAgentMessage, JobReleased, 1)
		e.observeJobs(JobKindAgentMessage, JobEnqueued, 1) // the release script re-adds it
	}
}

// ackStream acknowledges and deletes a message job's stream entry.
func (e *Engine) ackStream(d msgDelivery) {
	e.ack(job{part: d.part, msgID: d.streamID})
}

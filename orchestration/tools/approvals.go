package tools

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Errors of Approvals.Decide and Approvals.Get.
var (
	// ErrApprovalNotFound: no approval has the id (unknown, malformed or
	// expired).
	ErrApprovalNotFound = errors.New("approval not found")
	// ErrAlreadyDecided: the approval was decided (or timed out) before.
	ErrAlreadyDecided = errors.New("approval already decided")
)

// Approval statuses, as stored in the record.
const (
	StatusPending   = "pending"
	StatusApproved  = "approved"
	StatusDenied    = "denied"
	StatusTimedOut  = "timedout"
	StatusCancelled = "cancelled"
)

// Decider names recorded for decisions not made by a user.
const (
	DecidedByPolicy  = "policy"
	DecidedByTimeout = "timeout"
	DecidedByCancel  = "cancelled"
)

// ApprovalsConfig configures Approvals. Zero values take the defaults
// documented on each field.
type ApprovalsConfig struct {
	// Prefix is put before every Redis key ("hf"). With Redis Cluster use
	// a hash tag ("{hf}"): the scripts touch several keys of one approval.
	Prefix string
	// RecordMargin is how long an approval record outlives its timeout
	// (1 minute), so that Get and a late Decide (ErrAlreadyDecided) still
	// find it.
	RecordMargin time.Duration
	// WaitSlice bounds one blocking wait (BLPOP) for a decision (1s): the
	// waiter notices ctx cancellation within it. It must stay below the
	// Redis client's ReadTimeout (go-redis default 3s).
	WaitSlice time.Duration
	// OpTimeout bounds the Redis operations made after the caller's context
	// is gone (recording a cancellation) (5s).
	OpTimeout time.Duration
	// Now stamps records and audit lines (time.Now). Waiting itself uses the
	// runtime's monotonic timers, so a frozen test clock cannot hang it.
	Now func() time.Time
	// Logger receives the audit lines (slog.Default()).
	Logger *slog.Logger
	// OnOutcome, if set, is called with every result of Authorize, after
	// its audit line (metrics count ApprovalResult.Outcome).
	OnOutcome func(ApprovalResult)
}

func (c ApprovalsConfig) withDefaults() ApprovalsConfig {
	if c.Prefix == "" {
		c.Prefix = "hf"
	}
	if c.RecordMargin <= 0 {
		c.RecordMargin = time.Minute
	}
	if c.WaitSlice <= 0 {
		c.WaitSlice = time.Second
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Approvals applies the approval policy to tool calls across the farm. When
// the policy asks the user, it stores an approval record in Redis
// ({prefix}:approval:{id}, a hash with a TTL), notifies the hub, and waits
// for the decision, which any node may record with Decide: the decision is
// written atomically (the first one wins, a timeout included) and pushed to
// {prefix}:approval:{id}:decision, a list the waiter pops with BLPOP — so a
// decision given before the waiter blocks is not lost and no pub/sub is
// needed.
//
// MaxPendingRequests is counted farm-wide per session, in a sorted set
// {prefix}:approvals:pending:{sessionId} scored by each approval's deadline:
// requests of one session land on any node (no sticky sessions), so a
// per-node count would allow nodes×max prompts; the cap exists to keep the
// people of one session from being flooded, so one runaway session must not
// use up the approvals of every other; and entries of a node that died
// mid-wait expire by their score, without a reaper.
//
// Each waiting approval holds one Redis connection for up to WaitSlice at a
// time; size the client's pool for the expected concurrent approvals.
//
// Approvals is safe for concurrent use.
type Approvals struct {
	rdb    redis.UniversalClient
	policy *Policy
	cfg    ApprovalsConfig
	create *redis.Script
	decide *redis.Script
}

// NewApprovals returns a coordinator that evaluates policy and keeps its
// records in rdb.
func NewApprovals(rdb redis.UniversalClient, policy *Policy, cfg ApprovalsConfig) *Approvals {
	return &Approvals{rdb: rdb, policy: policy, cfg: cfg.withDefaults(),
		// create: prune expired pending entries, enforce the cap, register
		// the approval and write its record — one atomic step, so two
		// nodes cannot both take the last slot.
		// KEYS record, pending. ARGV id, nowMs, deadlineMs, max, ttlMs, then
		// field/value pairs.
		create: redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
local f = {}
for i = 6, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`),
		// decide: record the first decision only, then wake the waiter.
		// KEYS record, decision list, pending. ARGV status, reason,
		// decidedBy, decidedAt, listTtlMs, id.
		decide: redis.NewScript(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'notfound' end
if st ~= 'pending' then return st end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'reason', ARGV[2], 'decidedBy', ARGV[3], 'decidedAt', ARGV[4])
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[6])
return 'ok'`),
	}
}

// Policy returns the policy the coordinator applies.
func (a *Approvals) Policy() *Policy { return a.policy }

func (a *Approvals) recordKey(id string) string { return a.cfg.Prefix + ":approval:" + id }
func (a *Approvals) decisionKey(id string) string {
	return a.cfg.Prefix + ":approval:" + id + ":decision"
}
func (a *Approvals) pendingKey(session string) string {
	return a.cfg.Prefix + ":approvals:pending:" + session
}

// ApprovalRequest is a tool call to authorise.
type ApprovalRequest struct {
	Context
	// RequesterUser is the user whose call this is; recorded so that the
	// hub can check who may decide.
	RequesterUser string
}

// ApprovalResult is the outcome of Authorize (CONTRACT §8.4's result).
type ApprovalResult struct {
	Approved bool
	Reason   string
	// Cached: the policy answered from its cache.
	Cached bool
	// ApprovalID is the id of the approval record when a user was asked
	// ("" when the policy decided alone).
	ApprovalID  string
	IsDangerous bool
	// Rule is the policy rule that decided (Rule* constants), or "" when a
	// user, the timeout or a cancellation did.
	Rule string
	// DecidedBy is the user who decided, or DecidedByPolicy,
	// DecidedByTimeout or DecidedByCancel.
	DecidedBy string
	Timestamp time.Time
}

// Record is a stored approval.
type Record struct {
	ID               string
	ToolName         string
	Command          string
	Parameters       contract.Map
	AgentID          string
	SessionID        string
	WorkingDirectory string
	// RequesterUser asked for the tool call; the hub lets only them or a
	// member of the session decide.
	RequesterUser string
	IsDangerous   bool
	// Status is one of the Status* constants.
	Status    string
	Reason    string
	DecidedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
	DecidedAt time.Time
}

// Request returns the ToolApprovalRequired payload of the record.
func (r Record) Request() contract.ToolApprovalRequest {
	return contract.ToolApprovalRequest{ID: r.ID, ToolName: r.ToolName, Parameters: r.Parameters,
		AgentID: r.AgentID, SessionID: r.SessionID, IsDangerous: r.IsDangerous}
}

// Authorize decides whether the call may run. When the policy asks the
// user, it stores an approval, calls notify (if not nil) with the
// ToolApprovalRequired payload — the hub sends it to the caller and the
// session group — and blocks until a decision (Decide on any node), the
// approval timeout (denied: "approval timed out"), or ctx is done (denied:
// cancelled). More than MaxPendingRequests pending approvals in the session
// are denied without asking.
//
// On a Redis failure it fails closed: the result is a denial and the error
// says why. Every outcome is written to the audit log.
func (a *Approvals) Authorize(ctx context.Context, req ApprovalRequest, notify func(contract.ToolApprovalRequest)) (ApprovalResult, error) {
	d := a.policy.Evaluate(req.Context)
	if d.Outcome != AskUser {
		res := ApprovalResult{Approved: d.Outcome == Approve, Reason: d.Reason, Cached: d.Cached,
			IsDangerous: d.IsDangerous, Rule: d.Rule, DecidedBy: DecidedByPolicy, Timestamp: a.cfg.Now()}
		a.audit(ctx, "tool.authorized", req, res)
		return res, nil
	}

	pcfg := a.policy.Config()
	now := a.cfg.Now()
	id := uuid.NewString()
	rec := Record{ID: id, ToolName: req.ToolName, Command: req.Command, Parameters: req.Parameters,
		AgentID: req.AgentID, SessionID: req.SessionID, WorkingDirectory: req.WorkingDirectory,
		RequesterUser: req.RequesterUser, IsDangerous: d.IsDangerous, Status: StatusPending,
		CreatedAt: now, ExpiresAt: now.Add(pcfg.ApprovalTimeout)}
	deny := func(reason, by string, err error) (ApprovalResult, error) {
		res := ApprovalResult{Reason: reason, ApprovalID: id, IsDangerous: d.IsDangerous, DecidedBy: by, Timestamp: a.cfg.Now()}
		a.audit(ctx, "tool.authorized", req, res)
		return res, err
	}

	fields, err := rec.fields()
	if err != nil {
		id = ""
		return deny("approval unavailable: parameters cannot be stored", DecidedByPolicy, fmt.Errorf("tools: store approval: %w", err))
	}
	ttl := pcfg.ApprovalTimeout + a.cfg.RecordMargin
	args := append([]any{id, now.UnixMilli(), rec.ExpiresAt.UnixMilli(), pcfg.MaxPendingRequests, ttl.Milliseconds()}, fields...)
	ok, err := a.create.Run(ctx, a.rdb, []string{a.recordKey(id), a.pendingKey(req.SessionID)}, args...).Int()
	if err != nil {
		id = ""
		return deny("approval unavailable", DecidedByPolicy, fmt.Errorf("tools: create approval: %w", err))
	}
	if ok == 0 {
		id = ""
		return deny(fmt.Sprintf("too many pending approval requests (at most %d per session)", pcfg.MaxPendingRequests),
			DecidedByPolicy, nil)
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "tool approval requested", slog.Bool("audit", true),
		slog.String("event", "approval.requested"), slog.String("approval_id", id),
		slog.String("tool", req.ToolName), slog.String("command", clip(req.Command)),
		slog.String("agent_id", req.AgentID), slog.String("session_id", req.SessionID),
		slog.String("user", req.RequesterUser), slog.Bool("dangerous", d.IsDangerous))
	if notify != nil {
		notify(rec.Request())
	}

	status, err := a.wait(ctx, id, pcfg.ApprovalTimeout)
	switch {
	case err == nil:
	case ctx.Err() != nil:
		status, err = a.finish(id, StatusCancelled, "approval cancelled: "+ctx.Err().Error(), DecidedByCancel)
	default:
		// Redis failed until the deadline; try to record the timeout so
		// that a later decision is refused, and deny either way.
		status, _ = a.finish(id, StatusTimedOut, "approval timed out", DecidedByTimeout)
		if status == "" {
			return deny("approval unavailable", DecidedByPolicy, err)
		}
		err = nil
	}
	if err != nil {
		return deny("approval unavailable", DecidedByPolicy, err)
	}
	// Whoever won (a user, the timeout, a cancellation), the record says
	// what happened.
	gctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.OpTimeout)
	final, gerr := a.Get(gctx, id)
	cancel()
	if gerr != nil {
		final = Record{Status: status}
	}
	res := ApprovalResult{Approved: final.Status == StatusApproved, Reason: final.Reason, ApprovalID: id,
		IsDangerous: d.IsDangerous, DecidedBy: final.DecidedBy, Timestamp: a.cfg.Now()}
	if res.Reason == "" {
		res.Reason = map[string]string{StatusApproved: "approved by user", StatusDenied: "denied by user",
			StatusTimedOut: "approval timed out"}[final.Status]
	}
	a.audit(ctx, "tool.authorized", req, res)
	return res, nil
}

// wait blocks until a decision arrives for id or timeout passes; on timeout
// it records the timeout itself (unless a decision won the race) and
// returns the final status. Errors are Redis failures or ctx's.
func (a *Approvals) wait(ctx context.Context, id string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	key := a.decisionKey(id)
	defer func() {
		// The list is only a wake-up signal; drop it whatever happened.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.OpTimeout)
		defer cancel()
		a.rdb.Del(dctx, key)
	}()
	backoff := 50 * time.Millisecond
	var lastErr error
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		left := time.Until(deadline)
		if left <= 0 {
			if lastErr != nil {
				return "", lastErr
			}
			return a.finish(id, StatusTimedOut, "approval timed out", DecidedByTimeout)
		}
		slice := min(left, a.cfg.WaitSlice)
		// BLPOP with a decimal timeout (Redis ≥ 6): go-redis' BLPop rounds
		// to whole seconds.
		v, err := a.rdb.Do(ctx, "BLPOP", key, strconv.FormatFloat(max(slice.Seconds(), 0.01), 'f', 3, 64)).StringSlice()
		switch {
		case err == nil && len(v) == 2:
			return v[1], nil
		case errors.Is(err, redis.Nil):
			lastErr = nil
		case ctx.Err() != nil:
			return "", ctx.Err()
		default:
			// A transient failure (reconnect, failover): retry until the
			// deadline, with back-off so a dead Redis is not hammered.
			lastErr = fmt.Errorf("tools: wait for approval %s: %w", id, err)
			t := time.NewTimer(min(backoff, max(time.Until(deadline), 0)))
			select {
			case <-ctx.Done():
				t.Stop()
				return "", ctx.Err()
			case <-t.C:
			}
			backoff = min(backoff*2, time.Second)
		}
	}
}

// finish records a decision made by the waiter (timeout, cancellation)
// unless one was recorded first, and returns the status that holds.
func (a *Approvals) finish(id, status, reason, by string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.OpTimeout)
	defer cancel()
	r, err := a.runDecide(ctx, id, status, reason, by)
	if err != nil {
		return "", err
	}
	if r == "ok" {
		return status, nil
	}
	if r == "notfound" {
		return "", fmt.Errorf("tools: approval %s: %w", id, ErrApprovalNotFound)
	}
	return r, nil
}

func (a *Approvals) runDecide(ctx context.Context, id, status, reason, by string) (string, error) {
	listTTL := a.policy.Config().ApprovalTimeout + a.cfg.RecordMargin
	return a.decide.Run(ctx, a.rdb, []string{a.recordKey(id), a.decisionKey(id), a.pendingKeyOf(ctx, id)},
		status, reason, by, a.cfg.Now().UnixMilli(), listTTL.Milliseconds(), id).Text()
}

// pendingKeyOf finds the pending set of an approval from its record; the
// decider does not know the session. A missing record gives a key the
// script never touches (it stops at "notfound").
func (a *Approvals) pendingKeyOf(ctx context.Context, id string) string {
	s, err := a.rdb.HGet(ctx, a.recordKey(id), "session").Result()
	if err != nil {
		return a.pendingKey("")
	}
	return a.pendingKey(s)
}

// Decide records a user's decision on an approval; it may be called on any
// node. Only the first decision counts: a second one, or one after the
// timeout, fails with ErrAlreadyDecided; an unknown or expired id with
// ErrApprovalNotFound. The caller checks that decidedBy may decide (see
// Get). The decision is written to the audit log.
func (a *Approvals) Decide(ctx context.Context, approvalID string, approved bool, reason, decidedBy string) error {
	if _, err := uuid.Parse(approvalID); err != nil {
		// Ids are UUIDs; anything else could name another key.
		return fmt.Errorf("tools: decide approval %q: %w", approvalID, ErrApprovalNotFound)
	}
	status := StatusDenied
	if approved {
		status = StatusApproved
	}
	if reason == "" {
		reason = map[bool]string{true: "approved by " + decidedBy, false: "denied by " + decidedBy}[approved]
	}
	r, err := a.runDecide(ctx, approvalID, status, reason, decidedBy)
	if err != nil {
		return fmt.Errorf("tools: decide approval %s: %w", approvalID, err)
	}
	outcome := "recorded"
	switch r {
	case "ok":
	case "notfound":
		err = fmt.Errorf("tools: decide approval %s: %w", approvalID, ErrApprovalNotFound)
		outcome = "not-found"
	default:
		err = fmt.Errorf("tools: decide approval %s: %w (it is %s)", approvalID, ErrAlreadyDecided, r)
		outcome = "already-decided"
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "tool approval decision", slog.Bool("audit", true),
		slog.String("event", "approval.decided"), slog.String("approval_id", approvalID),
		slog.String("decided_by", decidedBy), slog.String("decision", status),
		slog.String("reason", reason), slog.String("outcome", outcome))
	return err
}

// Get returns the stored approval (pending or decided, until its record
// expires: timeout + RecordMargin after creation); ErrApprovalNotFound
// otherwise.
func (a *Approvals) Get(ctx context.Context, approvalID string) (Record, error) {
	if _, err := uuid.Parse(approvalID); err != nil {
		return Record{}, fmt.Errorf("tools: get approval %q: %w", approvalID, ErrApprovalNotFound)
	}
	m, err := a.rdb.HGetAll(ctx, a.recordKey(approvalID)).Result()
	if err != nil {
		return Record{}, fmt.Errorf("tools: get approval %s: %w", approvalID, err)
	}
	if len(m) == 0 {
		return Record{}, fmt.Errorf("tools: get approval %s: %w", approvalID, ErrApprovalNotFound)
	}
	return parseRecord(approvalID, m)
}

// fields returns the record as hash field/value pairs.
func (r Record) fields() ([]any, error) {
	p, err := json.Marshal(contract.Map(r.Parameters))
	if err != nil {
		return nil, err
	}
	return []any{"tool", r.ToolName, "command", r.Command, "params", string(p), "agent", r.AgentID,
		"session", r.SessionID, "workingDirectory", r.WorkingDirectory, "user", r.RequesterUser,
		"dangerous", strconv.FormatBool(r.IsDangerous), "status", r.Status,
		"createdAt", r.CreatedAt.UnixMilli(), "expiresAt", r.ExpiresAt.UnixMilli()}, nil
}

func parseRecord(id string, m map[string]string) (Record, error) {
	ms := func(k string) time.Time {
		v, err := strconv.ParseInt(m[k], 10, 64)
		if err != nil || v == 0 {
			return time.Time{}
		}
		return time.UnixMilli(v).UTC()
	}
	r := Record{ID: id, ToolName: m["tool"], Command: m["command"], AgentID: m["agent"], SessionID: m["session"],
		WorkingDirectory: m["workingDirectory"], RequesterUser: m["user"], IsDangerous: m["dangerous"] == "true",
		Status: m["status"], Reason: m["reason"], DecidedBy: m["decidedBy"],
		CreatedAt: ms("createdAt"), ExpiresAt: ms("expiresAt"), DecidedAt: ms("decidedAt"), Parameters: contract.Map{}}
	if p := m["params"]; p != "" {
		if err := json.Unmarshal([]byte(p), &r.Parameters); err != nil {
			return r, fmt.Errorf("tools: approval %s: parameters: %w", id, err)
		}
	}
	return r, nil
}

// audit writes the audit line of an authorisation outcome.
func (a *Approvals) audit(ctx context.Context, event string, req ApprovalRequest, res ApprovalResult) {
	outcome := "denied"
	if res.Approved {
		outcome = "approved"
	}
	a.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "tool approval outcome", slog.Bool("audit", true),
		slog.String("event", event), slog.String("approval_id", res.ApprovalID),
		slog.String("tool", req.ToolName), slog.String("command", clip(req.Command)),
		slog.String("agent_id", req.AgentID), slog.String("session_id", req.SessionID),
		slog.String("user", req.RequesterUser), slog.String("decided_by", res.DecidedBy),
		slog.String("rule", res.Rule), slog.String("outcome", outcome), slog.String("reason", res.Reason),
		slog.Bool("dangerous", res.IsDangerous), slog.Bool("cached", res.Cached))
	if a.cfg.OnOutcome != nil {
		a.cfg.OnOutcome(res)
	}
}

// clip shortens a command for the log.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

package orchestration

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// CreatePlan builds a plan for req (CONTRACT §7, DESIGN decision 7), stores
// it farm-wide and sends OrchestrationPlanCreated to the session group (and
// the caller). Errors: VALIDATION_FAILED (empty goal, no agents, maxSteps
// out of range, bad strategy or constraints), AGENT_NOT_FOUND,
// SESSION_NOT_FOUND, FORBIDDEN, PROCESSING_ERROR.
//
// Constraints understood: stepTimeout and timeout (or planTimeout), each a
// TimeSpan string or a number of seconds.
func (e *Engine) CreatePlan(ctx context.Context, caller Caller, req contract.CreatePlanRequest) (contract.OrchestrationPlan, error) {
	agents, stepTimeout, planTimeout, verr := normalizeRequest(&req, planLimits{
		maxSteps: e.cfg.MaxSteps, stepTimeout: e.cfg.StepTimeout, planTimeout: e.cfg.PlanTimeout})
	if verr != nil {
		return contract.OrchestrationPlan{}, verr
	}
	for _, a := range agents {
		if _, _, ok := e.agents.Lookup(a); !ok {
			return contract.OrchestrationPlan{}, errf(contract.CodeAgentNotFound, "Agent %s not found", a)
		}
	}
	workDir, err := e.openSession(ctx, caller, req.SessionID)
	if err != nil {
		return contract.OrchestrationPlan{}, err
	}
	now := e.cfg.Now()
	plan := buildPlan(uuid.NewString(), req, agents, stepTimeout, planTimeout, now)
	g, err := graphOf(plan.Steps)
	if err != nil { // cannot happen for built plans; guards the invariant
		return contract.OrchestrationPlan{}, internal("create plan", err)
	}
	planJSON, err := json.Marshal(plan)
	if err != nil {
		return contract.OrchestrationPlan{}, internal("create plan: encode", err)
	}
	agentsJSON, err := json.Marshal(agents)
	if err != nil {
		return contract.OrchestrationPlan{}, internal("create plan: encode", err)
	}
	fields, err := stepFields(plan.Steps, g)
	if err != nil {
		return contract.OrchestrationPlan{}, internal("create plan", err)
	}
	stop := "0"
	if stopsOnFailure(plan.Strategy) {
		stop = "1"
	}
	fields = append(fields,
		"plan", planJSON, "session", req.SessionID, "cconn", caller.ConnectionID, "cuser", caller.User,
		"status", planCreated, "stop", stop, "total", len(plan.Steps), "terminal", 0, "need", 0, "notified", 0,
		"created", now.UnixMilli(), "timeoutMs", planTimeout.Milliseconds(), "stepTimeoutMs", stepTimeout.Milliseconds(),
		"maxSteps", req.MaxSteps, "strategy", int(plan.Strategy), "goal", plan.Goal, "agents", agentsJSON, "wd", workDir)
	key := e.keys.plan(plan.ID)
	_, err = e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, fields...)
		p.PExpire(ctx, key, e.cfg.PlanRetention)
		return nil
	})
	if err != nil {
		return contract.OrchestrationPlan{}, internal("create plan: store", err)
	}
	e.log.Info("plan created", "plan", plan.ID, "session", req.SessionID, "strategy", plan.Strategy.String(),
		"steps", len(plan.Steps), "user", caller.User)
	e.emit(ctx, req.SessionID, caller, contract.TargetOrchestrationPlanCreated, plan)
	return plan, nil
}

// ExecutePlan starts a stored plan: its first runnable steps are enqueued
// and the call returns (DESIGN decision 4); progress and results arrive as
// callbacks to the session group and this caller. Errors: PLAN_NOT_FOUND,
// CONFLICT (already started or finished), FORBIDDEN, PROCESSING_ERROR.
func (e *Engine) ExecutePlan(ctx context.Context, caller Caller, planID string) error {
	info, err := e.planInfo(ctx, planID)
	if err != nil {
		return err
	}
	if err := e.checkSession(ctx, caller, info.session, false); err != nil {
		return err
	}
	now := e.cfg.Now()
	deadline := now.Add(info.timeout)
	ttl := info.timeout + e.cfg.PlanRetention
	res, err := e.sc.execute.Run(ctx, e.rdb, []string{e.keys.plan(planID), e.keys.part(planID).jobs, e.keys.part(planID).deadlines},
		now.UnixMilli(), caller.ConnectionID, caller.User, deadline.UnixMilli(), planID, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return internal("execute plan", err)
	}
	switch res[0] {
	case "gone":
		return errf(contract.CodePlanNotFound, "Plan %s not found", planID)
	case "conflict":
		return errf(contract.CodeConflict, "Plan %s is already %s", planID, res[1])
	}
	e.observeJobs(JobKindStep, JobEnqueued, atoi(res, 1))
	e.log.Info("plan execution started", "plan", planID, "session", info.session, "user", caller.User)
	return nil
}

// SendOrchestrationMessage creates a plan from the message (goal = message,
// maxSteps 10, default timeout), sends OrchestrationPlanCreated, and starts
// it. It returns the plan once execution is accepted. A build failure is
// returned as an *Error; per CONTRACT §3 the hub sends it to the caller as
// ReceiveError and still completes the call successfully.
func (e *Engine) SendOrchestrationMessage(ctx context.Context, caller Caller, req contract.OrchestrationMessageRequest) (contract.OrchestrationPlan, error) {
	plan, err := e.CreatePlan(ctx, caller, contract.CreatePlanRequest{
		SessionID: req.SessionID, Goal: req.Message, Strategy: req.Strategy,
		AvailableAgentIDs: req.AgentIDs, MaxSteps: contract.DefaultMaxSteps, Constraints: contract.Map{}})
	if err != nil {
		return contract.OrchestrationPlan{}, err
	}
	return plan, e.ExecutePlan(ctx, caller, plan.ID)
}

// CancelExecution cancels a plan that is created or running. The cancelled
// state is recorded at once; steps running on any node stop within
// Config.PollInterval; the steps that were running get a cancelled
// StepCompleted and the plan an OrchestrationCompleted with success false
// and finalOutput "Orchestration was cancelled". Errors: PLAN_NOT_FOUND,
// CONFLICT (already finished), FORBIDDEN, PROCESSING_ERROR.
func (e *Engine) CancelExecution(ctx context.Context, caller Caller, planID string) error {
	info, err := e.planInfo(ctx, planID)
	if err != nil {
		return err
	}
	if err := e.checkSession(ctx, caller, info.session, false); err != nil {
		return err
	}
	res, err := e.abort(ctx, planID, planCancelled, "Orchestration was cancelled", false)
	if err != nil {
		return internal("cancel plan", err)
	}
	switch res {
	case "gone":
		return errf(contract.CodePlanNotFound, "Plan %s not found", planID)
	case "terminal":
		return errf(contract.CodeConflict, "Plan %s has already finished", planID)
	}
	e.log.Info("plan cancelled", "plan", planID, "user", caller.User)
	return nil
}

// GetPlan returns a plan with its live state: status, per-step state and
// results, progress and, once finished, the result. Errors: PLAN_NOT_FOUND,
// FORBIDDEN, PROCESSING_ERROR.
func (e *Engine) GetPlan(ctx context.Context, caller Caller, planID string) (contract.PlanState, error) {
	h, err := e.rdb.HGetAll(ctx, e.keys.plan(planID)).Result()
	if err != nil {
		return contract.PlanState{}, internal("get plan", err)
	}
	if len(h) == 0 || h["plan"] == "" {
		return contract.PlanState{}, errf(contract.CodePlanNotFound, "Plan %s not found", planID)
	}
	if err := e.checkSession(ctx, caller, h["session"], false); err != nil {
		return contract.PlanState{}, err
	}
	st, err := e.stateOf(planID, h)
	if err != nil {
		return contract.PlanState{}, internal("get plan", err)
	}
	return st, nil
}

// planInfo is what the API needs to know of a stored plan.
type planInfo struct {
	session string
	timeout time.Duration
}

func (e *Engine) planInfo(ctx context.Context, planID string) (planInfo, error) {
	if planID == "" {
		return planInfo{}, errf(contract.CodeValidationFailed, "planId is required")
	}
	v, err := e.rdb.HMGet(ctx, e.keys.plan(planID), "session", "timeoutMs").Result()
	if err != nil {
		return planInfo{}, internal("load plan", err)
	}
	s, _ := v[0].(string)
	if s == "" {
		return planInfo{}, errf(contract.CodePlanNotFound, "Plan %s not found", planID)
	}
	ms, _ := v[1].(string)
	n, _ := strconv.ParseInt(ms, 10, 64)
	if n <= 0 {
		n = e.cfg.PlanTimeout.Milliseconds()
	}
	return planInfo{session: s, timeout: time.Duration(n) * time.Millisecond}, nil
}

// checkSession checks that the session exists (when mustExist) and that
// the caller may use it.
func (e *Engine) checkSession(ctx context.Context, caller Caller, sessionID string, mustExist bool) error {
	if mustExist {
		ok, err := e.sessions.Exists(ctx, sessionID)
		if err != nil {
			return internal("check session", err)
		}
		if !ok {
			return errf(contract.CodeSessionNotFound, "Session %s not found", sessionID)
		}
	}
	return e.authorize(ctx, caller, sessionID)
}

// openSession checks that the session exists and that the caller may use
// it, and returns its working directory ("" when the Sessions value does
// not implement SessionDirectories).
func (e *Engine) openSession(ctx context.Context, caller Caller, sessionID string) (string, error) {
	if e.dirs == nil {
		return "", e.checkSession(ctx, caller, sessionID, true)
	}
	dir, ok, err := e.dirs.WorkingDirectory(ctx, sessionID)
	if err != nil {
		return "", internal("check session", err)
	}
	if !ok {
		return "", errf(contract.CodeSessionNotFound, "Session %s not found", sessionID)
	}
	return dir, e.authorize(ctx, caller, sessionID)
}

// authorize checks that the caller may use the session.
func (e *Engine) authorize(ctx context.Context, caller Caller, sessionID string) error {
	if e.authz != nil {
		ok, err := e.authz.CanUse(ctx, sessionID, caller)
		if err != nil {
			return internal("authorize session", err)
		}
		if !ok {
			return errf(contract.CodeForbidden, "Not allowed to use session %s", sessionID)
		}
	}
	return nil
}

package orchestration

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// emitAttempts is how often an Emit is tried before the event is dropped.
const emitAttempts = 3

// emit sends one session event, retrying briefly: callbacks are
// notifications, the plan hash stays authoritative.
func (e *Engine) emit(ctx context.Context, sessionID string, caller Caller, target string, payload any) {
	for i := 0; ; i++ {
		err := e.sessions.Emit(ctx, sessionID, caller, target, payload)
		if err == nil {
			return
		}
		if i == emitAttempts-1 || !sleep(ctx, time.Duration(50<<i)*time.Millisecond) {
			e.log.Warn("session event dropped", "session", sessionID, "target", target, "err", err)
			return
		}
	}
}

// progress builds an OrchestrationProgress for a step.
func (e *Engine) progress(planID string, s contract.OrchestrationStep, total int64, pct float64, planStartedMs int64) contract.OrchestrationProgress {
	var elapsed time.Duration
	if planStartedMs > 0 {
		elapsed = max(e.cfg.Now().Sub(time.UnixMilli(planStartedMs)), 0)
	}
	return contract.OrchestrationProgress{
		CurrentStep: s.Order, TotalSteps: int(total), CurrentAgent: s.AgentID, CurrentTask: s.Task,
		PercentComplete: pct, ElapsedTime: contract.TimeSpan(elapsed), PlanID: planID,
	}
}

// stepEnd is what a recorded step's callbacks need.
type stepEnd struct {
	planID, session string
	caller          Caller
	step            contract.OrchestrationStep
	result          contract.StepResult
	terminal, total int64
	finishedPlan    bool                        // this record finished the plan: the completion sends its 100% progress
	planStartedMs   int64                       //
	replaced        *contract.OrchestrationPlan // Adaptive's new plan, when step 1 replaced the template
}

// emitStepEnd sends a recorded step's callbacks: the updated plan (Adaptive
// replacement), StepCompleted, and its end progress unless the record
// finished the plan.
func (e *Engine) emitStepEnd(ctx context.Context, s stepEnd) {
	if s.replaced != nil {
		e.emit(ctx, s.session, s.caller, contract.TargetOrchestrationPlanUpdated, *s.replaced)
	}
	e.emit(ctx, s.session, s.caller, contract.TargetStepCompleted,
		contract.StepCompletedEvent{OrchestrationStep: s.step, Result: s.result, PlanID: s.planID})
	if !s.finishedPlan {
		e.emit(ctx, s.session, s.caller, contract.TargetOrchestrationProgress,
			e.progress(s.planID, s.step, s.total, percent(s.terminal, s.total), s.planStartedMs))
	}
}

// notify marks the callbacks of step j.step sent, enqueues the steps it
// released, acknowledges j's job (j.msgID may be empty) and, when the
// plan's completion became due, sends it. When goOn is set and the engine
// still takes jobs, the delivery goes on with one released step instead of
// enqueueing it (saving the job's trip through the stream): the returned
// start result is that step's, for the caller to follow.
func (e *Engine) notify(ctx context.Context, j job, goOn bool) (*startResult, error) {
	owner := ""
	if goOn && j.msgID != "" && e.takeCtx != nil && e.takeCtx.Err() == nil {
		owner = e.newOwner()
	}
	res, err := e.sc.notify.Run(ctx, e.rdb, []string{e.keys.plan(j.planID), e.keys.parts[j.part].jobs},
		j.step, j.msgID, groupName, j.planID, owner, e.nowMs(), e.cfg.MaxAttempts, e.cfg.NodeID).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("notify step %d of plan %s: %w", j.step, j.planID, err)
	}
	e.observeJobs(JobKindStep, JobEnqueued, atoi(res, 1))
	switch {
	case res[0] == "complete":
		return nil, e.emitCompletion(ctx, j.planID, pairs(res[2:]))
	case res[0] == "ok" && len(res) > 2:
		e.observeJobs(JobKindStep, JobEnqueued, 1)
		next := j
		next.attempt, next.chained = 1, true
		return &startResult{j: next, owner: owner, res: res[2:]}, nil
	}
	return nil, nil
}

// pairs turns a flat field/value list (HGETALL's answer) into a map.
func pairs(fv []string) map[string]string {
	h := make(map[string]string, len(fv)/2)
	for i := 0; i+1 < len(fv); i += 2 {
		h[fv[i]] = fv[i+1]
	}
	return h
}

// emitCompletion sends a finished plan's last events: the 100% progress,
// OrchestrationCompleted and, when it failed or timed out, ReceiveError.
// The caller has claimed the right to send them (completionSent). h is the
// plan hash, or nil to load it.
func (e *Engine) emitCompletion(ctx context.Context, planID string, h map[string]string) error {
	if h == nil {
		var err error
		if h, err = e.rdb.HGetAll(ctx, e.keys.plan(planID)).Result(); err != nil {
			return fmt.Errorf("load finished plan %s: %w", planID, err)
		}
	}
	if len(h) == 0 {
		return nil
	}
	p, err := decodePlanHash(planID, h)
	if err != nil {
		return err
	}
	result := e.resultOf(p)
	// The final progress names the step that finished the plan, else the
	// last step that started.
	last, _ := p.step(int(p.int("finishedBy")))
	if last.Order == 0 {
		for _, s := range p.plan.Steps {
			if h[stepPrefix(s.Order)+"startedAt"] != "" {
				last = s
			}
		}
	}
	prog := e.progress(planID, last, p.int("total"), 100, p.int("started"))
	if f, s := p.int("finished"), p.int("started"); f > 0 && s > 0 {
		prog.ElapsedTime = contract.TimeSpan(time.Duration(f-s) * time.Millisecond)
	}
	e.emit(ctx, p.session, p.caller, contract.TargetOrchestrationProgress, prog)
	e.emit(ctx, p.session, p.caller, contract.TargetOrchestrationCompleted, result)
	status := h["status"]
	e.observePlan(status)
	if status == planFailed || status == planTimedOut {
		code := contract.CodeProcessingError
		if status == planTimedOut {
			code = contract.CodeTimeout
		}
		e.emit(ctx, p.session, p.caller, contract.TargetReceiveError, contract.ErrorResponse{
			Error: result.FinalOutput, SessionID: contract.Ptr(p.session),
			Timestamp: contract.DateTime(e.cfg.Now()), Code: code})
	}
	e.log.Info("plan finished", "plan", planID, "status", status, "steps", len(result.StepResults))
	return nil
}

// abort cancels or times out a plan (status planCancelled or planTimedOut)
// and sends the resulting callbacks. onlyIfDue makes it a no-op unless the
// plan's deadline has passed. It returns the script's verdict: "ok",
// "gone", "terminal" or "notdue".
func (e *Engine) abort(ctx context.Context, planID, status, reason string, onlyIfDue bool) (string, error) {
	due := "0"
	if onlyIfDue {
		due = "1"
	}
	now := e.cfg.Now()
	res, err := e.sc.abort.Run(ctx, e.rdb, []string{e.keys.plan(planID), e.keys.part(planID).deadlines},
		now.UnixMilli(), status, reason, planID, e.cfg.PlanRetention.Milliseconds(), due).StringSlice()
	if err != nil {
		return "", fmt.Errorf("abort plan %s: %w", planID, err)
	}
	if res[0] != "ok" {
		return res[0], nil
	}
	h, err := e.rdb.HGetAll(ctx, e.keys.plan(planID)).Result()
	if err != nil {
		return "ok", fmt.Errorf("load aborted plan %s: %w", planID, err)
	}
	p, err := decodePlanHash(planID, h)
	if err != nil {
		return "ok", err
	}
	// Steps that were running (or waiting to retry) get a result and a
	// StepCompleted; their workers see the plan stop and drop their jobs.
	var events []contract.StepCompletedEvent
	var fields []any
	prevTerminal, _ := strconv.ParseInt(res[2], 10, 64)
	for _, o := range res[3:] {
		order, _ := strconv.Atoi(o)
		s, ok := p.step(order)
		if !ok {
			continue
		}
		r := contract.StepResult{StepOrder: order, StepName: stepName(s), AgentID: s.AgentID,
			Error: fmt.Sprintf("Step %d was cancelled", order), OutputData: contract.Map{}}
		if status == planTimedOut {
			r.Error = fmt.Sprintf("Step %d stopped: %s", order, reason)
		}
		if ms := p.int(stepPrefix(order) + "startedAt"); ms > 0 {
			r.StartTime = contract.DateTime(time.UnixMilli(ms).UTC())
			r.ExecutionTime = contract.TimeSpan(max(now.Sub(time.UnixMilli(ms)), 0))
		}
		b, err := jsonString(r)
		if err != nil {
			return "ok", err
		}
		fields = append(fields, stepPrefix(order)+"result", b)
		events = append(events, contract.StepCompletedEvent{OrchestrationStep: s, Result: r, PlanID: planID})
	}
	if len(fields) > 0 {
		if err := e.rdb.HSet(ctx, e.keys.plan(planID), fields...).Err(); err != nil {
			return "ok", fmt.Errorf("store cancelled results of plan %s: %w", planID, err)
		}
	}
	// Each gets its end progress, except the last: the completion's 100%
	// progress is its end (finishedBy).
	total := p.int("total")
	for i, ev := range events {
		e.emit(ctx, p.session, p.caller, contract.TargetStepCompleted, ev)
		if i < len(events)-1 {
			e.emit(ctx, p.session, p.caller, contract.TargetOrchestrationProgress,
				e.progress(planID, ev.OrchestrationStep, total, percent(prevTerminal+int64(i)+1, total), p.int("started")))
		}
	}
	verdict, err := e.sc.complete.Run(ctx, e.rdb, []string{e.keys.plan(planID)}).Text()
	if err != nil {
		return "ok", fmt.Errorf("complete aborted plan %s: %w", planID, err)
	}
	if verdict == "complete" {
		return "ok", e.emitCompletion(ctx, planID, nil)
	}
	return "ok", nil
}

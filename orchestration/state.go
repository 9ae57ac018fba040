package orchestration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// planHash is a decoded plan hash.
type planHash struct {
	id      string
	h       map[string]string
	plan    contract.OrchestrationPlan
	session string
	caller  Caller // the executor, else the creator
}

func decodePlanHash(id string, h map[string]string) (planHash, error) {
	p := planHash{id: id, h: h, session: h["session"]}
	if err := json.Unmarshal([]byte(h["plan"]), &p.plan); err != nil {
		return p, fmt.Errorf("decode plan %s: %w", id, err)
	}
	p.caller = Caller{ConnectionID: h["xconn"], User: h["xuser"]}
	if h["status"] == planCreated || (p.caller.ConnectionID == "" && p.caller.User == "") {
		p.caller = Caller{ConnectionID: h["cconn"], User: h["cuser"]}
	}
	return p, nil
}

func (p planHash) int(field string) int64 {
	n, _ := strconv.ParseInt(p.h[field], 10, 64)
	return n
}

func (p planHash) time(field string) contract.DateTime {
	ms := p.int(field)
	if ms == 0 {
		return contract.DateTime{}
	}
	return contract.DateTime(time.UnixMilli(ms).UTC())
}

func (p planHash) step(order int) (contract.OrchestrationStep, bool) {
	if order >= 1 && order <= len(p.plan.Steps) {
		return p.plan.Steps[order-1], true
	}
	return contract.OrchestrationStep{}, false
}

func (p planHash) result(order int) (contract.StepResult, bool) {
	raw := p.h[stepPrefix(order)+"result"]
	if raw == "" {
		return contract.StepResult{}, false
	}
	var r contract.StepResult
	if json.Unmarshal([]byte(raw), &r) != nil {
		return contract.StepResult{}, false
	}
	return r, true
}

func isTerminalPlan(status string) bool {
	return status != planCreated && status != planRunning && status != ""
}

// percent is the share of terminal steps.
func percent(terminal, total int64) float64 {
	if total <= 0 {
		return 100
	}
	return float64(terminal) * 100 / float64(total)
}

// stateOf builds GetPlan's answer from a plan hash.
func (e *Engine) stateOf(id string, h map[string]string) (contract.PlanState, error) {
	p, err := decodePlanHash(id, h)
	if err != nil {
		return contract.PlanState{}, err
	}
	st := contract.PlanState{
		Plan: p.plan, SessionID: p.session, Status: h["status"], Reason: h["reason"],
		CreatedAt: p.time("created"), StartedAt: p.time("started"), FinishedAt: p.time("finished"),
		PercentComplete: percent(p.int("terminal"), p.int("total")),
		Steps:           []contract.StepState{},
	}
	if st.Status == planCreated {
		st.PercentComplete = 0
	}
	for _, s := range p.plan.Steps {
		pre := stepPrefix(s.Order)
		n, _ := strconv.Atoi(h[pre+"attempts"])
		ss := contract.StepState{Order: s.Order, AgentID: s.AgentID, State: h[pre+"state"], Attempts: n}
		if r, ok := p.result(s.Order); ok {
			ss.Result = &r
		}
		st.Steps = append(st.Steps, ss)
	}
	if isTerminalPlan(st.Status) {
		r := e.resultOf(p)
		st.Result = &r
	}
	return st, nil
}

// resultOf builds the OrchestrationResult of a finished plan.
func (e *Engine) resultOf(p planHash) contract.OrchestrationResult {
	res := contract.OrchestrationResult{
		Success: p.h["status"] == planCompleted, PlanID: p.id,
		StepResults: []contract.StepResult{}, FinalContext: contract.Map{},
	}
	for k, v := range p.plan.SharedContext {
		res.FinalContext[k] = v
	}
	for _, s := range p.plan.Steps {
		r, ok := p.result(s.Order)
		if !ok {
			continue
		}
		res.StepResults = append(res.StepResults, r)
		res.FinalContext[fmt.Sprintf("step_%d_completed", s.Order)] = r.Success
		if r.Success {
			res.FinalContext[fmt.Sprintf("step_%d_output", s.Order)] = r.Output
		}
	}
	if started, finished := p.int("started"), p.int("finished"); started > 0 && finished >= started {
		res.TotalDuration = contract.TimeSpan(time.Duration(finished-started) * time.Millisecond)
	}
	switch p.h["status"] {
	case planCompleted:
		res.FinalOutput = aggregate(p)
	case planCancelled:
		res.FinalOutput = "Orchestration was cancelled"
	case planTimedOut:
		res.FinalOutput = p.h["reason"]
	default:
		res.FinalOutput = "Orchestration failed: " + p.h["reason"]
	}
	return res
}

// aggregate is a completed plan's finalOutput (DESIGN decision 7): the
// output of the last step of a chain, or the labelled outputs of every
// final step (one no other step depends on) of a fan-out, in step order.
func aggregate(p planHash) string {
	dependedOn := map[string]bool{}
	for _, s := range p.plan.Steps {
		for _, d := range s.DependsOn {
			dependedOn[strings.TrimSpace(d)] = true
		}
	}
	var sinks []contract.OrchestrationStep
	for _, s := range p.plan.Steps {
		if !dependedOn[strconv.Itoa(s.Order)] {
			sinks = append(sinks, s)
		}
	}
	out := func(o int) string { return p.h[stepPrefix(o)+"out"] }
	if len(sinks) == 1 {
		return out(sinks[0].Order)
	}
	var b strings.Builder
	for i, s := range sinks {
		if i > 0 {
			b.WriteString("\n\n")
		}
		fmt.Fprintf(&b, "### Step %d (%s)\n%s", s.Order, s.AgentID, out(s.Order))
	}
	return b.String()
}

// stepName is the name used in results: the step's own, else "Step <n>".
func stepName(s contract.OrchestrationStep) string {
	if s.Name != "" {
		return s.Name
	}
	return "Step " + strconv.Itoa(s.Order)
}

package orchestration

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// AnalysisTask is the task of Adaptive's first step (CONTRACT §7).
const AnalysisTask = "Analyze goal and create detailed plan"

// maxGoalLength bounds a goal so one request cannot make every step job and
// callback huge.
const maxGoalLength = 32 * 1024

// stepTiming is a step's timeout and expected duration.
type stepTiming struct{ timeout, expected time.Duration }

func timingFor(s contract.OrchestrationStrategy, order int) stepTiming {
	switch s {
	case contract.StrategyParallel:
		return stepTiming{10 * time.Minute, 5 * time.Minute}
	case contract.StrategyAdaptive:
		if order == 1 {
			return stepTiming{5 * time.Minute, 2 * time.Minute}
		}
		return stepTiming{8 * time.Minute, 4 * time.Minute}
	default: // Sequential, RoundRobin
		return stepTiming{5 * time.Minute, 3 * time.Minute}
	}
}

// stopsOnFailure says whether a failed step ends the plan (Sequential,
// Adaptive, RoundRobin) or only its dependants (Parallel: the other steps
// continue), per CONTRACT §7.
func stopsOnFailure(s contract.OrchestrationStrategy) bool {
	return s != contract.StrategyParallel
}

// planLimits are the node's settings that shape a plan.
type planLimits struct {
	maxSteps    int
	stepTimeout time.Duration // 0 = per-strategy table
	planTimeout time.Duration
}

// normalizeRequest validates what can be checked without I/O and returns the
// cleaned agent list (trimmed, empty entries dropped, duplicates removed in
// order), the step timeout override (0 = none) and the plan timeout.
func normalizeRequest(req *contract.CreatePlanRequest, lim planLimits) (agents []string, stepTimeout, planTimeout time.Duration, err *Error) {
	goal := strings.TrimSpace(req.Goal)
	switch {
	case goal == "":
		return nil, 0, 0, errf(contract.CodeValidationFailed, "Goal must not be empty")
	case len(req.Goal) > maxGoalLength:
		return nil, 0, 0, errf(contract.CodeValidationFailed, "Goal is too long (at most %d bytes)", maxGoalLength)
	case !req.Strategy.Valid():
		return nil, 0, 0, errf(contract.CodeValidationFailed, "Unsupported orchestration strategy %d", int(req.Strategy))
	case strings.TrimSpace(req.SessionID) == "":
		return nil, 0, 0, errf(contract.CodeValidationFailed, "sessionId is required")
	case req.MaxSteps < 1 || req.MaxSteps > lim.maxSteps:
		return nil, 0, 0, errf(contract.CodeValidationFailed, "maxSteps must be between 1 and %d (got %d)", lim.maxSteps, req.MaxSteps)
	}
	seen := map[string]bool{}
	for _, a := range req.AvailableAgentIDs {
		a = strings.TrimSpace(a)
		if a != "" && !seen[a] {
			seen[a] = true
			agents = append(agents, a)
		}
	}
	if len(agents) == 0 {
		return nil, 0, 0, errf(contract.CodeValidationFailed, "At least one agent is required")
	}
	stepTimeout = lim.stepTimeout
	planTimeout = lim.planTimeout
	if v, ok := req.Constraints["stepTimeout"]; ok {
		if stepTimeout, err = constraintDuration("stepTimeout", v); err != nil {
			return nil, 0, 0, err
		}
	}
	for _, key := range []string{"timeout", "planTimeout"} {
		if v, ok := req.Constraints[key]; ok {
			if planTimeout, err = constraintDuration(key, v); err != nil {
				return nil, 0, 0, err
			}
		}
	}
	return agents, stepTimeout, planTimeout, nil
}

// constraintDuration reads a timeout constraint: a .NET TimeSpan string or a
// number of seconds, between 1ms and 24h.
func constraintDuration(key string, v any) (time.Duration, *Error) {
	var d time.Duration
	switch x := v.(type) {
	case string:
		ts, err := contract.ParseTimeSpan(x)
		if err != nil {
			return 0, errf(contract.CodeValidationFailed, "constraints.%s must be a TimeSpan like \"00:05:00\" or a number of seconds", key)
		}
		d = time.Duration(ts)
	case float64:
		if math.IsNaN(x) || x > 86400 {
			return 0, errf(contract.CodeValidationFailed, "constraints.%s is out of range", key)
		}
		d = time.Duration(x * float64(time.Second))
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return 0, errf(contract.CodeValidationFailed, "constraints.%s must be a number of seconds", key)
		}
		return constraintDuration(key, f)
	case int:
		return constraintDuration(key, float64(x))
	default:
		return 0, errf(contract.CodeValidationFailed, "constraints.%s must be a TimeSpan string or a number of seconds", key)
	}
	if d < time.Millisecond || d > 24*time.Hour {
		return 0, errf(contract.CodeValidationFailed, "constraints.%s must be between 1ms and 24h", key)
	}
	return d, nil
}

// buildPlan lays out the steps of a validated request (CONTRACT §7 as
// amended by DESIGN decision 7).
func buildPlan(id string, req contract.CreatePlanRequest, agents []string, stepTimeout, planTimeout time.Duration, now time.Time) contract.OrchestrationPlan {
	goal := strings.TrimSpace(req.Goal)
	n, m := len(agents), req.MaxSteps
	var steps []contract.OrchestrationStep
	add := func(agent, task string, deps []string, input contract.Map, parallel bool) {
		order := len(steps) + 1
		t := timingFor(req.Strategy, order)
		if stepTimeout > 0 {
			t.timeout = stepTimeout
		}
		steps = append(steps, contract.OrchestrationStep{
			Order: order, AgentID: agent, AssignedAgentID: agent, Task: task,
			DependsOn: deps, Input: input, Timeout: contract.TimeSpan(t.timeout),
			ExpectedDuration: contract.TimeSpan(t.expected), CanRunInParallel: parallel,
			Description: task,
		})
	}
	goalInput := func() contract.Map { return contract.Map{"goal": goal} }
	prev := func(i int) []string {
		if i == 1 {
			return []string{}
		}
		return []string{strconv.Itoa(i - 1)}
	}
	switch req.Strategy {
	case contract.StrategySequential:
		for i := 1; i <= min(m, n); i++ {
			add(agents[i-1], fmt.Sprintf("Step %d: Process part of goal '%s'", i, goal), prev(i), goalInput(), false)
		}
	case contract.StrategyParallel:
		for i := 1; i <= min(m, n); i++ {
			add(agents[i-1], fmt.Sprintf("Parallel step %d: Process part of goal '%s'", i, goal), []string{}, goalInput(), true)
		}
	case contract.StrategyAdaptive:
		add(agents[0], AnalysisTask, []string{}, contract.Map{"goal": goal, "availableAgents": agents}, false)
		for i := 2; i <= min(m, n+1); i++ {
			add(agents[(i-2)%n], fmt.Sprintf("Adaptive step %d: Execute part of goal '%s'", i, goal), []string{"1"}, goalInput(), i >= 3)
		}
	case contract.StrategyRoundRobin:
		for i := 1; i <= m; i++ {
			add(agents[(i-1)%n], fmt.Sprintf("Round %d: Advance goal '%s' building on the previous round", i, goal), prev(i), goalInput(), false)
		}
	}
	constraints := req.Constraints
	if constraints == nil {
		constraints = contract.Map{}
	}
	return contract.OrchestrationPlan{
		ID:    id,
		Steps: steps,
		SharedContext: contract.Map{
			"originalRequest": contract.OrchestrationRequest{
				Goal: goal, AvailableAgentIDs: agents, Strategy: req.Strategy,
				Constraints: constraints, MaxSteps: m, Timeout: contract.TimeSpan(planTimeout),
			},
			"createdAt": contract.DateTime(now),
		},
		RequiredAgents: requiredAgents(steps),
		Goal:           goal,
		Strategy:       req.Strategy,
		Name:           "Plan for: " + goal,
	}
}

// requiredAgents lists the distinct assignees in step order.
func requiredAgents(steps []contract.OrchestrationStep) []string {
	seen := map[string]bool{}
	out := []string{}
	for _, s := range steps {
		if !seen[s.AgentID] {
			seen[s.AgentID] = true
			out = append(out, s.AgentID)
		}
	}
	return out
}

// stepGraph is the per-step execution bookkeeping derived from dependsOn.
type stepGraph struct {
	deps map[int][]int // step → steps it waits for
	next map[int][]int // step → steps waiting for it
}

// graphOf indexes the dependencies of steps; it rejects references to
// unknown or later steps, which also rules out cycles.
func graphOf(steps []contract.OrchestrationStep) (stepGraph, error) {
	g := stepGraph{deps: map[int][]int{}, next: map[int][]int{}}
	for i, s := range steps {
		if s.Order != i+1 {
			return g, fmt.Errorf("step %d has order %d", i+1, s.Order)
		}
		seen := map[int]bool{}
		for _, d := range s.DependsOn {
			o, err := strconv.Atoi(strings.TrimSpace(d))
			if err != nil || o < 1 || o >= s.Order {
				return g, fmt.Errorf("step %d depends on %q, which is not an earlier step", s.Order, d)
			}
			if !seen[o] {
				seen[o] = true
				g.deps[s.Order] = append(g.deps[s.Order], o)
				g.next[o] = append(g.next[o], s.Order)
			}
		}
	}
	return g, nil
}

// stepFields returns the plan hash fields describing steps (definition,
// dependencies, dependants, unfinished dependency count, state pending).
func stepFields(steps []contract.OrchestrationStep, g stepGraph) ([]any, error) {
	var f []any
	for _, s := range steps {
		def, err := json.Marshal(s)
		if err != nil {
			return nil, fmt.Errorf("encode step %d: %w", s.Order, err)
		}
		p := stepPrefix(s.Order)
		f = append(f, p+"def", def, p+"deps", joinInts(g.deps[s.Order]), p+"next", joinInts(g.next[s.Order]),
			p+"left", len(g.deps[s.Order]), p+"state", statePending)
	}
	return f, nil
}

func stepPrefix(order int) string { return "s:" + strconv.Itoa(order) + ":" }

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

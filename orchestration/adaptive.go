package orchestration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// adaptiveStep is one step of the JSON plan Adaptive's analysis step may
// return. Only agentId and task are required.
type adaptiveStep struct {
	AgentID          string             `json:"agentId"`
	Task             string             `json:"task"`
	Name             string             `json:"name"`
	Description      string             `json:"description"`
	DependsOn        []json.RawMessage  `json:"dependsOn"`
	CanRunInParallel *bool              `json:"canRunInParallel"`
	Timeout          *contract.TimeSpan `json:"timeout"`
}

// adaptivePlan accepts {"steps":[...]} or a bare array of steps.
type adaptivePlan struct {
	Steps []adaptiveStep `json:"steps"`
}

// extractJSON finds the JSON value in an agent's output: the whole output,
// the body of a ``` fence, or the span from the first { or [ to the last
// matching bracket.
func extractJSON(out string) string {
	s := strings.TrimSpace(out)
	if i := strings.Index(s, "```"); i >= 0 {
		rest := s[i+3:]
		if nl := strings.IndexByte(rest, '\n'); nl >= 0 {
			rest = rest[nl+1:]
		}
		if j := strings.Index(rest, "```"); j >= 0 {
			return strings.TrimSpace(rest[:j])
		}
	}
	start := strings.IndexAny(s, "{[")
	if start < 0 {
		return ""
	}
	closer := byte('}')
	if s[start] == '[' {
		closer = ']'
	}
	end := strings.LastIndexByte(s, closer)
	if end < start {
		return ""
	}
	return s[start : end+1]
}

// adaptiveReplacement turns the analysis step's output into the steps that
// replace the template's steps 2..N. The returned steps are numbered from 2
// and every dependency points to an earlier step. A step without dependsOn
// waits for the analysis step when it may run in parallel, else for the
// step before it. It returns a reason instead when the output is not a
// usable plan; the engine then keeps the template (DESIGN decision 7).
func adaptiveReplacement(output string, plan contract.OrchestrationPlan, allowed []string, maxSteps int, stepTimeout time.Duration) ([]contract.OrchestrationStep, string) {
	raw := extractJSON(output)
	if raw == "" {
		return nil, "the analysis output holds no JSON plan"
	}
	var p adaptivePlan
	if strings.HasPrefix(raw, "[") {
		if err := json.Unmarshal([]byte(raw), &p.Steps); err != nil {
			return nil, "the analysis output is not a valid JSON plan: " + err.Error()
		}
	} else if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return nil, "the analysis output is not a valid JSON plan: " + err.Error()
	}
	if len(p.Steps) == 0 {
		return nil, "the JSON plan has no steps"
	}
	if len(p.Steps) > maxSteps-1 {
		p.Steps = p.Steps[:maxSteps-1] // dependencies only point backwards, so a prefix stays valid
	}
	ok := map[string]bool{}
	for _, a := range allowed {
		ok[a] = true
	}
	goal := plan.Goal
	steps := []contract.OrchestrationStep{plan.Steps[0]}
	for i, s := range p.Steps {
		order := i + 2
		s.AgentID, s.Task = strings.TrimSpace(s.AgentID), strings.TrimSpace(s.Task)
		if s.Task == "" {
			return nil, fmt.Sprintf("JSON plan step %d has no task", order)
		}
		if !ok[s.AgentID] {
			return nil, fmt.Sprintf("JSON plan step %d names agent %q, which is not available to this plan", order, s.AgentID)
		}
		parallel := s.CanRunInParallel != nil && *s.CanRunInParallel
		deps := []string{}
		for _, d := range s.DependsOn {
			var v any
			if err := json.Unmarshal(d, &v); err != nil {
				return nil, fmt.Sprintf("JSON plan step %d has an invalid dependency", order)
			}
			var o int
			switch x := v.(type) {
			case float64:
				o = int(x)
			case string:
				n, err := strconv.Atoi(strings.TrimSpace(x))
				if err != nil {
					return nil, fmt.Sprintf("JSON plan step %d has an invalid dependency %q", order, x)
				}
				o = n
			default:
				return nil, fmt.Sprintf("JSON plan step %d has an invalid dependency", order)
			}
			if o < 1 || o >= order {
				return nil, fmt.Sprintf("JSON plan step %d depends on %d, which is not an earlier step", order, o)
			}
			deps = append(deps, strconv.Itoa(o))
		}
		if s.DependsOn == nil {
			if parallel {
				deps = []string{"1"}
			} else {
				deps = []string{strconv.Itoa(order - 1)}
			}
		}
		t := timingFor(contract.StrategyAdaptive, order)
		if stepTimeout > 0 {
			t.timeout = stepTimeout
		}
		if s.Timeout != nil && *s.Timeout > 0 {
			t.timeout = time.Duration(*s.Timeout)
		}
		desc := s.Description
		if desc == "" {
			desc = s.Task
		}
		steps = append(steps, contract.OrchestrationStep{
			Order: order, Name: s.Name, AgentID: s.AgentID, AssignedAgentID: s.AgentID, Task: s.Task,
			DependsOn: deps, Input: contract.Map{"goal": goal}, Timeout: contract.TimeSpan(t.timeout),
			ExpectedDuration: contract.TimeSpan(t.expected), CanRunInParallel: parallel, Description: desc,
		})
	}
	return steps, ""
}

package orchestration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func scripted3() map[string]Agent {
	return map[string]Agent{"a": &Scripted{Chunks: 3}, "b": &Scripted{Chunks: 2}, "c": &Scripted{}}
}

// outputsByStep maps step order to output, checking there is one result
// per step.
func outputsByStep(t *testing.T, res contract.OrchestrationResult) map[int]string {
	t.Helper()
	out := map[int]string{}
	for _, r := range res.StepResults {
		if _, dup := out[r.StepOrder]; dup {
			t.Fatalf("step %d has two results", r.StepOrder)
		}
		out[r.StepOrder] = r.Output
	}
	return out
}

// expectOutput recomputes what the scripted agent must have answered for a
// step given its dependencies' outputs.
func expectOutput(plan contract.OrchestrationPlan, order int, outs map[int]string) string {
	s := plan.Steps[order-1]
	prev := map[string]string{}
	for _, d := range s.DependsOn {
		var o int
		fmt.Sscan(d, &o)
		prev[d] = outs[o]
	}
	return ScriptedOutput(AgentRequest{AgentID: s.AgentID, Task: s.Task, PreviousOutputs: prev})
}

func TestSequential(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 4), nil)
		plan, res := v.run(e, request(contract.StrategySequential, 10, "a", "b", "c"))

		if len(plan.Steps) != 3 {
			t.Fatalf("steps = %d", len(plan.Steps))
		}
		for i, s := range plan.Steps {
			wantDeps := []string{}
			if i > 0 {
				wantDeps = []string{fmt.Sprint(i)}
			}
			if s.Order != i+1 || s.AgentID != []string{"a", "b", "c"}[i] || !slices.Equal(s.DependsOn, wantDeps) ||
				s.Timeout != contract.TimeSpan(5*time.Minute) || s.CanRunInParallel {
				t.Errorf("step %d = %+v", i+1, s)
			}
		}
		if !res.Success {
			t.Fatalf("result = %+v", res)
		}
		outs := outputsByStep(t, res)
		for o := 1; o <= 3; o++ {
			if want := expectOutput(plan, o, outs); outs[o] != want {
				t.Errorf("step %d output %q, want %q", o, outs[o], want)
			}
		}
		if !strings.Contains(outs[3], Digest(outs[2])) {
			t.Errorf("step 3 was not fed step 2's output: %q", outs[3])
		}
		if res.FinalOutput != outs[3] {
			t.Errorf("finalOutput %q, want the last output", res.FinalOutput)
		}
		got := describe(v.sessions.planEvents(plan.ID))
		want := []string{"created", "start:1", "step:1", "end:1", "start:2", "step:2", "end:2", "start:3", "step:3", "final:3", "completed"}
		if !slices.Equal(got, want) {
			t.Errorf("events\n got %v\nwant %v", got, want)
		}
		var pct []float64
		for _, ev := range v.sessions.planEvents(plan.ID) {
			if p, ok := ev.Payload.(contract.OrchestrationProgress); ok {
				pct = append(pct, p.PercentComplete)
				if p.TotalSteps != 3 {
					t.Errorf("totalSteps = %d", p.TotalSteps)
				}
			}
		}
		if !slices.IsSorted(pct) || pct[len(pct)-1] != 100 {
			t.Errorf("percentComplete sequence %v", pct)
		}
		for _, ev := range v.sessions.planEvents(plan.ID) {
			if ev.Caller != testCaller || ev.Session != testSession {
				t.Errorf("event %s to %v/%s", ev.Target, ev.Caller, ev.Session)
			}
		}
		st, err := e.GetPlan(context.Background(), testCaller, plan.ID)
		if err != nil || st.Status != contract.PlanStatusCompleted || st.PercentComplete != 100 || st.Result == nil || len(st.Steps) != 3 {
			t.Errorf("GetPlan = %+v, %v", st, err)
		}
		for _, s := range st.Steps {
			if s.State != contract.StepStateDone || s.Attempts != 1 || s.Result == nil || s.Result.OutputData["chunks"] == nil {
				t.Errorf("step state %+v", s)
			}
		}
	})
}

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

// checkEvents asserts the invariants every plan's event stream keeps: the
// plan is announced first, each step has exactly one start progress and one
// StepCompleted (and, except the step that finished the plan, one end
// progress, after its StepCompleted), and the plan ends with a single 100%
// progress and OrchestrationCompleted.
func checkEvents(t *testing.T, evs []event, steps int) {
	t.Helper()
	d := describe(evs)
	if len(d) < 3 || d[0] != "created" || d[len(d)-1] != "completed" || !strings.HasPrefix(d[len(d)-2], "final:") {
		t.Fatalf("events %v", d)
	}
	count := map[string]int{}
	for _, x := range d {
		count[x]++
	}
	ends := 0
	for o := 1; o <= steps; o++ {
		if count[fmt.Sprintf("start:%d", o)] != 1 || count[fmt.Sprintf("step:%d", o)] != 1 {
			t.Errorf("step %d: start %d, completed %d in %v", o, count[fmt.Sprintf("start:%d", o)], count[fmt.Sprintf("step:%d", o)], d)
		}
		ends += count[fmt.Sprintf("end:%d", o)]
		if count[fmt.Sprintf("end:%d", o)] > 1 {
			t.Errorf("step %d has %d end progress events", o, count[fmt.Sprintf("end:%d", o)])
		}
	}
	if ends != steps-1 {
		t.Errorf("%d end progress events for %d steps: %v", ends, steps, d)
	}
	var last float64
	for _, ev := range evs {
		if p, ok := ev.Payload.(contract.OrchestrationProgress); ok {
			last = p.PercentComplete
		}
	}
	if last != 100 {
		t.Errorf("last percentComplete %v", last)
	}
}

func TestParallel(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		// Each agent takes a while so the steps visibly overlap.
		agents := map[string]Agent{"a": &Scripted{Delay: 150 * time.Millisecond}, "b": &Scripted{Delay: 150 * time.Millisecond}, "c": &Scripted{Delay: 150 * time.Millisecond}}
		v := newEnv(t, b, agents)
		e := v.node(testConfig("n1", 4), nil)
		t0 := time.Now()
		plan, res := v.run(e, request(contract.StrategyParallel, 2, "a", "b", "c"))
		took := time.Since(t0)

		if len(plan.Steps) != 2 { // min(maxSteps, agents)
			t.Fatalf("steps = %d", len(plan.Steps))
		}
		for _, s := range plan.Steps {
			if len(s.DependsOn) != 0 || !s.CanRunInParallel || s.Timeout != contract.TimeSpan(10*time.Minute) ||
				s.ExpectedDuration != contract.TimeSpan(5*time.Minute) || !strings.HasPrefix(s.Task, "Parallel step") {
				t.Errorf("step %+v", s)
			}
		}
		if took > 1200*time.Millisecond {
			t.Errorf("two 150ms steps took %v: not run in parallel", took)
		}
		if !res.Success || len(res.StepResults) != 2 {
			t.Fatalf("result %+v", res)
		}
		outs := outputsByStep(t, res)
		for o := 1; o <= 2; o++ {
			if outs[o] != expectOutput(plan, o, outs) {
				t.Errorf("step %d output %q", o, outs[o])
			}
			if !strings.Contains(res.FinalOutput, fmt.Sprintf("### Step %d (%s)\n%s", o, plan.Steps[o-1].AgentID, outs[o])) {
				t.Errorf("finalOutput lacks labelled step %d: %q", o, res.FinalOutput)
			}
		}
		if res.StepResults[0].StepOrder != 1 || res.StepResults[1].StepOrder != 2 {
			t.Errorf("results not in plan order")
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 2)
	})
}

func TestAdaptiveTemplate(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 4), nil)
		plan, res := v.run(e, request(contract.StrategyAdaptive, 10, "a", "b", "c"))

		wantAgents := []string{"a", "a", "b", "c"} // step 1 → A[0]; steps 2..n+1 → A[(i-2) mod n]
		if len(plan.Steps) != 4 {
			t.Fatalf("steps = %d", len(plan.Steps))
		}
		for i, s := range plan.Steps {
			if s.AgentID != wantAgents[i] {
				t.Errorf("step %d agent %s", i+1, s.AgentID)
			}
			if i == 0 {
				if s.Task != AnalysisTask || len(s.DependsOn) != 0 || s.Input["availableAgents"] == nil || s.Timeout != contract.TimeSpan(5*time.Minute) {
					t.Errorf("analysis step %+v", s)
				}
				continue
			}
			if !slices.Equal(s.DependsOn, []string{"1"}) || s.CanRunInParallel != (i >= 2) || s.Timeout != contract.TimeSpan(8*time.Minute) {
				t.Errorf("step %d %+v", i+1, s)
			}
		}
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		outs := outputsByStep(t, res)
		for o := 1; o <= 4; o++ {
			if outs[o] != expectOutput(plan, o, outs) {
				t.Errorf("step %d output %q", o, outs[o])
			}
		}
		if res.StepResults[0].OutputData["adaptivePlan"] != "template" {
			t.Errorf("analysis outputData %v", res.StepResults[0].OutputData)
		}
		for o := 2; o <= 4; o++ { // fan-out after the analysis: labelled outputs
			if !strings.Contains(res.FinalOutput, outs[o]) {
				t.Errorf("finalOutput lacks step %d", o)
			}
		}
		if strings.Contains(res.FinalOutput, "### Step 1 ") {
			t.Errorf("finalOutput includes the analysis step")
		}
		assertAfter(t, describe(v.sessions.planEvents(plan.ID)), "step:1", "start:2", "start:3", "start:4")
		checkEvents(t, v.sessions.planEvents(plan.ID), 4)
	})
}

func TestAdaptiveJSONPlan(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		jsonPlan := "Here is the plan:\n```json\n" +
			`{"steps":[{"agentId":"b","task":"research the topic"},` +
			`{"agentId":"c","task":"draft","canRunInParallel":true},` +
			`{"agentId":"a","task":"merge","dependsOn":["2","3"]}]}` + "\n```"
		agents := scripted3()
		agents["a"] = &Scripted{AdaptivePlan: jsonPlan}
		v := newEnv(t, b, agents)
		e := v.node(testConfig("n1", 4), nil)
		plan, res := v.run(e, request(contract.StrategyAdaptive, 10, "a", "b", "c"))
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		if len(plan.Steps) != 4 { // the template, as returned by CreatePlan
			t.Fatalf("template steps = %d", len(plan.Steps))
		}
		st, err := e.GetPlan(context.Background(), testCaller, plan.ID)
		if err != nil {
			t.Fatal(err)
		}
		got := st.Plan.Steps
		type shape struct {
			agent, task string
			deps        []string
		}
		want := []shape{{"a", AnalysisTask, nil}, {"b", "research the topic", []string{"1"}}, {"c", "draft", []string{"1"}}, {"a", "merge", []string{"2", "3"}}}
		if len(got) != len(want) {
			t.Fatalf("replaced plan has %d steps: %+v", len(got), got)
		}
		for i, w := range want {
			if got[i].AgentID != w.agent || got[i].Task != w.task || !slices.Equal(got[i].DependsOn, w.deps) && len(w.deps) > 0 {
				t.Errorf("step %d = %+v, want %+v", i+1, got[i], w)
			}
		}
		outs := outputsByStep(t, res)
		if outs[1] != jsonPlan {
			t.Errorf("analysis output %q", outs[1])
		}
		for o := 2; o <= 4; o++ {
			if outs[o] != expectOutput(st.Plan, o, outs) {
				t.Errorf("step %d output %q, want %q", o, outs[o], expectOutput(st.Plan, o, outs))
			}
		}
		if res.FinalOutput != outs[4] { // one final step: its output
			t.Errorf("finalOutput %q", res.FinalOutput)
		}
		if res.StepResults[0].OutputData["adaptivePlan"] != "replaced" {
			t.Errorf("outputData %v", res.StepResults[0].OutputData)
		}
		d := describe(v.sessions.planEvents(plan.ID))
		assertAfter(t, d, "step:1", "start:2", "start:3")
		assertAfter(t, d, "step:2", "start:4")
		assertAfter(t, d, "step:3", "start:4")
		if !slices.Contains(d, "updated") || slices.Index(d, "updated") > slices.Index(d, "step:1") {
			t.Errorf("OrchestrationPlanUpdated missing or late: %v", d)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 4)
	})
}

func TestAdaptiveInvalidJSONPlanFallsBack(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		agents := scripted3()
		agents["a"] = &Scripted{AdaptivePlan: `{"steps":[{"agentId":"zed","task":"x"}]}`}
		v := newEnv(t, b, agents)
		e := v.node(testConfig("n1", 2), nil)
		plan, res := v.run(e, request(contract.StrategyAdaptive, 3, "a", "b", "c"))
		if !res.Success || len(res.StepResults) != 3 {
			t.Fatalf("result %+v", res)
		}
		if r := res.StepResults[0].OutputData; r["adaptivePlan"] != "template" || !strings.Contains(fmt.Sprint(r["adaptiveReason"]), "zed") {
			t.Errorf("outputData %v", r)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 3)
	})
}

func TestRoundRobin(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 3), nil)
		plan, res := v.run(e, request(contract.StrategyRoundRobin, 5, "a", "b"))
		want := []string{"a", "b", "a", "b", "a"}
		if len(plan.Steps) != 5 {
			t.Fatalf("steps = %d", len(plan.Steps))
		}
		for i, s := range plan.Steps {
			if s.AgentID != want[i] || (i > 0 && !slices.Equal(s.DependsOn, []string{fmt.Sprint(i)})) {
				t.Errorf("step %d %+v", i+1, s)
			}
		}
		if !slices.Equal(plan.RequiredAgents, []string{"a", "b"}) {
			t.Errorf("requiredAgents %v", plan.RequiredAgents)
		}
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		outs := outputsByStep(t, res)
		for o := 1; o <= 5; o++ {
			if outs[o] != expectOutput(plan, o, outs) {
				t.Errorf("step %d output %q", o, outs[o])
			}
		}
		if res.FinalOutput != outs[5] {
			t.Errorf("finalOutput %q", res.FinalOutput)
		}
		got := describe(v.sessions.planEvents(plan.ID))
		want2 := []string{"created"}
		for o := 1; o <= 5; o++ {
			want2 = append(want2, fmt.Sprintf("start:%d", o), fmt.Sprintf("step:%d", o))
			if o < 5 {
				want2 = append(want2, fmt.Sprintf("end:%d", o))
			}
		}
		want2 = append(want2, "final:5", "completed")
		if !slices.Equal(got, want2) {
			t.Errorf("events\n got %v\nwant %v", got, want2)
		}
	})
}

func TestSendOrchestrationMessage(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 2), nil)
		plan, err := e.SendOrchestrationMessage(context.Background(), testCaller, contract.OrchestrationMessageRequest{
			SessionID: testSession, Message: "plan a trip", AgentIDs: []string{"a", "b"}, Strategy: contract.StrategySequential})
		if err != nil {
			t.Fatal(err)
		}
		res := v.await(plan.ID, 10*time.Second)
		if !res.Success || len(res.StepResults) != 2 || plan.Goal != "plan a trip" {
			t.Fatalf("result %+v", res)
		}
		if err := e.ExecutePlan(context.Background(), testCaller, plan.ID); CodeOf(err) != contract.CodeConflict {
			t.Errorf("second ExecutePlan: %v", err)
		}
		if err := e.CancelExecution(context.Background(), testCaller, plan.ID); CodeOf(err) != contract.CodeConflict {
			t.Errorf("cancel of a finished plan: %v", err)
		}
	})
}

// assertAfter checks that every one of later comes after first in events.
func assertAfter(t *testing.T, events []string, first string, later ...string) {
	t.Helper()
	i := slices.Index(events, first)
	for _, l := range later {
		if j := slices.Index(events, l); i < 0 || j < i {
			t.Errorf("%s is not after %s: %v", l, first, events)
		}
	}
}

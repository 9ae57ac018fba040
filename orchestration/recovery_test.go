package orchestration

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// crashConfig makes reclaiming quick.
func crashConfig(node string, workers int) Config {
	c := testConfig(node, workers)
	c.VisibilityTimeout = 600 * time.Millisecond
	c.ClaimRefresh = 150 * time.Millisecond
	c.ReclaimInterval = 50 * time.Millisecond
	return c
}

// assertOnce checks that a sequential plan's events hold every callback
// exactly once and in order, and that each step has one result.
func assertOnce(t *testing.T, v *env, e *Engine, plan contract.OrchestrationPlan, res contract.OrchestrationResult) {
	t.Helper()
	got := describe(v.sessions.planEvents(plan.ID))
	want := []string{"created", "start:1", "step:1", "end:1", "start:2", "step:2", "end:2", "start:3", "step:3", "final:3", "completed"}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %v\nwant %v", got, want)
	}
	if !res.Success || len(res.StepResults) != 3 {
		t.Fatalf("result %+v", res)
	}
	outs := outputsByStep(t, res)
	for o := 1; o <= 3; o++ {
		if outs[o] != expectOutput(plan, o, outs) {
			t.Errorf("step %d output %q", o, outs[o])
		}
	}
	if n := len(v.sessions.sessionEvents(testSession, contract.TargetOrchestrationCompleted)); n != 1 {
		t.Errorf("%d OrchestrationCompleted", n)
	}
	p, err := e.Backlog(context.Background())
	if err != nil || p.Pending != 0 {
		t.Errorf("pending jobs left: %+v %v", p, err)
	}
}

// Acceptance 3: a worker dies in the middle of a step (its consumer stops
// without acknowledging); after the visibility timeout another node's
// worker runs the step again and the plan completes with every result and
// callback exactly once.
func TestCrashDuringStep(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		stuck := newBlocking()
		catA := NewMemoryCatalog()
		catA.Add(contract.AgentInfo{ID: "a"}, &Scripted{})
		catA.Add(contract.AgentInfo{ID: "b"}, stuck)
		catA.Add(contract.AgentInfo{ID: "c"}, &Scripted{})
		a := v.node(crashConfig("node-a", 1), catA)

		plan, err := a.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 10, "a", "b", "c"))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		if got := receive(t, stuck.started, 20*time.Second, "the stuck step to start"); got != 2 {
			t.Fatalf("stuck agent started step %d", got)
		}
		a.crash()
		crashedAt := time.Now()

		node := v.node(crashConfig("node-b", 2), nil) // healthy agents
		res := v.await(plan.ID, 10*time.Second)
		if took := time.Since(crashedAt); took < 400*time.Millisecond {
			t.Errorf("step taken over after %v, before the visibility timeout", took)
		}
		assertOnce(t, v, node, plan, res)
		st, _ := node.GetPlan(context.Background(), testCaller, plan.ID)
		if st.Steps[1].Attempts != 2 {
			t.Errorf("step 2 attempts = %d, want 2 (the crashed one counts)", st.Steps[1].Attempts)
		}
		if node.Stats().Reclaimed < 1 {
			t.Errorf("nothing reclaimed: %+v", node.Stats())
		}
		if a.Stats().StepsSucceeded != 1 || node.Stats().StepsSucceeded != 2 {
			t.Errorf("steps recorded: crashed node %d, survivor %d", a.Stats().StepsSucceeded, node.Stats().StepsSucceeded)
		}
	})
}

// A worker dies after recording a step and before sending its callbacks:
// the redelivered job sends them (once) and releases the next step.
func TestCrashAfterRecord(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		a := v.node(crashConfig("node-a", 1), nil, func(e *Engine) {
			e.afterRecord = func(_ string, step int) {
				if step == 2 {
					e.crashed.Store(true) // the process "dies" here; crash() below reaps it
				}
			}
		})
		plan, err := a.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 10, "a", "b", "c"))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "step 2 recorded", func() bool { return a.crashed.Load() })
		a.crash()
		node := v.node(crashConfig("node-b", 2), nil)
		res := v.await(plan.ID, 10*time.Second)
		assertOnce(t, v, node, plan, res)
		if st, _ := node.GetPlan(context.Background(), testCaller, plan.ID); st.Steps[1].Attempts != 1 {
			t.Errorf("step 2 ran %d times; a recorded step must not run again", st.Steps[1].Attempts)
		}
	})
}

// A long step keeps its claim: with a visibility timeout far below the
// step's duration, a second node never takes it over.
func TestLongStepKeepsClaim(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{Delay: 1500 * time.Millisecond}})
		a := v.node(crashConfig("node-a", 1), nil)
		other := v.node(crashConfig("node-b", 1), nil)
		plan, res := v.run(a, request(contract.StrategySequential, 10, "a"))
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		if r := other.Stats().Reclaimed + a.Stats().Reclaimed; r != 0 {
			t.Errorf("%d reclaims of a live job", r)
		}
		if st, _ := a.GetPlan(context.Background(), testCaller, plan.ID); st.Steps[0].Attempts != 1 {
			t.Errorf("attempts = %d", st.Steps[0].Attempts)
		}
	})
}

// Shutdown with a deadline releases a running step; another node takes it
// at once, without waiting for the visibility timeout.
func TestShutdownReleasesRunningStep(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		stuck := newBlocking()
		catA := NewMemoryCatalog()
		catA.Add(contract.AgentInfo{ID: "a"}, stuck)
		cfg := testConfig("node-a", 1)
		cfg.VisibilityTimeout = 30 * time.Second // a reclaim would make the test time out
		cfg.ClaimRefresh = 10 * time.Second
		a := v.node(cfg, catA)
		plan, err := a.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 10, "a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		receive(t, stuck.started, 20*time.Second, "the stuck step to start")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if err := a.Shutdown(ctx); err == nil {
			t.Errorf("Shutdown returned nil though a job had to be released")
		}
		if a.Stats().Released != 1 {
			t.Errorf("released = %d", a.Stats().Released)
		}
		cfgB := testConfig("node-b", 1)
		cfgB.VisibilityTimeout = 30 * time.Second
		cfgB.ClaimRefresh = 10 * time.Second
		node := v.node(cfgB, nil)
		res := v.await(plan.ID, 5*time.Second)
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		st, _ := node.GetPlan(context.Background(), testCaller, plan.ID)
		if st.Steps[0].Attempts != 1 {
			t.Errorf("attempts = %d: a released attempt must not count", st.Steps[0].Attempts)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 1)
	})
}

package orchestration

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func TestRetryThenSuccess(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		flaky := &Scripted{FailAttempts: 1}
		v := newEnv(t, b, map[string]Agent{"a": flaky, "b": flaky})
		e := v.node(testConfig("n1", 2), nil)
		plan, res := v.run(e, request(contract.StrategySequential, 10, "a", "b"))
		if !res.Success {
			t.Fatalf("result %+v", res)
		}
		st, err := e.GetPlan(context.Background(), testCaller, plan.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Steps {
			if s.Attempts != 2 || s.Result.OutputData["attempt"] != 2.0 {
				t.Errorf("step %d: %d attempts, result %+v", s.Order, s.Attempts, s.Result)
			}
		}
		if got := e.Stats().Retries; got != 2 {
			t.Errorf("retries = %d", got)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 2) // a retry sends no second start
	})
}

func TestExhaustedAttemptsDeadLetter(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{FailAttempts: 99}, "b": &Scripted{}})
		cfg := testConfig("n1", 2)
		cfg.MaxAttempts = 2
		e := v.node(cfg, nil)
		plan, res := v.run(e, request(contract.StrategySequential, 10, "a", "b"))
		if res.Success || len(res.StepResults) != 1 {
			t.Fatalf("result %+v", res)
		}
		r := res.StepResults[0]
		if r.Success || !strings.Contains(r.Error, "failed after 2 attempts") || !strings.Contains(r.Error, "scripted failure") {
			t.Errorf("step result %+v", r)
		}
		if !strings.HasPrefix(res.FinalOutput, "Orchestration failed: Step 1 (a)") {
			t.Errorf("finalOutput %q", res.FinalOutput)
		}
		dead, err := v.rdb.XRange(context.Background(), e.keys.part(plan.ID).dead, "-", "+").Result()
		if err != nil || len(dead) != 1 || dead[0].Values["plan"] != plan.ID || dead[0].Values["step"] != "1" {
			t.Fatalf("dead letters %v %v", dead, err)
		}
		st, _ := e.GetPlan(context.Background(), testCaller, plan.ID)
		if st.Status != contract.PlanStatusFailed || st.Steps[0].State != contract.StepStateFailed || st.Steps[1].State != contract.StepStateSkipped {
			t.Errorf("state %+v", st)
		}
		errs := v.receiveErrors() // sent after OrchestrationCompleted
		if len(errs) != 1 || errs[0].Payload.(contract.ErrorResponse).Code != contract.CodeProcessingError ||
			!strings.HasPrefix(errs[0].Payload.(contract.ErrorResponse).Error, "Orchestration failed:") {
			t.Errorf("ReceiveError %+v", errs)
		}
		// The completion comes before the error, and is the plan's last event.
		d := describe(v.sessions.planEvents(plan.ID))
		if d[len(d)-1] != "completed" || d[len(d)-2] != "final:1" {
			t.Errorf("events %v", d)
		}
	})
}

// failing always fails, permanently.
type failing struct{}

func (failing) Run(context.Context, AgentRequest, func(string)) (AgentResult, error) {
	return AgentResult{}, Permanent(errors.New("model refused"))
}

func TestParallelContinuesAfterFailure(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{}, "b": failing{}, "c": &Scripted{}})
		e := v.node(testConfig("n1", 3), nil)
		plan, res := v.run(e, request(contract.StrategyParallel, 10, "a", "b", "c"))
		if res.Success || len(res.StepResults) != 3 {
			t.Fatalf("result %+v", res)
		}
		for _, r := range res.StepResults {
			if r.Success != (r.StepOrder != 2) {
				t.Errorf("step %d success %v: %s", r.StepOrder, r.Success, r.Error)
			}
		}
		if res.StepResults[1].Error != "Step 2 failed: model refused" {
			t.Errorf("error %q", res.StepResults[1].Error)
		}
		if e.Stats().Retries != 0 {
			t.Errorf("a permanent error was retried")
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 3)
	})
}

// blocking runs until its context ends and reports when it started and
// how long it took to notice cancellation.
type blocking struct {
	started  chan int
	mu       sync.Mutex
	stopped  map[int]time.Time
	returned atomic.Int32
}

func newBlocking() *blocking {
	return &blocking{started: make(chan int, 16), stopped: map[int]time.Time{}}
}

func (b *blocking) Run(ctx context.Context, req AgentRequest, _ func(string)) (AgentResult, error) {
	b.started <- req.StepOrder
	<-ctx.Done()
	b.mu.Lock()
	b.stopped[req.StepOrder] = time.Now()
	b.mu.Unlock()
	b.returned.Add(1)
	return AgentResult{}, ctx.Err()
}

func (b *blocking) stoppedAt(step int) (time.Time, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.stopped[step]
	return t, ok
}

func TestCancelFromAnotherNode(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		agent := newBlocking()
		v := newEnv(t, b, map[string]Agent{"a": agent, "b": agent})
		worker := v.node(testConfig("worker", 2), nil)
		api := v.node(testConfig("api", 0), nil) // an API-only node
		plan, err := worker.CreatePlan(context.Background(), testCaller, request(contract.StrategyParallel, 10, "a", "b"))
		if err != nil {
			t.Fatal(err)
		}
		if err := worker.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		receive(t, agent.started, 20*time.Second, "a step to start")
		receive(t, agent.started, 20*time.Second, "a step to start")
		t0 := time.Now()
		if err := api.CancelExecution(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		res := v.await(plan.ID, 5*time.Second)
		waitFor(t, 2*time.Second, "agents to stop", func() bool { return agent.returned.Load() == 2 })
		for o := 1; o <= 2; o++ {
			at, _ := agent.stoppedAt(o)
			if d := at.Sub(t0); d > time.Second {
				t.Errorf("step %d stopped %v after the cancel", o, d)
			}
		}
		if res.Success || res.FinalOutput != "Orchestration was cancelled" || len(res.StepResults) != 2 {
			t.Fatalf("result %+v", res)
		}
		for _, r := range res.StepResults {
			if r.Success || r.Error != "Step "+string(rune('0'+r.StepOrder))+" was cancelled" {
				t.Errorf("step result %+v", r)
			}
		}
		st, _ := api.GetPlan(context.Background(), testCaller, plan.ID)
		if st.Status != contract.PlanStatusCancelled || st.Steps[0].State != contract.StepStateCancelled {
			t.Errorf("state %+v", st)
		}
		if n := len(v.sessions.sessionEvents(testSession, contract.TargetReceiveError)); n != 0 {
			t.Errorf("%d ReceiveError for a cancellation", n)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 2)
		// The stopped workers dropped their jobs: nothing is left pending.
		waitFor(t, 2*time.Second, "jobs acknowledged", func() bool {
			b, err := worker.Backlog(context.Background())
			return err == nil && b.Pending == 0
		})
		if err := api.CancelExecution(context.Background(), testCaller, plan.ID); CodeOf(err) != contract.CodeConflict {
			t.Errorf("second cancel: %v", err)
		}
	})
}

func TestCancelBeforeExecution(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 1), nil)
		plan, err := e.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 10, "a"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.CancelExecution(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		res := v.await(plan.ID, 2*time.Second)
		if res.Success || res.FinalOutput != "Orchestration was cancelled" || len(res.StepResults) != 0 {
			t.Errorf("result %+v", res)
		}
		if err := e.ExecutePlan(context.Background(), testCaller, plan.ID); CodeOf(err) != contract.CodeConflict {
			t.Errorf("execute after cancel: %v", err)
		}
	})
}

func TestStepTimeout(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		agent := newBlocking()
		v := newEnv(t, b, map[string]Agent{"a": agent, "b": &Scripted{}})
		e := v.node(testConfig("n1", 2), nil)
		req := request(contract.StrategySequential, 10, "a", "b")
		req.Constraints = contract.Map{"stepTimeout": "00:00:00.3000000"}
		t0 := time.Now()
		plan, res := v.run(e, req)
		if took := time.Since(t0); took > 3*time.Second {
			t.Errorf("took %v", took)
		}
		if plan.Steps[0].Timeout != contract.TimeSpan(300*time.Millisecond) {
			t.Errorf("step timeout %v", plan.Steps[0].Timeout)
		}
		if res.Success || len(res.StepResults) != 1 || res.StepResults[0].Error != "Step 1 timed out after 300ms" {
			t.Fatalf("result %+v", res)
		}
		if e.Stats().Retries != 0 {
			t.Errorf("a timeout was retried")
		}
		errs := v.receiveErrors() // sent after OrchestrationCompleted
		if len(errs) != 1 || !strings.Contains(errs[0].Payload.(contract.ErrorResponse).Error, "timed out after 300ms") {
			t.Errorf("ReceiveError %+v", errs)
		}
	})
}

func TestPlanTimeout(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		slow := &Scripted{Delay: 300 * time.Millisecond}
		v := newEnv(t, b, map[string]Agent{"a": slow, "b": slow, "c": slow})
		e := v.node(testConfig("n1", 2), nil)
		req := request(contract.StrategySequential, 10, "a", "b", "c")
		req.Constraints = contract.Map{"timeout": 0.5} // seconds
		t0 := time.Now()
		plan, res := v.run(e, req)
		if took := time.Since(t0); took > 2*time.Second {
			t.Errorf("took %v", took)
		}
		if res.Success || res.FinalOutput != "Orchestration timed out after 500ms" {
			t.Fatalf("result %+v", res)
		}
		if len(res.StepResults) != 2 || !res.StepResults[0].Success || res.StepResults[1].Success ||
			res.StepResults[1].Error != "Step 2 stopped: Orchestration timed out after 500ms" {
			t.Errorf("step results %+v", res.StepResults)
		}
		errs := v.receiveErrors() // sent after OrchestrationCompleted
		if len(errs) != 1 || errs[0].Payload.(contract.ErrorResponse).Code != contract.CodeTimeout {
			t.Errorf("ReceiveError %+v", errs)
		}
		st, _ := e.GetPlan(context.Background(), testCaller, plan.ID)
		if st.Status != contract.PlanStatusTimedOut || st.Steps[2].State != contract.StepStateSkipped {
			t.Errorf("state %+v", st)
		}
		d := describe(v.sessions.planEvents(plan.ID))
		if d[len(d)-1] != "completed" || d[len(d)-2] != "final:2" {
			t.Errorf("events %v", d)
		}
	})
}

// panicking is an agent with a bug.
type panicking struct{}

func (panicking) Run(context.Context, AgentRequest, func(string)) (AgentResult, error) {
	panic("boom")
}

func TestPanickingAgentFailsItsStep(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": panicking{}})
		e := v.node(testConfig("n1", 1), nil)
		_, res := v.run(e, request(contract.StrategySequential, 10, "a"))
		if res.Success || res.StepResults[0].Error != "Step 1 failed: agent a crashed" {
			t.Fatalf("result %+v", res)
		}
	})
}

// receiveErrors waits for the session's first ReceiveError (a plan sends it
// after its OrchestrationCompleted) and returns all of them.
func (v *env) receiveErrors() []event {
	v.t.Helper()
	waitFor(v.t, 5*time.Second, "a ReceiveError", func() bool {
		return len(v.sessions.sessionEvents(testSession, contract.TargetReceiveError)) > 0
	})
	return v.sessions.sessionEvents(testSession, contract.TargetReceiveError)
}

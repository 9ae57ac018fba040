package orchestration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func TestCreatePlanValidation(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 0), nil)
		v.sessions.forbid["mallory"] = true
		base := func() contract.CreatePlanRequest { return request(contract.StrategySequential, 10, "a", "b") }
		cases := []struct {
			name   string
			mut    func(*contract.CreatePlanRequest)
			caller Caller
			code   string
			msg    string
		}{
			{"empty goal", func(r *contract.CreatePlanRequest) { r.Goal = "  " }, testCaller, contract.CodeValidationFailed, "Goal must not be empty"},
			{"no agents", func(r *contract.CreatePlanRequest) { r.AvailableAgentIDs = nil }, testCaller, contract.CodeValidationFailed, "At least one agent is required"},
			{"blank agents", func(r *contract.CreatePlanRequest) { r.AvailableAgentIDs = []string{" ", ""} }, testCaller, contract.CodeValidationFailed, "At least one agent is required"},
			{"unknown agent", func(r *contract.CreatePlanRequest) { r.AvailableAgentIDs = []string{"a", "ghost"} }, testCaller, contract.CodeAgentNotFound, "Agent ghost not found"},
			{"unknown session", func(r *contract.CreatePlanRequest) { r.SessionID = "nope" }, testCaller, contract.CodeSessionNotFound, "Session nope not found"},
			{"no session", func(r *contract.CreatePlanRequest) { r.SessionID = "" }, testCaller, contract.CodeValidationFailed, "sessionId is required"},
			{"maxSteps 0", func(r *contract.CreatePlanRequest) { r.MaxSteps = 0 }, testCaller, contract.CodeValidationFailed, "maxSteps must be between 1 and 50 (got 0)"},
			{"maxSteps 51", func(r *contract.CreatePlanRequest) { r.MaxSteps = 51 }, testCaller, contract.CodeValidationFailed, "maxSteps must be between 1 and 50 (got 51)"},
			{"bad strategy", func(r *contract.CreatePlanRequest) { r.Strategy = 9 }, testCaller, contract.CodeValidationFailed, "Unsupported orchestration strategy 9"},
			{"bad stepTimeout", func(r *contract.CreatePlanRequest) { r.Constraints = contract.Map{"stepTimeout": "soon"} }, testCaller, contract.CodeValidationFailed, "constraints.stepTimeout must be"},
			{"zero timeout", func(r *contract.CreatePlanRequest) { r.Constraints = contract.Map{"timeout": 0.0} }, testCaller, contract.CodeValidationFailed, "constraints.timeout must be between"},
			{"huge goal", func(r *contract.CreatePlanRequest) { r.Goal = strings.Repeat("x", maxGoalLength+1) }, testCaller, contract.CodeValidationFailed, "Goal is too long"},
			{"forbidden", func(*contract.CreatePlanRequest) {}, Caller{ConnectionID: "c9", User: "mallory"}, contract.CodeForbidden, "Not allowed to use session s1"},
		}
		for _, c := range cases {
			req := base()
			c.mut(&req)
			_, err := e.CreatePlan(context.Background(), c.caller, req)
			var ee *Error
			if !errors.As(err, &ee) || ee.Code != c.code || !strings.HasPrefix(ee.Message, c.msg) {
				t.Errorf("%s: got %v (%s), want %s %q", c.name, err, CodeOf(err), c.code, c.msg)
			}
		}
		if n := len(v.sessions.sessionEvents(testSession, "")); n != 0 {
			t.Errorf("%d events sent for rejected requests", n)
		}
		for _, id := range []string{"", "nope"} {
			if err := e.ExecutePlan(context.Background(), testCaller, id); CodeOf(err) == "" || CodeOf(err) == contract.CodeProcessingError {
				t.Errorf("ExecutePlan(%q): %v", id, err)
			}
		}
		if _, err := e.GetPlan(context.Background(), testCaller, "nope"); CodeOf(err) != contract.CodePlanNotFound {
			t.Errorf("GetPlan: %v", err)
		}
		if err := e.CancelExecution(context.Background(), testCaller, "nope"); CodeOf(err) != contract.CodePlanNotFound {
			t.Errorf("CancelExecution: %v", err)
		}
		// Duplicates are dropped, order kept; the plan is announced and stored.
		req := base()
		req.AvailableAgentIDs = []string{"b", "a", "b"}
		plan, err := e.CreatePlan(context.Background(), testCaller, req)
		if err != nil || len(plan.Steps) != 2 || plan.Steps[0].AgentID != "b" {
			t.Fatalf("plan %+v %v", plan, err)
		}
		created := v.sessions.sessionEvents(testSession, contract.TargetOrchestrationPlanCreated)
		if len(created) != 1 || created[0].Caller != testCaller {
			t.Errorf("OrchestrationPlanCreated %+v", created)
		}
		if err := e.ExecutePlan(context.Background(), Caller{User: "mallory"}, plan.ID); CodeOf(err) != contract.CodeForbidden {
			t.Errorf("ExecutePlan by another user: %v", err)
		}
		st, err := e.GetPlan(context.Background(), testCaller, plan.ID)
		if err != nil || st.Status != contract.PlanStatusCreated || st.PercentComplete != 0 || st.Steps[0].State != contract.StepStatePending || st.Result != nil {
			t.Errorf("GetPlan %+v %v", st, err)
		}
		ttl := v.rdb.PTTL(context.Background(), e.keys.plan(plan.ID)).Val()
		if ttl <= 0 || ttl > 24*time.Hour {
			t.Errorf("plan TTL %v", ttl)
		}
	})
}

func TestEmitRetried(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, scripted3())
		e := v.node(testConfig("n1", 1), nil)
		v.sessions.failing = 2 // the first two Emit calls fail; the third try succeeds
		plan, res := v.run(e, request(contract.StrategySequential, 10, "a"))
		if !res.Success {
			t.Fatal(res)
		}
		checkEvents(t, v.sessions.planEvents(plan.ID), 1)
	})
}

func TestBuildPlanShapes(t *testing.T) {
	now := time.Date(2025, 9, 1, 10, 0, 0, 0, time.UTC)
	agents := []string{"x", "y", "z"}
	for _, c := range []struct {
		s        contract.OrchestrationStrategy
		maxSteps int
		agents   []string
		deps     []string // dependsOn per step, joined
	}{
		{contract.StrategySequential, 2, []string{"x", "y"}, []string{"", "1"}},
		{contract.StrategyParallel, 10, []string{"x", "y", "z"}, []string{"", "", ""}},
		{contract.StrategyAdaptive, 3, []string{"x", "x", "y"}, []string{"", "1", "1"}},
		{contract.StrategyAdaptive, 1, []string{"x"}, []string{""}},
		{contract.StrategyRoundRobin, 7, []string{"x", "y", "z", "x", "y", "z", "x"}, []string{"", "1", "2", "3", "4", "5", "6"}},
	} {
		req := contract.NewCreatePlanRequest("s", " goal ", c.s, agents)
		req.MaxSteps = c.maxSteps
		p := buildPlan("id", req, agents, 0, 30*time.Minute, now)
		if len(p.Steps) != len(c.agents) {
			t.Errorf("%v/%d: %d steps", c.s, c.maxSteps, len(p.Steps))
			continue
		}
		for i, s := range p.Steps {
			if s.AgentID != c.agents[i] || s.AssignedAgentID != s.AgentID || strings.Join(s.DependsOn, ",") != c.deps[i] || s.Name != "" || s.Input["goal"] != "goal" {
				t.Errorf("%v step %d: %+v", c.s, i+1, s)
			}
		}
		if p.Name != "Plan for: goal" || p.Goal != "goal" || p.Strategy != c.s || p.ID != "id" {
			t.Errorf("%v plan %+v", c.s, p)
		}
		or, ok := p.SharedContext["originalRequest"].(contract.OrchestrationRequest)
		if !ok || or.MaxSteps != c.maxSteps || or.Timeout != contract.TimeSpan(30*time.Minute) || p.SharedContext["createdAt"] != contract.DateTime(now) {
			t.Errorf("%v sharedContext %+v", c.s, p.SharedContext)
		}
		if _, err := graphOf(p.Steps); err != nil {
			t.Errorf("%v: %v", c.s, err)
		}
	}
	req := contract.NewCreatePlanRequest("s", "g", contract.StrategySequential, agents)
	if p := buildPlan("id", req, agents, 2*time.Second, time.Minute, now); p.Steps[0].Timeout != contract.TimeSpan(2*time.Second) {
		t.Errorf("step timeout override: %v", p.Steps[0].Timeout)
	}
}

func TestGraphRejectsBadDependencies(t *testing.T) {
	step := func(order int, deps ...string) contract.OrchestrationStep {
		return contract.OrchestrationStep{Order: order, DependsOn: deps}
	}
	for _, steps := range [][]contract.OrchestrationStep{
		{step(1, "1")},
		{step(1), step(2, "3"), step(3)},
		{step(1), step(2, "x")},
		{step(2)},
	} {
		if _, err := graphOf(steps); err == nil {
			t.Errorf("accepted %+v", steps)
		}
	}
	g, err := graphOf([]contract.OrchestrationStep{step(1), step(2, "1"), step(3, "1", "2", "1")})
	if err != nil || len(g.deps[3]) != 2 || len(g.next[1]) != 2 {
		t.Errorf("graph %+v %v", g, err)
	}
}

func TestAdaptiveReplacementParsing(t *testing.T) {
	plan := buildPlan("id", contract.NewCreatePlanRequest("s", "g", contract.StrategyAdaptive, []string{"a", "b"}),
		[]string{"a", "b"}, 0, time.Minute, time.Now())
	allowed := []string{"a", "b"}
	good := map[string]int{ // output → number of steps in the new plan
		`[{"agentId":"a","task":"t1"},{"agentId":"b","task":"t2","dependsOn":[1,2]}]`:                  3,
		`noise {"steps":[{"agentId":"b","task":"t"}]} trailing`:                                        2,
		"```\n" + `{"steps":[{"agentId":"a","task":"t","timeout":"00:00:02"}]}` + "\n```":              2,
		`{"steps":[{"agentId":"a","task":"1"},{"agentId":"a","task":"2"},{"agentId":"a","task":"3"}]}`: 3, // truncated to maxSteps 3
	}
	for out, n := range good {
		steps, reason := adaptiveReplacement(out, plan, allowed, 3, 0)
		if len(steps) != n || reason != "" {
			t.Errorf("%s: %d steps, %q", out, len(steps), reason)
			continue
		}
		if _, err := graphOf(steps); err != nil {
			t.Errorf("%s: %v", out, err)
		}
	}
	bad := []string{"no json here", `{"steps":[]}`, `{"steps":[{"agentId":"zz","task":"t"}]}`,
		`{"steps":[{"agentId":"a","task":""}]}`, `[{"agentId":"a","task":"t","dependsOn":["2"]}]`,
		`[{"agentId":"a","task":"t","dependsOn":[true]}]`, `{"steps":`}
	for _, out := range bad {
		if steps, reason := adaptiveReplacement(out, plan, allowed, 10, 0); steps != nil || reason == "" {
			t.Errorf("%s: accepted", out)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	c := DefaultConfig("n")
	if c.Workers != DefaultWorkers || c.Partitions != 1 || c.Prefix != "hf" || c.VisibilityTimeout != 30*time.Second || c.ClaimRefresh != 10*time.Second ||
		c.MaxAttempts != 3 || c.PlanTimeout != 30*time.Minute || c.NodeID != "n" || c.Now == nil {
		t.Errorf("defaults %+v", c)
	}
	if d := []time.Duration{c.backoff(1), c.backoff(2), c.backoff(3), c.backoff(20)}; d[0] != 500*time.Millisecond || d[1] != time.Second || d[2] != 2*time.Second || d[3] != 30*time.Second {
		t.Errorf("backoff %v", d)
	}
	if _, err := New(Config{VisibilityTimeout: time.Second, ClaimRefresh: 2 * time.Second}, nil, nil, nil, nil); err == nil {
		t.Error("New accepted nil dependencies")
	}
	bad := Config{VisibilityTimeout: time.Second, ClaimRefresh: 2 * time.Second}
	bad.fill()
	if bad.validate() == nil {
		t.Error("ClaimRefresh above VisibilityTimeout accepted")
	}
}

func TestScriptedIsDeterministic(t *testing.T) {
	s := &Scripted{FailureRate: 0.5, Chunks: 4}
	fails := 0
	for i := range 200 {
		req := AgentRequest{AgentID: "a", PlanID: "p", StepOrder: i, Attempt: 1, Task: "t"}
		var chunks []string
		r1, err1 := s.Run(context.Background(), req, func(c string) { chunks = append(chunks, c) })
		r2, err2 := s.Run(context.Background(), req, func(string) {})
		if (err1 == nil) != (err2 == nil) || r1.Output != r2.Output {
			t.Fatalf("attempt %d not repeatable", i)
		}
		if err1 != nil {
			fails++
			continue
		}
		if strings.Join(chunks, "") != r1.Output || len(chunks) != 4 {
			t.Errorf("chunks %q", chunks)
		}
	}
	if fails < 60 || fails > 140 {
		t.Errorf("%d of 200 failed at rate 0.5", fails)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (&Scripted{Delay: time.Hour}).Run(ctx, AgentRequest{}, func(string) {}); !errors.Is(err, context.Canceled) {
		t.Errorf("delay ignored cancellation: %v", err)
	}
}

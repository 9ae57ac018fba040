package orchestration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// gate is an agent whose calls block until the test releases them, one
// per token; it records the requests it got.
type gate struct {
	release chan struct{}
	mu      sync.Mutex
	reqs    []AgentRequest
	ended   int
}

func newGate() *gate { return &gate{release: make(chan struct{}, 16)} }

func (g *gate) Run(ctx context.Context, req AgentRequest, emit func(string)) (AgentResult, error) {
	g.mu.Lock()
	g.reqs = append(g.reqs, req)
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.ended++
		g.mu.Unlock()
	}()
	select {
	case <-g.release:
		emit("done")
		return AgentResult{Output: "done"}, nil
	case <-ctx.Done():
		return AgentResult{}, ctx.Err()
	}
}

func (g *gate) counts() (started, ended int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.reqs), g.ended
}

// inFlight sums the calls of agentID the engines count, and how many of
// them have their member in the agent's running set, each read once its
// node's transition (if any) is over.
func inFlight(engines []*Engine, agentID string) (calls, members int) {
	for _, e := range engines {
		c, _ := e.callsOf(agentID)
		c.mu.Lock()
		calls += c.n
		if c.member {
			members++
		}
		c.mu.Unlock()
	}
	return calls, members
}

// TestAgentStatusFollowsStepsAndMessages: plan steps and agent messages
// are calls of the agent alike. With four calls of one agent running on
// two nodes at once (three plan steps and a message) its subscribers get
// one Busy; the agent stays Busy while any call runs and gets one Ready
// when the last one ends, whichever node it ran on. A step that fails for
// good turns its agent to Error.
func TestAgentStatusFollowsStepsAndMessages(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		g := newGate()
		v := newEnv(t, b, map[string]Agent{"g": g, "bad": failing{}})
		router := &fakeRouter{}
		api := v.msgNode(testConfig("api", 0), nil, router)
		n1 := v.msgNode(testConfig("n1", 2), nil, router)
		n2 := v.msgNode(testConfig("n2", 2), nil, router)
		engines := []*Engine{api, n1, n2}

		var plans []string
		for range 3 {
			plan, err := api.CreatePlan(context.Background(), testCaller, request(contract.StrategyParallel, 1, "g"))
			if err != nil {
				t.Fatal(err)
			}
			if err := api.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
				t.Fatal(err)
			}
			plans = append(plans, plan.ID)
		}
		msg := send(t, api, "g", "and a message")
		waitFor(t, 10*time.Second, "four calls of g running", func() bool {
			started, _ := g.counts()
			calls, _ := inFlight(engines, "g")
			return started == 4 && calls == 4
		})
		// No node has workers for all four: both serve the agent.
		if _, members := inFlight(engines, "g"); members != 2 {
			t.Fatalf("%d nodes serve the agent, want 2", members)
		}
		busy := func(want contract.AgentStatus) {
			t.Helper()
			dto, ok, err := api.AgentStatus(context.Background(), "g")
			if err != nil || !ok || dto.Status != want {
				t.Fatalf("AgentStatus %v (%v %v), want %v", dto.Status, ok, err, want)
			}
			for _, a := range api.Agents(context.Background()) {
				if a.ID == "g" && a.Status != want {
					t.Fatalf("Agents lists g as %v, want %v", a.Status, want)
				}
			}
		}
		busy(contract.AgentStatusBusy)
		if st := router.statuses("g"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy}) {
			t.Fatalf("statuses while four calls run: %v", st)
		}

		// Three end; one still runs somewhere: once the node left without
		// a call has left the running set (AgentIdleAfter), the agent is
		// still Busy, with no Ready sent.
		for range 3 {
			g.release <- struct{}{}
		}
		waitFor(t, 10*time.Second, "three calls over and one node left", func() bool {
			_, ended := g.counts()
			calls, members := inFlight(engines, "g")
			return ended == 3 && calls == 1 && members == 1
		})
		busy(contract.AgentStatusBusy)
		if st := router.statuses("g"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy}) {
			t.Fatalf("statuses with one call left: %v", st)
		}

		// The last one ends: Ready, once.
		g.release <- struct{}{}
		for _, id := range plans {
			if res := v.await(id, 10*time.Second); !res.Success {
				t.Fatalf("plan %s failed: %+v", id, res)
			}
		}
		v.outcomeOf(msg, "g", 10*time.Second)
		waitFor(t, 10*time.Second, "Ready", func() bool { return len(router.statuses("g")) == 2 })
		busy(contract.AgentStatusReady)
		if st := router.statuses("g"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy, contract.AgentStatusReady}) {
			t.Fatalf("statuses: %v", st)
		}
		if calls, members := inFlight(engines, "g"); calls != 0 || members != 0 {
			t.Fatalf("%d calls still counted, %d members", calls, members)
		}

		// A step that fails for good: Busy, then Error, also in GetAgents.
		plan, err := api.CreatePlan(context.Background(), testCaller, request(contract.StrategySequential, 1, "bad"))
		if err != nil {
			t.Fatal(err)
		}
		if err := api.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
			t.Fatal(err)
		}
		if res := v.await(plan.ID, 10*time.Second); res.Success {
			t.Fatalf("the failing plan succeeded: %+v", res)
		}
		waitFor(t, 10*time.Second, "Error", func() bool { return len(router.statuses("bad")) == 2 })
		if st := router.statuses("bad"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy, contract.AgentStatusError}) {
			t.Fatalf("statuses of a failing agent: %v", st)
		}
		dto, _, _ := api.AgentStatus(context.Background(), "bad")
		if dto.Status != contract.AgentStatusError {
			t.Fatalf("AgentStatus after a failure: %v", dto.Status)
		}
	})
}

// TestWorkingDirectoryReachesAgents: the session's working directory
// (SessionDirectories) is in every agent call: plan steps on any node,
// queued messages and streamed messages.
func TestWorkingDirectoryReachesAgents(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		rec := &convRecorder{}
		v := newEnv(t, b, map[string]Agent{"r": rec, "r2": rec})
		v.sessions.dirs[testSession] = "projects/s1"
		router := &fakeRouter{}
		api := v.msgNode(testConfig("api", 0), nil, router)
		v.msgNode(testConfig("n1", 2), nil, router)

		_, res := v.run(api, request(contract.StrategySequential, 2, "r", "r2"))
		if !res.Success {
			t.Fatalf("plan: %+v", res)
		}
		v.outcomeOf(send(t, api, "r", "queued"), "r", 10*time.Second)
		err := api.StreamAgentMessage(context.Background(), testCaller,
			contract.AgentMessageRequest{AgentID: "r", SessionID: testSession, Content: "streamed"},
			func(contract.AgentResponse) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.reqs) != 4 {
			t.Fatalf("%d agent calls, want 4", len(rec.reqs))
		}
		for _, r := range rec.reqs {
			if r.WorkingDirectory != "projects/s1" {
				t.Fatalf("call (plan %q step %d, message %q) has working directory %q", r.PlanID, r.StepOrder, r.MessageID, r.WorkingDirectory)
			}
		}
	})
}

// TestAgentIdleAfterAndShutdown: calls that follow each other within
// AgentIdleAfter keep the agent Busy without a Ready in between; Shutdown
// takes the node out of the running set at once and sends the Ready the
// idle delay still held back.
func TestAgentIdleAfterAndShutdown(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{}})
		router := &fakeRouter{}
		cfg := testConfig("n1", 2)
		cfg.AgentIdleAfter = time.Minute
		e := v.msgNode(cfg, nil, router)
		for i := range 3 {
			v.outcomeOf(send(t, e, "a", fmt.Sprint("message ", i)), "a", 10*time.Second)
		}
		waitFor(t, 5*time.Second, "the calls to end", func() bool { calls, _ := inFlight([]*Engine{e}, "a"); return calls == 0 })
		if st := router.statuses("a"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy}) {
			t.Fatalf("statuses within the idle delay: %v", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if st := router.statuses("a"); !slices.Equal(st, []contract.AgentStatus{contract.AgentStatusBusy, contract.AgentStatusReady}) {
			t.Fatalf("statuses after Shutdown: %v", st)
		}
		if n, err := v.rdb.ZCard(context.Background(), e.keys.agentRunning("a")).Result(); err != nil || n != 0 {
			t.Fatalf("running set after Shutdown: %d %v", n, err)
		}
	})
}

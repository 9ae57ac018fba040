package farm_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// TestPlanAcrossNodes: a plan started through node 1 (which runs no workers)
// is executed by the workers of nodes 2 and 3, and session members on every
// node receive the same progress, step and completion events, once each.
func TestPlanAcrossNodes(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		i := 0
		f := startFarm(t, b, 3, func(c *farm.NodeConfig) {
			i++
			c.NoWorkers = i == 1
		})
		const hub = "/hubs/orchestrator"
		alice := dial(t, f.nodes[0].URL(), hub, "alice")
		bob := dial(t, f.nodes[1].URL(), hub, "bob")
		carol := dial(t, f.nodes[2].URL(), hub, "carol")
		targets := []string{"OrchestrationProgress", "StepCompleted", "OrchestrationCompleted"}
		recs := map[string]map[string]*recorder{}
		for name, c := range map[string]interface {
			On(string, func([]json.RawMessage))
		}{"alice": alice, "bob": bob, "carol": carol} {
			recs[name] = map[string]*recorder{}
			for _, tg := range targets {
				recs[name][tg] = recordOn(c, tg)
			}
		}
		sid := createSession(t, alice, "plans")
		invoke(t, bob, nil, "JoinSession", sid)
		invoke(t, carol, nil, "JoinSession", sid)

		var plan contract.OrchestrationPlan
		invoke(t, alice, &plan, "CreateOrchestrationPlan", contract.CreatePlanRequest{
			SessionID: sid, Goal: "write a haiku", Strategy: contract.StrategySequential,
			AvailableAgentIDs: []string{"scripted-writer", "scripted-reviewer"}, MaxSteps: 10,
		})
		if len(plan.Steps) != 2 {
			t.Fatalf("plan has %d steps, want 2", len(plan.Steps))
		}
		invoke(t, alice, nil, "ExecutePlan", plan.ID)
		for _, name := range []string{"alice", "bob", "carol"} {
			r := recs[name]["OrchestrationCompleted"]
			waitFor(t, 20*time.Second, name+" receives OrchestrationCompleted", func() bool { return len(r.snapshot()) >= 1 })
		}
		var first []string
		for _, name := range []string{"alice", "bob", "carol"} {
			steps := recs[name]["StepCompleted"].snapshot()
			if len(steps) != 2 {
				t.Fatalf("%s received %d StepCompleted, want 2", name, len(steps))
			}
			var seq []string
			for _, s := range steps {
				var ev struct {
					Order  int `json:"order"`
					Result struct {
						Success bool   `json:"success"`
						Output  string `json:"output"`
					} `json:"result"`
				}
				_ = json.Unmarshal(s, &ev)
				if !ev.Result.Success {
					t.Fatalf("%s: step %d failed: %s", name, ev.Order, s)
				}
				seq = append(seq, fmt.Sprint(ev.Order, ":", ev.Result.Output))
			}
			prog := recs[name]["OrchestrationProgress"].snapshot()
			var last struct {
				PercentComplete float64 `json:"percentComplete"`
			}
			_ = json.Unmarshal(prog[len(prog)-1], &last)
			if last.PercentComplete != 100 {
				t.Fatalf("%s: last progress %v%%, want 100", name, last.PercentComplete)
			}
			seq = append(seq, fmt.Sprint("progress events ", len(prog)))
			if first == nil {
				first = seq
			} else if fmt.Sprint(seq) != fmt.Sprint(first) {
				t.Fatalf("%s saw %v, alice saw %v", name, seq, first)
			}
			var res contract.OrchestrationResult
			_ = json.Unmarshal(recs[name]["OrchestrationCompleted"].snapshot()[0], &res)
			if !res.Success || res.FinalOutput == "" {
				t.Fatalf("%s: result %+v", name, res)
			}
		}
		// Node 1 ran no workers: the steps were executed elsewhere.
		var state contract.PlanState
		invoke(t, bob, &state, "GetPlan", plan.ID)
		if state.Status != "completed" {
			t.Fatalf("plan status %q", state.Status)
		}
	}, testredis.WithCluster())
}

func recordOn(c interface {
	On(string, func([]json.RawMessage))
}, target string) *recorder {
	r := &recorder{ch: make(chan struct{}, 1)}
	c.On(target, func(args []json.RawMessage) {
		r.mu.Lock()
		if len(args) > 0 {
			r.msgs = append(r.msgs, args[0])
		}
		r.mu.Unlock()
	})
	return r
}

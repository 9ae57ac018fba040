package farm_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/metrics"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// seriesKeys lists every hubfarm_ series of a scrape as name{labels}.
func seriesKeys(m metricSet) []string {
	var keys []string
	for name, fam := range m {
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			continue
		}
		for _, s := range fam.GetMetric() {
			var ls []string
			for _, lp := range s.GetLabel() {
				ls = append(ls, lp.GetName()+"="+lp.GetValue())
			}
			sort.Strings(ls)
			keys = append(keys, name+"{"+strings.Join(ls, ",")+"}")
		}
	}
	sort.Strings(keys)
	return keys
}

// TestMetricLabelsBounded: the node's series carry only the bounded labels
// (hub, method, outcome, reason, type, kind) with values from fixed sets:
// no user, session, connection, plan or node id, and no method name a
// client made up. Twenty more users doing the same things as the first
// five add no series at all.
func TestMetricLabelsBounded(t *testing.T) {
	const nodeID = "node-label-probe"
	f := startFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.NodeID, c.Hub.NegotiateRatePerIP = nodeID, 1e6 })
	n := f.nodes[0]
	var ids []string // every id the traffic below used
	round := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			user := fmt.Sprintf("label-probe-user-%d", i)
			c := dial(t, n.URL(), hubs.OrchestratorPath, user)
			a := dial(t, n.URL(), hubs.AgentPath, user)
			sid := createSession(t, c, "labels")
			invoke(t, c, nil, "SendSessionMessage", sid, "hello")
			invoke(t, a, nil, "SubscribeToAgent", "scripted-writer")
			var plan contract.OrchestrationPlan
			invoke(t, c, &plan, "CreateOrchestrationPlan", contract.CreatePlanRequest{SessionID: sid, Goal: "g",
				Strategy: contract.StrategySequential, AvailableAgentIDs: []string{"scripted-writer"}, MaxSteps: 2})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err := c.Invoke(ctx, "NoSuchMethod-"+user)
			cancel()
			var ie *client.InvocationError
			if !errors.As(err, &ie) {
				t.Fatalf("an unknown method: %v", err)
			}
			ids = append(ids, user, sid, plan.ID, c.ConnectionID(), a.ConnectionID(), "NoSuchMethod-"+user)
			_ = a.Close()
		}
		waitFor(t, 5*time.Second, "the closed connections to be counted", func() bool {
			return scrape(t, n).get("hubfarm_connections", "hub", hubs.AgentName) == 0
		})
	}

	round(0, 5)
	first := seriesKeys(scrape(t, n))
	round(5, 25)
	m := scrape(t, n)
	second := seriesKeys(m)
	if strings.Join(first, "\n") != strings.Join(second, "\n") {
		added := map[string]bool{}
		for _, k := range second {
			added[k] = true
		}
		for _, k := range first {
			delete(added, k)
		}
		t.Errorf("20 more users added series: %v", added)
	}

	allowed := map[string]bool{"hub": true, "method": true, "outcome": true, "reason": true, "type": true, "kind": true}
	methods := map[string]bool{"unknown": true}
	for _, h := range []*hubnode.Hub{n.Hubs.Orchestrator, n.Hubs.Agent} {
		for _, name := range h.MethodNames() {
			methods[name] = true
		}
	}
	ids = append(ids, nodeID)
	for name, fam := range m {
		if !strings.HasPrefix(name, metrics.Namespace+"_") {
			continue
		}
		for _, s := range fam.GetMetric() {
			for _, lp := range s.GetLabel() {
				k, v := lp.GetName(), lp.GetValue()
				if !allowed[k] {
					t.Errorf("%s has label %s=%q", name, k, v)
				}
				if k == "method" && !methods[v] {
					t.Errorf("%s has method=%q, which no hub serves", name, v)
				}
				if k == "hub" && v != hubs.OrchestratorName && v != hubs.AgentName {
					t.Errorf("%s has hub=%q", name, v)
				}
				for _, id := range ids {
					if id != "" && strings.Contains(v, id) {
						t.Errorf("%s has %s=%q, an id", name, k, v)
					}
				}
			}
		}
	}
	if got := m.get("hubfarm_invocations_total", "method", "unknown", "outcome", "bind_error"); got != 25 {
		t.Errorf("unknown methods counted %v times under method=unknown, want 25", got)
	}
}

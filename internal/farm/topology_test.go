package farm_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// TestSentinelFailover: two nodes on a Sentinel-managed primary (one
// replica, one sentinel); the primary process is killed. Within the
// failover time plus a few seconds the replica is promoted, /readyz of both
// nodes is green and every session group delivers again across the nodes;
// messages sent after the recovery reach every member.
func TestSentinelFailover(t *testing.T) {
	ss := testredis.StartSentinel(t, 1)
	// A node whose subscription came back asks its clients to reconnect
	// over its drain window: keep it short so the clients are back soon.
	start := func(id string) *farm.Node {
		cfg := farm.NodeConfig{NodeID: id, DevTrustUserParam: true, Dev: true,
			HeartbeatInterval: 100 * time.Millisecond, DrainWindow: 300 * time.Millisecond, Logger: quietLogger()}
		cfg.Hub.InvocationRate, cfg.Hub.InvocationBurst = 1e6, 1e6
		n, err := farm.StartNode(context.Background(), cfg, ss.NewClient())
		if err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = n.Shutdown(ctx)
		})
		return n
	}
	n1, n2 := start("n1"), start("n2")
	both := []*farm.Node{n1, n2}
	sessions := sessionsAcross(t, n1, n2)
	checkDelivery(t, sessions, "before")

	ss.Master.Kill()
	killed := time.Now()
	within := testredis.DownAfter + testredis.FailoverTimeout + 15*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	waitFor(t, within, "the replica promoted", func() bool {
		addr, err := ss.MasterAddr(ctx)
		return err == nil && addr == ss.Replica.Addr()
	})
	promoted := time.Since(killed)
	for _, n := range both {
		waitReadyz(t, n, http.StatusOK, within-time.Since(killed)+time.Second)
	}
	// checkDelivery re-sends until every receiver of every session has a
	// message: a send made before the node re-subscribed may be lost.
	checkDelivery(t, sessions, "recovered")
	recovered := time.Since(killed)
	if recovered > within {
		t.Fatalf("delivery and readiness back %v after the kill, want within %v", recovered, within)
	}
	t.Logf("replica promoted %v after the kill; both nodes ready and every group delivering after %v",
		promoted.Round(time.Millisecond), recovered.Round(time.Millisecond))
	// After recovery (and the clients' reconnects), messages reach every
	// member: first with the re-sending helper, then one message per
	// session that must arrive at once.
	checkDelivery(t, sessions, "after")
	for _, s := range sessions {
		before := make([]int, len(s.receivers))
		for j, r := range s.receivers {
			before[j] = len(r.snapshot())
		}
		invoke(t, s.sender, nil, "SendSessionMessage", s.id, "after-failover")
		for j, r := range s.receivers {
			waitFor(t, 5*time.Second, "the message after the failover", func() bool {
				got := contents(t, r.snapshot())
				return len(got) > before[j] && contains(got[before[j]:], "after-failover")
			})
		}
	}
}

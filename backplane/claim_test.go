package backplane

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// TestClaimConnection: of nodes claiming one connection id at once exactly
// one gets it, a later claim (by any node, the owner too) is refused, the
// claim expires by itself, and an id that cannot be a connection id is
// refused without touching Redis.
func TestClaimConnection(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		bn := startNode(t, b, "b", nil)
		ctx := ctxT(t, 20*time.Second)

		// Concurrent claims of the same ids from both nodes: one winner each.
		const ids = 50
		var wg sync.WaitGroup
		won := make([][2]bool, ids)
		errs := make(chan error, 2*ids)
		for i := range ids {
			for j, n := range []*testNode{a, bn} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := n.ClaimConnection(ctx, fmt.Sprintf("c%d", i), time.Minute)
					won[i][j] = ok
					errs <- err
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		for i, w := range won {
			if w[0] == w[1] {
				t.Fatalf("c%d: node a won %v, node b won %v: want exactly one winner", i, w[0], w[1])
			}
			owner := map[bool]string{true: "a", false: "b"}[w[0]]
			if got, err := a.rdb.Get(ctx, a.k.connClaim(fmt.Sprintf("c%d", i))).Result(); err != nil || got != owner {
				t.Fatalf("c%d claimed by %q (%v), want %q", i, got, err, owner)
			}
		}
		for _, n := range []*testNode{a, bn} {
			if ok, err := n.ClaimConnection(ctx, "c0", time.Minute); ok || err != nil {
				t.Fatalf("node %s claimed c0 again: %v %v", n.NodeID(), ok, err)
			}
		}
		ttl, err := a.rdb.PTTL(ctx, a.k.connClaim("c0")).Result()
		if err != nil || ttl <= 0 || ttl > time.Minute {
			t.Fatalf("claim TTL %v (%v), want in (0, 1m]", ttl, err)
		}

		// A claim expires by itself (a dead node leaks nothing).
		if ok, err := a.ClaimConnection(ctx, "short", 100*time.Millisecond); !ok || err != nil {
			t.Fatalf("claim short: %v %v", ok, err)
		}
		if b.Mini != nil {
			b.Mini.FastForward(time.Second)
		}
		waitFor(t, 5*time.Second, "the claim to expire", func() bool {
			ok, err := bn.ClaimConnection(ctx, "short", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		})

		if _, err := a.ClaimConnection(ctx, "bad:id", time.Minute); err == nil {
			t.Fatal("an id with ':' was claimed")
		}
		if _, err := a.ClaimConnection(ctx, "c-none", 0); err == nil {
			t.Fatal("a claim without a TTL was taken")
		}
	}, testredis.WithCluster())
}

// TestUnregisterLeavesAnotherNodesEntry: a node unregistering a connection
// id that another node registered meanwhile removes it from its own node
// set only; the other node's entry (hash, user set, groups) stays whole.
func TestUnregisterLeavesAnotherNodesEntry(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		a := startNode(t, b, "a", nil)
		bn := startNode(t, b, "b", nil)
		ctx := ctxT(t, 20*time.Second)
		bn.mustRegister(t, "c1", "ann")
		a.mustRegister(t, "c1", "ann", "g1") // the same id, registered last by a
		if err := bn.UnregisterConnection(ctx, connInfo("c1", "ann"), nil); err != nil {
			t.Fatal(err)
		}
		info, ok, err := a.Connection(ctx, "c1")
		if err != nil || !ok {
			t.Fatalf("a's entry of c1 was removed by b: %v %v", ok, err)
		}
		if node, err := a.connectionNode(ctx, "c1"); err != nil || node != "a" {
			t.Fatalf("c1 is on %q (%v), want a", node, err)
		}
		if info.User != "ann" {
			t.Fatalf("c1's entry %+v", info)
		}
		if m, err := a.UserConnections(ctx, "ann"); err != nil || len(m) != 1 || m[0] != "c1" {
			t.Fatalf("ann's connections %v (%v), want [c1]", m, err)
		}
		if m, err := a.GroupMembers(ctx, "g1"); err != nil || len(m) != 1 || m[0] != "c1" {
			t.Fatalf("g1 members %v (%v), want [c1]", m, err)
		}
		if m, err := a.rdb.SMembers(ctx, a.k.nodeConns("b")).Result(); err != nil || len(m) != 0 {
			t.Fatalf("b's node set %v (%v), want empty", m, err)
		}
		if m, err := a.rdb.SMembers(ctx, a.k.nodeConns("a")).Result(); err != nil || len(m) != 1 {
			t.Fatalf("a's node set %v (%v), want [c1]", m, err)
		}
		// a's own removal does remove it.
		if err := a.UnregisterConnection(ctx, connInfo("c1", "ann"), nil); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := a.Connection(ctx, "c1"); err != nil || ok {
			t.Fatalf("c1 still registered after its owner removed it: %v %v", ok, err)
		}
	}, testredis.WithCluster())
}

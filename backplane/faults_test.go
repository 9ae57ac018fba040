package backplane

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// TestDeadNodeReaped: a node that dies without cleanup loses its
// connections from every group and user set, its connection keys and its
// node entry, once it has missed DeadAfterMissed heartbeats; exactly one
// survivor cleans up and OnNodeDead fires once farm-wide.
func TestDeadNodeReaped(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		const interval = 100 * time.Millisecond
		var mu sync.Mutex
		var deaths []string
		hook := func(c *Config) {
			c.HeartbeatInterval = interval
			c.OnNodeDead = func(id string) {
				mu.Lock()
				deaths = append(deaths, id)
				mu.Unlock()
			}
		}
		a := startNode(t, b, "a", hook)
		bn := startNode(t, b, "b", hook)
		c := startNode(t, b, "c", hook)
		a.mustRegister(t, "a1", "ann", "g")
		c.mustRegister(t, "c1", "cat", "g", "h")
		c.mustRegister(t, "c2", "ann", "g")
		ctx := ctxT(t, 30*time.Second)

		c.kill()
		killed := time.Now()
		deadline := c.cfg.deadAfter() + 2*interval + 2*time.Second // slack for a loaded machine
		waitFor(t, deadline, "dead node cleanup", func() bool {
			g, _ := a.GroupMembers(ctx, "g")
			h, _ := a.GroupMembers(ctx, "h")
			ann, _ := a.UserConnections(ctx, "ann")
			cat, _ := a.UserConnections(ctx, "cat")
			if strings.Join(g, ",") != "a1" || len(h) != 0 || strings.Join(ann, ",") != "a1" || len(cat) != 0 {
				return false
			}
			// The node's own entries go in the same pass, after its
			// connections: wait for them too rather than catch the pass
			// half-way.
			n := exists(ctx, a.rdb, a.k.node("c"), a.k.nodeConns("c"))
			_, zerr := a.rdb.ZScore(ctx, a.k.nodes(), "c").Result()
			return n == 0 && errors.Is(zerr, redis.Nil)
		})
		t.Logf("%s: cleaned up %v after the kill (dead after %v)", b.Name, time.Since(killed).Round(time.Millisecond), c.cfg.deadAfter())
		for _, k := range []string{a.k.conn("c1"), a.k.connGroups("c1"), a.k.conn("c2"), a.k.node("c"), a.k.nodeConns("c")} {
			if n, _ := a.rdb.Exists(ctx, k).Result(); n != 0 {
				t.Errorf("%s left behind", k)
			}
		}
		if _, err := a.rdb.ZScore(ctx, a.k.nodes(), "c").Result(); !errors.Is(err, redis.Nil) {
			t.Errorf("c still in the node zset: %v", err)
		}
		nodes, _ := a.Nodes(ctx)
		if len(nodes) != 2 {
			t.Errorf("nodes %+v", nodes)
		}
		// Let both survivors run a few more passes: nobody reaps again.
		ra, rb := a.rp.rounds.Load(), bn.rp.rounds.Load()
		waitFor(t, 5*time.Second, "more reaper passes", func() bool {
			return a.rp.rounds.Load() >= ra+3 && bn.rp.rounds.Load() >= rb+3
		})
		mu.Lock()
		defer mu.Unlock()
		if len(deaths) != 1 || deaths[0] != "c" {
			t.Fatalf("OnNodeDead calls: %v", deaths)
		}
		if n := a.Stats().NodeReaps + bn.Stats().NodeReaps; n != 1 {
			t.Fatalf("reaps %d", n)
		}
		// The survivors still serve each other.
		bn.mustPublish(t, ScopeGroup, "g", "after-death", "")
		a.waitDelivery(t, 5*time.Second, "delivery after the death", frameIs("after-death"))
	}, testredis.WithCluster())
}

// TestRestartSameNodeID: a node that crashed and comes back under the same
// id before anyone reaped it removes its previous process's connections.
func TestRestartSameNodeID(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		slow := func(c *Config) { c.HeartbeatInterval = time.Hour } // nobody reaps
		old := startNode(t, b, "r", slow)
		old.mustRegister(t, "r1", "ann", "g")
		old.kill()
		n := startNode(t, b, "r", slow)
		ctx := ctxT(t, 10*time.Second)
		g, _ := n.GroupMembers(ctx, "g")
		u, _ := n.UserConnections(ctx, "ann")
		if _, ok, _ := n.Connection(ctx, "r1"); ok || len(g) != 0 || len(u) != 0 {
			t.Fatalf("leftovers: conn %v group %v user %v", ok, g, u)
		}
	}, testredis.WithCluster())
}

// TestRedisOutage: with Redis down, Publish fails within its ctx and Ready
// fails; when Redis is back (empty: no persistence), subscriptions and the
// registry are restored and delivery resumes. A paused Redis does not hang
// Publish past its ctx either.
func TestRedisOutage(t *testing.T) {
	srv := testredis.Start(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-server", Server: srv}
	a := startNode(t, b, "a", nil)
	bn := startNode(t, b, "b", nil)
	a.mustRegister(t, "a1", "ann", "g")
	bn.mustRegister(t, "b1", "bob")

	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	start := time.Now()
	err := bn.Publish(ctx, ScopeGroup, "g", []byte("lost"), "")
	took := time.Since(start)
	cancel()
	if err == nil || !strings.HasPrefix(err.Error(), "backplane: publish: ") || took > 3*time.Second {
		t.Fatalf("publish with Redis down: %v after %v", err, took)
	}
	t.Logf("publish with Redis down failed after %v: %v", took.Round(time.Millisecond), err)
	if err := a.Ready(ctxT(t, time.Second)); err == nil {
		t.Fatal("ready with Redis down")
	}
	if err := a.JoinGroup(ctxT(t, time.Second), "a1", "during-outage"); err == nil {
		t.Fatal("join with Redis down succeeded")
	}

	srv.Restart()
	restarted := time.Now()
	for _, n := range []*testNode{a, bn} {
		waitFor(t, 15*time.Second, n.NodeID()+" ready after restart", func() bool {
			return n.Ready(ctxT(t, 500*time.Millisecond)) == nil
		})
	}
	t.Logf("ready %v after the restart", time.Since(restarted).Round(time.Millisecond))
	ctx = ctxT(t, 10*time.Second)
	// Redis came back empty: the heartbeat re-registered everything,
	// including the join that failed during the outage.
	waitFor(t, 10*time.Second, "registry restored", func() bool {
		g, _ := bn.GroupMembers(ctx, "g")
		o, _ := bn.GroupMembers(ctx, "during-outage")
		_, ok, _ := bn.Connection(ctx, "b1")
		nodes, _ := bn.Nodes(ctx)
		return strings.Join(g, ",") == "a1" && strings.Join(o, ",") == "a1" && ok && len(nodes) == 2
	})
	bn.mustPublish(t, ScopeGroup, "g", "after-outage", "")
	a.waitDelivery(t, 5*time.Second, "group delivery after the outage", frameIs("after-outage"))
	bn.mustPublish(t, ScopeGroup, "during-outage", "healed-join", "")
	a.waitDelivery(t, 5*time.Second, "delivery to the group joined during the outage", frameIs("healed-join"))
	if s := a.Stats(); s.Reconnects == 0 {
		t.Fatalf("no reconnect counted: %+v", s)
	}
	if s := bn.Stats(); s.PublishErrors == 0 {
		t.Fatalf("no publish error counted: %+v", s)
	}

	// A Redis that accepts connections but does not answer writes.
	admin := srv.NewClient()
	if err := admin.Do(ctx, "CLIENT", "PAUSE", "3000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	err = bn.Publish(ctxT(t, 300*time.Millisecond), ScopeGroup, "g", []byte("paused"), "")
	took = time.Since(start)
	_ = admin.Do(ctx, "CLIENT", "UNPAUSE").Err()
	if !errors.Is(err, context.DeadlineExceeded) || took > time.Second {
		t.Fatalf("publish to a paused Redis: %v after %v", err, took)
	}
}

// TestPubSubConnectionKilled: CLIENT KILL TYPE pubsub cuts every
// subscription connection; go-redis reconnects and re-subscribes, the
// reconnect is counted, Ready is green again and delivery resumes.
func TestPubSubConnectionKilled(t *testing.T) {
	srv := testredis.Start(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-server", Server: srv}
	a := startNode(t, b, "a", nil)
	bn := startNode(t, b, "b", nil)
	a.mustRegister(t, "a1", "ann", "g")
	admin := srv.NewClient()
	ctx := ctxT(t, 20*time.Second)
	before := a.Stats().Reconnects
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "reconnect and ready", func() bool {
		return a.Stats().Reconnects > before && a.Ready(ctxT(t, 500*time.Millisecond)) == nil
	})
	bn.mustPublish(t, ScopeGroup, "g", "after-kill", "")
	a.waitDelivery(t, 5*time.Second, "delivery after the kill", frameIs("after-kill"))
	if got := numsub(t, admin, a.k.chGroup("g")); got != 1 {
		t.Fatalf("NUMSUB after resubscribe: %d", got)
	}
}

// TestRefusedSubscriptionHeals: when Redis refuses the re-subscription
// after a reconnect (here: the ACL forbids SUBSCRIBE), Ready stays red, and
// once Redis accepts it again the health check restores every channel
// (go-redis alone would leave the connection silently unsubscribed).
func TestRefusedSubscriptionHeals(t *testing.T) {
	srv := testredis.Start(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-server", Server: srv}
	a := startNode(t, b, "a", nil)
	bn := startNode(t, b, "b", nil)
	a.mustRegister(t, "a1", "ann", "g")
	admin := srv.NewClient()
	ctx := ctxT(t, 30*time.Second)
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-subscribe").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ready to fail", func() bool {
		return a.Ready(ctxT(t, 300*time.Millisecond)) != nil
	})
	for i := range 3 { // and it stays red: nothing is subscribed
		if err := a.Ready(ctxT(t, 300*time.Millisecond)); err == nil {
			t.Fatalf("ready while subscriptions are refused (check %d)", i)
		}
	}
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+subscribe").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ready after subscriptions are accepted again", func() bool {
		return a.Ready(ctxT(t, 500*time.Millisecond)) == nil && bn.Ready(ctxT(t, 500*time.Millisecond)) == nil
	})
	bn.mustPublish(t, ScopeGroup, "g", "healed", "")
	a.waitDelivery(t, 5*time.Second, "delivery after healing", frameIs("healed"))
}

// TestSilentSubscriberReplaced: a subscription connection that stops
// delivering without any error (a frozen path, a half-open TCP connection)
// makes Ready fail; the health check replaces the connection and delivery
// resumes.
func TestSilentSubscriberReplaced(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		addr := ""
		if b.Server != nil {
			addr = b.Server.Addr()
		} else {
			addr = b.Mini.Addr()
		}
		p := testredis.StartFreezeProxy(t, addr)
		rdb := redis.NewClient(&redis.Options{Addr: p.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })

		n := &testNode{rdb: rdb, sig: make(chan struct{}, 1)}
		bp, err := New(rdb, Config{NodeID: "a", HeartbeatInterval: 100 * time.Millisecond}, n.handle, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		bp.rx.silentAfter = 800 * time.Millisecond
		n.Backplane = bp
		if err := bp.Start(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bp.Shutdown(context.Background()) })
		other := startNode(t, b, "other", nil)
		n.mustRegister(t, "a1", "", "g")

		p.FreezeSubscribers()
		waitFor(t, 5*time.Second, "ready to fail on the frozen subscription", func() bool {
			return n.Ready(ctxT(t, 200*time.Millisecond)) != nil
		})
		waitFor(t, 10*time.Second, "ready after the connection was replaced", func() bool {
			return n.Ready(ctxT(t, 500*time.Millisecond)) == nil
		})
		other.mustPublish(t, ScopeGroup, "g", "after-freeze", "")
		n.waitDelivery(t, 5*time.Second, "delivery after replacement", frameIs("after-freeze"))
		if n.Stats().Reconnects == 0 {
			t.Fatal("replacement not counted")
		}
	})
}

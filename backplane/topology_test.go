package backplane

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// masterClients returns a plain client of each cluster master, closed when
// the test ends.
func masterClients(t testing.TB, c *testredis.Cluster) []*redis.Client {
	out := make([]*redis.Client, len(c.Masters))
	for i, s := range c.Masters {
		out[i] = s.NewClient()
	}
	return out
}

// commandCalls reads how often a command ran on a server (INFO commandstats).
func commandCalls(t testing.TB, c *redis.Client, cmd string) int {
	t.Helper()
	info, err := c.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for _, line := range strings.Split(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.Atoi(strings.SplitN(rest, ",", 2)[0])
			return n
		}
	}
	return 0
}

// TestClusterShardedFanOut: on Redis Cluster a node following 200 groups
// holds one sharded pub/sub connection per bucket at most, fan-out uses
// SPUBLISH/SSUBSCRIBE only (classic PUBLISH would copy every message to
// every master), and every group's publications arrive.
func TestClusterShardedFanOut(t *testing.T) {
	cl := testredis.StartCluster(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-cluster", Cluster: cl}
	const buckets = 8
	tune := func(c *Config) { c.ShardBuckets = buckets }
	a := startNode(t, b, "a", tune)
	other := startNode(t, b, "other", tune)
	const groups = 200
	a.mustRegister(t, "a1", "ann")
	ctx := ctxT(t, 60*time.Second)
	for i := range groups {
		if err := a.JoinGroup(ctx, "a1", "g"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	masters := masterClients(t, cl)
	pubsubConns := 0
	for _, m := range masters {
		list, err := m.ClientList(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if strings.Contains(line, "flags=P") {
				pubsubConns++
			}
		}
	}
	// Two nodes, at most one connection per bucket each.
	if pubsubConns == 0 || pubsubConns > 2*buckets {
		t.Fatalf("%d pub/sub connections for 2 nodes with %d buckets", pubsubConns, buckets)
	}
	t.Logf("%d groups followed; %d sharded pub/sub connections for 2 nodes", groups, pubsubConns)
	for i := range groups {
		other.mustPublish(t, ScopeGroup, "g"+strconv.Itoa(i), "to-"+strconv.Itoa(i), "")
	}
	waitFor(t, 10*time.Second, "every group's frame", func() bool { return len(a.deliveries()) >= groups })
	seen := map[string]bool{}
	for _, d := range a.deliveries() {
		seen[string(d.Frame)] = true
	}
	for i := range groups {
		if !seen["to-"+strconv.Itoa(i)] {
			t.Fatalf("group %d's frame missing", i)
		}
	}
	spub, pub := 0, 0
	for _, m := range masters {
		spub += commandCalls(t, m, "spublish")
		pub += commandCalls(t, m, "publish")
	}
	if pub != 0 || spub < groups {
		t.Fatalf("PUBLISH ran %d times, SPUBLISH %d: fan-out must be sharded", pub, spub)
	}
	if err := a.Ready(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestClusterSlotMove: when the slot of a bucket moves to another master,
// Redis drops the bucket's sharded subscriptions; the node re-subscribes
// them at the new owner, Ready turns green again and delivery resumes.
func TestClusterSlotMove(t *testing.T) {
	cl := testredis.StartCluster(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-cluster", Cluster: cl}
	a := startNode(t, b, "a", nil)
	other := startNode(t, b, "other", nil)
	a.mustRegister(t, "a1", "ann", "moving", "staying")
	ch := a.k.chGroup("moving")
	slot := redisconn.Slot(ch)
	ctx := ctxT(t, 60*time.Second)

	masters := masterClients(t, cl)
	owner := func() int {
		for i, m := range masters {
			n, _ := m.PubSubShardNumSub(ctx, ch).Result()
			if n[ch] > 0 {
				return i
			}
		}
		return -1
	}
	before := owner()
	if before < 0 {
		t.Fatal("no master holds the group's sharded subscription")
	}
	to := (before + 1) % len(masters)
	from, err := cl.MoveSlot(ctx, slot, to)
	if err != nil {
		t.Fatal(err)
	}
	if from != before {
		t.Fatalf("slot %d was on master %d, subscription on %d", slot, from, before)
	}
	moved := time.Now()
	// Until the node has re-subscribed, a publication may be lost: send
	// anew until one arrives.
	for i := 0; ; i++ {
		if time.Since(moved) > 20*time.Second {
			t.Fatal("no delivery to the moved group within 20s")
		}
		f := fmt.Sprintf("probe-%d", i)
		if err := other.Publish(ctx, ScopeGroup, "moving", []byte(f), ""); err != nil {
			t.Logf("publish %d: %v (retrying)", i, err)
		}
		if waitUntil(200*time.Millisecond, func() bool {
			for _, d := range a.deliveries() {
				if string(d.Frame) == f {
					return true
				}
			}
			return false
		}) {
			break
		}
	}
	waitFor(t, 20*time.Second, "ready after the slot move", func() bool {
		return a.Ready(ctxT(t, time.Second)) == nil
	})
	t.Logf("delivering and ready %v after the slot move", time.Since(moved).Round(time.Millisecond))
	if got := owner(); got != to {
		t.Fatalf("subscription on master %d, want the new owner %d", got, to)
	}
	other.mustPublish(t, ScopeGroup, "moving", "after-move", "")
	other.mustPublish(t, ScopeGroup, "staying", "still-here", "")
	a.waitDelivery(t, 5*time.Second, "delivery to the moved group", frameIs("after-move"))
	a.waitDelivery(t, 5*time.Second, "delivery to the other group", frameIs("still-here"))
}

// TestClusterMasterFailover: a master of a cluster with replicas is
// killed; its replica takes over its slots (automatic failover); the
// nodes' sharded subscriptions on the dead master move to the promoted
// replica, every group delivers again both ways, both nodes are ready,
// and messages sent after the recovery reach every member.
func TestClusterMasterFailover(t *testing.T) {
	cl := testredis.StartClusterWithReplicas(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-cluster", Cluster: cl}
	a := startNode(t, b, "a", nil)
	bn := startNode(t, b, "b", nil)
	groups := []string{"g1", "g2", "g3", "g4", "g5", "g6"}
	a.mustRegister(t, "a1", "ann", groups...)
	bn.mustRegister(t, "b1", "bob", groups...)
	for _, g := range groups {
		a.mustPublish(t, ScopeGroup, g, "before-"+g, "")
		bn.waitDelivery(t, 5*time.Second, "before "+g, frameIs("before-"+g))
	}
	ctx := ctxT(t, 90*time.Second)
	// Kill the master holding g1's sharded subscriptions.
	ch := a.k.chGroup("g1")
	victim := -1
	for i, m := range masterClients(t, cl) {
		if n, _ := m.PubSubShardNumSub(ctx, ch).Result(); n[ch] > 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no master holds g1's sharded subscription")
	}
	onVictim := 0
	for _, g := range groups {
		if n, _ := cl.Masters[victim].NewClient().PubSubShardNumSub(ctx, a.k.chGroup(g)).Result(); n[a.k.chGroup(g)] > 0 {
			onVictim++
		}
	}
	cl.Masters[victim].Kill()
	killed := time.Now()
	const within = 30 * time.Second
	waitFor(t, within, "the replica promoted", func() bool {
		role, err := testredis.Role(ctx, cl.Replicas[victim])
		return err == nil && role == "master"
	})
	promoted := time.Since(killed)
	waitRecovered(t, ctx, a, bn, groups, killed, within)
	t.Logf("%d of %d groups on the killed master; replica promoted %v after the kill; every group delivering and both nodes ready after %v",
		onVictim, len(groups), promoted.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	if n, _ := cl.Replicas[victim].NewClient().PubSubShardNumSub(ctx, ch).Result(); n[ch] != 2 {
		t.Fatalf("g1's channel has %d sharded subscribers on the promoted replica, want both nodes", n[ch])
	}
	checkDeliveryBothWays(t, a, bn, groups)
}

// waitRecovered waits, after Redis lost a server at killed, until every
// group delivers again both ways between a and bn, then until both are
// ready; all within `within` of the kill. Until a node has re-subscribed a
// publication may be lost, so it publishes anew until one arrives.
func waitRecovered(t *testing.T, ctx context.Context, a, bn *testNode, groups []string, killed time.Time, within time.Duration) {
	t.Helper()
	for _, g := range groups {
		for _, pair := range [][2]*testNode{{a, bn}, {bn, a}} {
			from, to := pair[0], pair[1]
			for i := 0; ; i++ {
				if time.Since(killed) > within {
					t.Fatalf("group %s from %s to %s: no delivery within %v of the kill", g, from.NodeID(), to.NodeID(), within)
				}
				f := fmt.Sprintf("recover-%s-%s-%d", g, from.NodeID(), i)
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				err := from.Publish(pctx, ScopeGroup, g, []byte(f), "")
				cancel()
				if err == nil && waitUntil(300*time.Millisecond, func() bool {
					for _, d := range to.deliveries() {
						if string(d.Frame) == f {
							return true
						}
					}
					return false
				}) {
					break
				}
				if err != nil {
					time.Sleep(50 * time.Millisecond) // Redis has no primary yet: pace the retries
				}
			}
		}
	}
	for _, n := range []*testNode{a, bn} {
		waitFor(t, within-time.Since(killed)+time.Second, n.NodeID()+" ready", func() bool {
			return n.Ready(ctxT(t, time.Second)) == nil
		})
	}
}

// checkDeliveryBothWays publishes once to every group from each node and
// waits for the other node to receive it.
func checkDeliveryBothWays(t *testing.T, a, bn *testNode, groups []string) {
	t.Helper()
	for _, g := range groups {
		a.mustPublish(t, ScopeGroup, g, "after-"+g, "")
		bn.mustPublish(t, ScopeGroup, g, "back-"+g, "")
	}
	for _, g := range groups {
		bn.waitDelivery(t, 5*time.Second, "after "+g, frameIs("after-"+g))
		a.waitDelivery(t, 5*time.Second, "back "+g, frameIs("back-"+g))
	}
}

// waitUntil polls cond for up to d and reports whether it held.
func waitUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// TestSentinelFailover: two nodes on a Sentinel-managed primary watched by
// three sentinels (quorum two); the primary is killed; within the failover time plus a few seconds every group
// delivers again through the promoted replica and both nodes are ready,
// and messages sent after the recovery reach every member.
func TestSentinelFailover(t *testing.T) {
	ss := testredis.StartSentinel(t, 3)
	checkGoroutines(t)
	a := startNodeOn(t, ss.NewClient(), "a", nil)
	bn := startNodeOn(t, ss.NewClient(), "b", nil)
	groups := []string{"g1", "g2", "g3"}
	a.mustRegister(t, "a1", "ann", groups...)
	bn.mustRegister(t, "b1", "bob", groups...)
	for _, g := range groups {
		a.mustPublish(t, ScopeGroup, g, "before-"+g, "")
		bn.waitDelivery(t, 5*time.Second, "before "+g, frameIs("before-"+g))
	}

	ss.Master.Kill()
	killed := time.Now()
	within := testredis.DownAfter + testredis.FailoverTimeout + 15*time.Second
	ctx := ctxT(t, 2*within)
	waitFor(t, within, "the replica promoted", func() bool {
		addr, err := ss.MasterAddr(ctx)
		return err == nil && addr == ss.Replica.Addr()
	})
	promoted := time.Since(killed)
	waitRecovered(t, ctx, a, bn, groups, killed, within)
	recovered := time.Since(killed)
	t.Logf("replica promoted %v after the kill; every group delivering and both nodes ready after %v",
		promoted.Round(time.Millisecond), recovered.Round(time.Millisecond))
	checkDeliveryBothWays(t, a, bn, groups)
	if a.Stats().Reconnects == 0 || bn.Stats().Reconnects == 0 {
		t.Fatalf("reconnects not counted: %+v %+v", a.Stats(), bn.Stats())
	}
}

// TestShardedChannelNames: on Cluster every channel carries its bucket's
// hash tag, a channel's bucket is read back from its name, the buckets'
// slots lie in evenly spread ranges (one per bucket), and one server keeps
// the plain names.
func TestShardedChannelNames(t *testing.T) {
	plain := newKeys("hf", 0)
	if got := plain.chGroup("g"); got != "hf:ch:group:g" {
		t.Fatalf("plain group channel %q", got)
	}
	const n = 16
	k := newKeys("hf", n)
	for i := range n {
		probe := k.chProbe(i, "node1")
		if got := k.chBucket(probe); got != i {
			t.Fatalf("probe channel %q: bucket %d, want %d", probe, got, i)
		}
		slot := redisconn.Slot(probe)
		if lo, hi := i*redisconn.ClusterSlots/n, (i+1)*redisconn.ClusterSlots/n; slot < lo || slot >= hi {
			t.Fatalf("bucket %d: slot %d outside [%d, %d)", i, slot, lo, hi)
		}
	}
	count := make([]int, n)
	for i := range 1600 {
		g := "session-" + strconv.Itoa(i)
		ch := k.chGroup(g)
		b := k.chBucket(ch)
		if !strings.HasPrefix(ch, k.bucketTag(b)) || !strings.HasSuffix(ch, ":group:"+g) {
			t.Fatalf("channel %q in bucket %d", ch, b)
		}
		if redisconn.Slot(ch) != redisconn.Slot(k.chProbe(b, "x")) {
			t.Fatalf("channel %q not in its bucket's slot", ch)
		}
		count[b]++
	}
	for b, c := range count {
		if c < 50 || c > 150 { // 100 expected
			t.Fatalf("bucket %d has %d of 1600 groups: %v", b, c, count)
		}
	}
	// Group names may contain braces: the bucket's tag comes first.
	if ch := k.chGroup("{x}"); redisconn.Slot(ch) != redisconn.Slot(k.bucketTag(k.chBucket(ch))+"probe:x") {
		t.Fatalf("a brace in a group name changed the slot of %q", ch)
	}
}

// TestClusterReadyPerBucket: when the sharded subscriptions on one master
// are lost and Redis refuses to restore them (its ACL forbids SSUBSCRIBE;
// the other masters are fine), Ready is red: its probe goes through every
// bucket's connection. Once the master accepts them again the buckets are
// re-subscribed, Ready is green and delivery through them resumes.
func TestClusterReadyPerBucket(t *testing.T) {
	cl := testredis.StartCluster(t)
	checkGoroutines(t)
	b := testredis.Backend{Name: "redis-cluster", Cluster: cl}
	a := startNode(t, b, "a", nil)
	other := startNode(t, b, "other", nil)
	masters := masterClients(t, cl)
	ctx := ctxT(t, 60*time.Second)
	// A group whose bucket lives on master 0.
	group := ""
	for i := 0; group == ""; i++ {
		g := "g" + strconv.Itoa(i)
		slot := redisconn.Slot(a.k.chGroup(g))
		slots, err := masters[0].ClusterSlots(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range slots {
			if int(s.Start) <= slot && slot <= int(s.End) && s.Nodes[0].Addr == cl.Masters[0].Addr() {
				group = g
			}
		}
	}
	a.mustRegister(t, "a1", "ann", group)
	if err := a.Ready(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := masters[0].Do(ctx, "ACL", "SETUSER", "default", "-ssubscribe").Err(); err != nil {
		t.Fatal(err)
	}
	if err := masters[0].Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	var red error
	waitFor(t, 10*time.Second, "ready to fail", func() bool {
		red = a.Ready(ctxT(t, 500*time.Millisecond))
		return red != nil
	})
	if !strings.Contains(red.Error(), "bucket") {
		t.Fatalf("ready error does not name the bucket: %v", red)
	}
	t.Logf("red: %v", red)
	for i := range 3 { // and it stays red
		if err := a.Ready(ctxT(t, 500*time.Millisecond)); err == nil {
			t.Fatalf("ready while one master refuses the sharded subscriptions (check %d)", i)
		}
	}
	if err := masters[0].Do(ctx, "ACL", "SETUSER", "default", "+ssubscribe").Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "ready after the master accepts subscriptions again", func() bool {
		return a.Ready(ctxT(t, time.Second)) == nil
	})
	other.mustPublish(t, ScopeGroup, group, "healed", "")
	a.waitDelivery(t, 5*time.Second, "delivery through the restored bucket", frameIs("healed"))
}

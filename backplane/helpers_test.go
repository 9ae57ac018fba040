package backplane

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// testNode is a Backplane with a recording Handler.
type testNode struct {
	*Backplane
	rdb redis.UniversalClient

	mu  sync.Mutex
	got []Delivery // Frame copied
	sig chan struct{}
}

func (n *testNode) handle(d Delivery) {
	d.Frame = bytes.Clone(d.Frame)
	n.mu.Lock()
	n.got = append(n.got, d)
	n.mu.Unlock()
	select {
	case n.sig <- struct{}{}:
	default:
	}
}

// deliveries returns a copy of what arrived so far.
func (n *testNode) deliveries() []Delivery {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Delivery(nil), n.got...)
}

func (n *testNode) reset() {
	n.mu.Lock()
	n.got = nil
	n.mu.Unlock()
}

// waitDelivery waits until a delivery matching ok arrived and returns it.
func (n *testNode) waitDelivery(t testing.TB, within time.Duration, what string, ok func(Delivery) bool) Delivery {
	t.Helper()
	var found Delivery
	waitFor(t, within, what, func() bool {
		for _, d := range n.deliveries() {
			if ok(d) {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

func frameIs(s string) func(Delivery) bool {
	return func(d Delivery) bool { return string(d.Frame) == s }
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("BACKPLANE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
	}
	return slog.New(slog.DiscardHandler)
}

// startNode starts a Backplane with its own Redis client; it is shut down
// when the test ends.
func startNode(t testing.TB, b testredis.Backend, id string, tune func(*Config)) *testNode {
	t.Helper()
	rdb := b.NewClient()
	return startNodeOn(t, rdb, id, tune)
}

func startNodeOn(t testing.TB, rdb redis.UniversalClient, id string, tune func(*Config)) *testNode {
	t.Helper()
	// Short enough for quick health checks, long enough that a loaded test
	// machine does not make a live node miss DeadAfterMissed beats.
	cfg := Config{NodeID: id, Address: id + ":0", HeartbeatInterval: 200 * time.Millisecond}
	if tune != nil {
		tune(&cfg)
	}
	n := &testNode{rdb: rdb, sig: make(chan struct{}, 1)}
	bp, err := New(rdb, cfg, n.handle, testLogger(t))
	if err != nil {
		t.Fatalf("new %s: %v", id, err)
	}
	n.Backplane = bp
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bp.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = bp.Shutdown(ctx)
	})
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(2 * time.Millisecond) // poll interval, not a wait for the condition
	}
}

// ctxT is a context for one step of a test.
func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// checkGoroutines fails the test if, after every later cleanup ran (node
// shutdowns, client closes), more goroutines run than at the call.
func checkGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, ourStacks(buf))
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// ourStacks keeps the goroutine stacks that mention this package or go-redis.
func ourStacks(all []byte) string {
	var out []string
	for _, g := range strings.Split(string(all), "\n\n") {
		if strings.Contains(g, "backplane") || strings.Contains(g, "go-redis") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

// numsub returns the number of subscribers of a channel: sharded
// subscribers (on the master owning its slot) on Redis Cluster.
func numsub(t testing.TB, rdb redis.UniversalClient, ch string) int64 {
	t.Helper()
	ctx := context.Background()
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var n int64
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			m, err := c.PubSubShardNumSub(ctx, ch).Result()
			mu.Lock()
			n += m[ch]
			mu.Unlock()
			return err
		})
		if err != nil {
			t.Fatalf("PUBSUB SHARDNUMSUB: %v", err)
		}
		return n
	}
	m, err := rdb.PubSubNumSub(ctx, ch).Result()
	if err != nil {
		t.Fatalf("PUBSUB NUMSUB: %v", err)
	}
	return m[ch]
}

// exists counts the keys that exist, one EXISTS each (on Redis Cluster a
// multi-key EXISTS must not span slots).
func exists(ctx context.Context, rdb redis.UniversalClient, keys ...string) int64 {
	var n int64
	for _, k := range keys {
		m, _ := rdb.Exists(ctx, k).Result()
		n += m
	}
	return n
}

// rawPublish publishes payload on ch the way the backplane does on rdb's
// topology (SPUBLISH on Redis Cluster).
func rawPublish(ctx context.Context, rdb redis.UniversalClient, ch string, payload any) error {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return rdb.SPublish(ctx, ch, payload).Err()
	}
	return rdb.Publish(ctx, ch, payload).Err()
}

func connInfo(id, user string) ConnInfo {
	return ConnInfo{ID: id, Hub: "/hubs/test", User: user, Remote: "127.0.0.1:1", ConnectedAt: time.UnixMilli(1700000000000)}
}

// mustRegister registers a connection and joins it to groups.
func (n *testNode) mustRegister(t testing.TB, id, user string, groups ...string) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	if err := n.RegisterConnection(ctx, connInfo(id, user)); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	for _, g := range groups {
		if err := n.JoinGroup(ctx, id, g); err != nil {
			t.Fatalf("join %s %s: %v", id, g, err)
		}
	}
}

func (n *testNode) mustPublish(t testing.TB, scope Scope, key, frame, exclude string) {
	t.Helper()
	if err := n.Publish(ctxT(t, 10*time.Second), scope, key, []byte(frame), exclude); err != nil {
		t.Fatalf("%s publish %q: %v", n.NodeID(), frame, err)
	}
}

// fence makes sure every earlier publication of from that n subscribes to
// has reached n: publications of one node arrive in order, so once a marker
// sent after them to all arrived, they did too (or never will).
func fence(t testing.TB, from *testNode, to ...*testNode) {
	t.Helper()
	marker := fmt.Sprintf("fence-%d", time.Now().UnixNano())
	from.mustPublish(t, ScopeAll, "", marker, "")
	for _, n := range to {
		n.waitDelivery(t, 10*time.Second, "fence at "+n.NodeID(), frameIs(marker))
	}
}

package testredis

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
)

// TestCluster: the cluster has three masters sharing the slots, a cluster
// client reaches keys in every slot, Slot agrees with CLUSTER KEYSLOT, and
// MoveSlot hands an empty slot to another master.
func TestCluster(t *testing.T) {
	c := StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rdb := c.NewClient()
	owners := map[string]bool{}
	for i := range 30 {
		k := fmt.Sprintf("key-%d", i)
		if err := rdb.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatalf("set %s: %v", k, err)
		}
		want, err := c.Masters[0].NewClient().ClusterKeySlot(ctx, k).Result()
		if err != nil || int(want) != redisconn.Slot(k) {
			t.Fatalf("slot of %q: %d, CLUSTER KEYSLOT %d (%v)", k, redisconn.Slot(k), want, err)
		}
	}
	if got, want := redisconn.Slot("a{tag}b"), redisconn.Slot("tag"); got != want {
		t.Fatalf("hash tag: slot %d, want %d", got, want)
	}
	for _, m := range c.Masters {
		n, err := m.NewClient().DBSize(ctx).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			owners[m.Addr()] = true
		}
	}
	if len(owners) != 3 {
		t.Fatalf("keys on %d masters, want 3", len(owners))
	}
	if !strings.HasPrefix(c.URL(), "redis-cluster://") || len(c.Addrs()) != 3 {
		t.Fatalf("URL %q addrs %v", c.URL(), c.Addrs())
	}
	slot := redisconn.Slot("{empty-slot-tag}")
	if _, err := c.MoveSlot(ctx, slot, 0); err != nil {
		t.Fatal(err)
	}
	const to = 1
	if from, err := c.MoveSlot(ctx, slot, to); err != nil || from != 0 {
		t.Fatalf("move from master %d: %v", from, err)
	}
	if err := rdb.Set(ctx, "{empty-slot-tag}k", "v", 0).Err(); err != nil {
		t.Fatalf("set after the move: %v", err)
	}
	if n, _ := c.Masters[to].NewClient().Exists(ctx, "{empty-slot-tag}k").Result(); n != 1 {
		t.Fatalf("the key is not on master %d, the slot's new owner", to)
	}
}

// TestSentinel: the sentinels know the master and its replica, and a
// failover client writes through them.
func TestSentinel(t *testing.T) {
	ss := StartSentinel(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := ss.MasterAddr(ctx)
	if err != nil || addr != ss.Master.Addr() {
		t.Fatalf("master %q (%v), want %s", addr, err, ss.Master.Addr())
	}
	if err := ss.NewClient().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ss.URL(), "redis-sentinel://") || !strings.HasSuffix(ss.URL(), "/"+ss.MasterName) {
		t.Fatalf("URL %q", ss.URL())
	}
}

package backplane

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// TestRegistryUpdatesOfABurstShareRoundTrips: connections registering
// and joining a group all at once are all recorded, and (on a real
// redis-server, which counts its transactions) in fewer transactions than
// updates: those queued while a round trip was in flight went out together.
func TestRegistryUpdatesOfABurstShareRoundTrips(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		n := startNode(t, b, "a", nil)
		ctx := ctxT(t, 20*time.Second)
		var execBefore int
		if b.Real() {
			execBefore = commandCalls(t, b.Server.NewClient(), "exec")
		}
		const conns = 200
		var wg sync.WaitGroup
		errs := make(chan error, 2*conns)
		start := make(chan struct{})
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				id := fmt.Sprintf("c%d", i)
				errs <- n.RegisterConnection(ctx, connInfo(id, fmt.Sprintf("u%d", i)))
				errs <- n.JoinGroup(ctx, id, "burst")
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		members, err := n.GroupMembers(ctx, "burst")
		if err != nil || len(members) != conns {
			t.Fatalf("group has %d members (%v), want %d", len(members), err, conns)
		}
		for i := range conns {
			info, ok, err := n.Connection(ctx, fmt.Sprintf("c%d", i))
			if err != nil || !ok || info.User != fmt.Sprintf("u%d", i) {
				t.Fatalf("connection c%d: %+v %v %v", i, info, ok, err)
			}
		}
		if b.Real() {
			execs := commandCalls(t, b.Server.NewClient(), "exec") - execBefore
			t.Logf("%d updates in %d transactions", 2*conns, execs)
			if execs >= 2*conns {
				t.Fatalf("%d updates took %d transactions: none shared a round trip", 2*conns, execs)
			}
		}
	})
}

// TestRegistryWriterResults: in one batch, each update gets its own
// result (one hitting a key of the wrong type fails alone), and an update
// whose caller gave up while it was queued is not written at all.
func TestRegistryWriterResults(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n := startNode(t, b, "a", nil)
		ctx := ctxT(t, 10*time.Second)
		if err := n.rdb.Set(ctx, "not-a-set", "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
		gone, cancel := context.WithCancel(ctx)
		cancel()
		update := func(ctx context.Context, key string) *regUpdate {
			return &regUpdate{ctx: ctx, done: make(chan error, 1), queue: func(p redis.Pipeliner) {
				p.SAdd(ctx, key, "m")
				p.SAdd(ctx, key+"-2", "m")
			}}
		}
		batch := []*regUpdate{update(ctx, "ok-1"), update(ctx, "not-a-set"), update(gone, "abandoned"), update(ctx, "ok-2")}
		n.rw.send(append([]*regUpdate(nil), batch...))
		results := make([]error, len(batch))
		for i, u := range batch {
			select {
			case results[i] = <-u.done:
			default:
				t.Fatalf("update %d got no result", i)
			}
		}
		if results[0] != nil || results[3] != nil {
			t.Fatalf("the good updates failed: %v, %v", results[0], results[3])
		}
		if results[1] == nil || !strings.Contains(results[1].Error(), "WRONGTYPE") {
			t.Fatalf("the update of a string as a set: %v, want WRONGTYPE", results[1])
		}
		if !errors.Is(results[2], context.Canceled) {
			t.Fatalf("the abandoned update: %v, want context.Canceled", results[2])
		}
		for key, want := range map[string]int64{"ok-1": 1, "ok-1-2": 1, "ok-2-2": 1, "abandoned": 0, "abandoned-2": 0} {
			if got, err := n.rdb.Exists(ctx, key).Result(); err != nil || got != want {
				t.Errorf("key %s exists %d (%v), want %d", key, got, err, want)
			}
		}
	})
}

// TestRegistryWriteAfterShutdown: an update after the writer stopped is
// written directly (LeaveGroup during a drain), not lost or stuck.
func TestRegistryWriteAfterShutdown(t *testing.T) {
	b := testredis.Backend{Name: "redis-server", Server: testredis.Start(t)}
	n := startNode(t, b, "a", nil)
	n.rw.stop()
	ctx := ctxT(t, 5*time.Second)
	if err := n.rw.write(ctx, func(p redis.Pipeliner) { p.SAdd(ctx, "after-stop", "m") }); err != nil {
		t.Fatal(err)
	}
	if got, err := n.rdb.SIsMember(ctx, "after-stop", "m").Result(); err != nil || !got {
		t.Fatalf("the update after the stop was not written: %v %v", got, err)
	}
}

package backplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// TestFanOut: group, user, all, connection, close, control and membership
// messages reach exactly the nodes they address, with their fields.
func TestFanOut(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		bn := startNode(t, b, "b", nil)
		c := startNode(t, b, "c", nil)
		a.mustRegister(t, "a1", "ann", "g")
		bn.mustRegister(t, "b1", "bob", "g")
		c.mustRegister(t, "c1", "cat", "other")

		t.Run("group", func(t *testing.T) {
			a.mustPublish(t, ScopeGroup, "g", "to-g", "b2")
			d := bn.waitDelivery(t, 5*time.Second, "group frame at b", frameIs("to-g"))
			want := Delivery{Scope: ScopeGroup, Kind: KindFrame, Key: "g", Exclude: "b2", Origin: "a"}
			d.Frame = nil
			if fmt.Sprint(d) != fmt.Sprint(want) {
				t.Fatalf("delivery %+v, want %+v", d, want)
			}
			fence(t, a, bn, c)
			fence(t, bn, a)
			for _, n := range []*testNode{a, c} {
				for _, d := range n.deliveries() {
					if string(d.Frame) == "to-g" {
						t.Fatalf("%s received the group frame (origin %s)", n.NodeID(), d.Origin)
					}
				}
			}
		})
		t.Run("user", func(t *testing.T) {
			a.mustPublish(t, ScopeUser, "bob", "to-bob", "")
			d := bn.waitDelivery(t, 5*time.Second, "user frame at b", frameIs("to-bob"))
			if d.Scope != ScopeUser || d.Key != "bob" || d.Origin != "a" {
				t.Fatalf("delivery %+v", d)
			}
			fence(t, a, c)
			for _, d := range c.deliveries() {
				if string(d.Frame) == "to-bob" {
					t.Fatal("c received bob's frame")
				}
			}
		})
		t.Run("all", func(t *testing.T) {
			a.mustPublish(t, ScopeAll, "", "to-all", "a1")
			for _, n := range []*testNode{bn, c} {
				d := n.waitDelivery(t, 5*time.Second, "all frame", frameIs("to-all"))
				if d.Scope != ScopeAll || d.Exclude != "a1" {
					t.Fatalf("delivery %+v", d)
				}
			}
			fence(t, bn, a)
			for _, d := range a.deliveries() {
				if string(d.Frame) == "to-all" {
					t.Fatal("origin received its own publication")
				}
			}
		})
		t.Run("connection", func(t *testing.T) {
			ctx := ctxT(t, 5*time.Second)
			if err := c.PublishConnection(ctx, "b1", []byte("to-b1")); err != nil {
				t.Fatal(err)
			}
			d := bn.waitDelivery(t, 5*time.Second, "connection frame", frameIs("to-b1"))
			if d.Scope != ScopeConnection || d.Key != "b1" || d.Kind != KindFrame || d.Origin != "c" {
				t.Fatalf("delivery %+v", d)
			}
			err := c.PublishConnection(ctx, "nobody", []byte("x"))
			if !errors.Is(err, ErrUnknownConnection) {
				t.Fatalf("unknown connection: %v", err)
			}
			if err := c.CloseConnection(ctx, "b1", "bye"); err != nil {
				t.Fatal(err)
			}
			bn.waitDelivery(t, 5*time.Second, "close", func(d Delivery) bool {
				return d.Kind == KindClose && d.Key == "b1" && d.Arg == "bye"
			})
		})
		t.Run("control", func(t *testing.T) {
			ctx := ctxT(t, 5*time.Second)
			if err := a.PublishNodeControl(ctx, "b", "approve", []byte("body")); err != nil {
				t.Fatal(err)
			}
			bn.waitDelivery(t, 5*time.Second, "control", func(d Delivery) bool {
				return d.Kind == KindControl && d.Scope == ScopeNode && d.Key == "b" && d.Arg == "approve" && string(d.Frame) == "body"
			})
			// To itself: delivered back through its own inbox.
			if err := a.PublishNodeControl(ctx, "a", "self", nil); err != nil {
				t.Fatal(err)
			}
			a.waitDelivery(t, 5*time.Second, "control to self", func(d Delivery) bool { return d.Arg == "self" })
			// To a node nobody is: fails fast.
			if err := a.PublishNodeControl(ctx, "ghost", "x", nil); !errors.Is(err, ErrNoReceiver) {
				t.Fatalf("control to a missing node: %v", err)
			}
		})
		t.Run("membership", func(t *testing.T) {
			ctx := ctxT(t, 5*time.Second)
			if err := a.PublishUserMembership(ctx, "bob", "g2", true); err != nil {
				t.Fatal(err)
			}
			bn.waitDelivery(t, 5*time.Second, "join", func(d Delivery) bool {
				return d.Kind == KindJoinGroup && d.Scope == ScopeUser && d.Key == "bob" && d.Arg == "g2"
			})
			if err := a.PublishUserMembership(ctx, "bob", "g2", false); err != nil {
				t.Fatal(err)
			}
			bn.waitDelivery(t, 5*time.Second, "leave", func(d Delivery) bool {
				return d.Kind == KindLeaveGroup && d.Key == "bob" && d.Arg == "g2"
			})
		})
		t.Run("invalid scope", func(t *testing.T) {
			err := a.Publish(ctxT(t, time.Second), ScopeConnection, "b1", nil, "")
			if !errors.Is(err, ErrInvalidScope) {
				t.Fatalf("got %v", err)
			}
		})
		if s := a.Stats(); s.Published == 0 || s.Subscriptions < 4 {
			t.Fatalf("stats %+v", s)
		}
	}, testredis.WithCluster())
}

// TestPerSenderOrder: 1000 publications of one node to a group arrive at
// another node in call order, sequentially and from concurrent senders
// (each sender's own order).
func TestPerSenderOrder(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		recv := startNode(t, b, "recv", nil)
		send := startNode(t, b, "send", nil)
		recv.mustRegister(t, "r1", "", "ordered")

		const n = 1000
		for i := range n {
			send.mustPublish(t, ScopeGroup, "ordered", "s-"+strconv.Itoa(i), "")
		}
		const senders, each = 4, 250
		var wg sync.WaitGroup
		for s := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					if err := send.Publish(context.Background(), ScopeGroup, "ordered", []byte(fmt.Sprintf("c-%d-%d", s, i)), ""); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
				}
			}()
		}
		wg.Wait()
		waitFor(t, 20*time.Second, "all publications", func() bool { return len(recv.deliveries()) >= n+senders*each })
		got := recv.deliveries()
		if len(got) != n+senders*each {
			t.Fatalf("%d deliveries, want %d", len(got), n+senders*each)
		}
		next := map[string]int{}
		for _, d := range got {
			f := string(d.Frame)
			var key string
			var i int
			if strings.HasPrefix(f, "s-") {
				key, i = "s", atoi(t, f[2:])
			} else {
				parts := strings.Split(f, "-")
				key, i = parts[1], atoi(t, parts[2])
			}
			if i != next[key] {
				t.Fatalf("sender %s: got %d, want %d (out of order or lost)", key, i, next[key])
			}
			next[key]++
		}
		if s := recv.Stats(); s.Duplicates != 0 || s.Dropped != 0 {
			t.Fatalf("stats %+v", s)
		}
	}, testredis.WithCluster())
}

func atoi(t testing.TB, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("bad frame number %q", s)
	}
	return n
}

// TestJoinThenPublishNeverMissed: a publication from another node made
// after JoinGroup returned always arrives, both for a fresh group channel and
// for one that was just unsubscribed (leave, join, publish).
func TestJoinThenPublishNeverMissed(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		other := startNode(t, b, "other", nil)
		a.mustRegister(t, "a1", "")
		ctx := ctxT(t, 60*time.Second)
		for i := range 200 {
			group := "fresh-" + strconv.Itoa(i)
			if i%2 == 1 {
				group = "same" // joined, left, joined again...
			}
			if err := a.JoinGroup(ctx, "a1", group); err != nil {
				t.Fatalf("iteration %d: join: %v", i, err)
			}
			frame := "j-" + strconv.Itoa(i)
			other.mustPublish(t, ScopeGroup, group, frame, "")
			a.waitDelivery(t, 5*time.Second, "frame "+frame, frameIs(frame))
			if err := a.LeaveGroup(ctx, "a1", group); err != nil {
				t.Fatalf("iteration %d: leave: %v", i, err)
			}
		}
		if got := a.Stats().Subscriptions; got != 2 { // inbox and all
			t.Fatalf("subscriptions after leaving everything: %d", got)
		}
	}, testredis.WithCluster())
}

// TestRefcount: a group channel stays subscribed while a local member
// remains and is unsubscribed when the last one leaves; concurrent joins and
// leaves of one group end consistent.
func TestRefcount(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		other := startNode(t, b, "other", nil)
		admin := b.NewClient()
		ch := a.k.chGroup("rc")
		a.mustRegister(t, "a1", "u", "rc")
		a.mustRegister(t, "a2", "u", "rc")
		if got := numsub(t, admin, ch); got != 1 {
			t.Fatalf("NUMSUB with two members: %d", got)
		}
		if got := numsub(t, admin, a.k.chUser("u")); got != 1 {
			t.Fatalf("user channel NUMSUB: %d", got)
		}
		ctx := ctxT(t, 10*time.Second)
		if err := a.LeaveGroup(ctx, "a1", "rc"); err != nil {
			t.Fatal(err)
		}
		if got := numsub(t, admin, ch); got != 1 {
			t.Fatalf("NUMSUB after one left: %d", got)
		}
		other.mustPublish(t, ScopeGroup, "rc", "still", "")
		a.waitDelivery(t, 5*time.Second, "delivery with one member left", frameIs("still"))
		if err := a.LeaveGroup(ctx, "a2", "rc"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "unsubscribe after the last leave", func() bool { return numsub(t, admin, ch) == 0 })
		if got := a.subs.refs(ch); got != 0 {
			t.Fatalf("refs %d", got)
		}
		// The user channel goes with the last connection of the user.
		if err := a.UnregisterConnection(ctx, connInfo("a1", "u"), nil); err != nil {
			t.Fatal(err)
		}
		if got := numsub(t, admin, a.k.chUser("u")); got != 1 {
			t.Fatalf("user channel after one of two left: %d", got)
		}
		if err := a.UnregisterConnection(ctx, connInfo("a2", "u"), nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "user channel unsubscribed", func() bool { return numsub(t, admin, a.k.chUser("u")) == 0 })

		// Concurrent joins and leaves of one group by 8 connections.
		const conns, rounds = 8, 30
		for i := range conns {
			a.mustRegister(t, "x"+strconv.Itoa(i), "")
		}
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := "x" + strconv.Itoa(i)
				for r := range rounds {
					var err error
					if r%2 == 0 {
						err = a.JoinGroup(ctx, id, "busy")
					} else {
						err = a.LeaveGroup(ctx, id, "busy")
					}
					if err != nil {
						t.Errorf("%s round %d: %v", id, r, err)
						return
					}
				}
				if i%2 == 0 { // half end as members
					if err := a.JoinGroup(ctx, id, "busy"); err != nil {
						t.Errorf("final join: %v", err)
					}
				}
			}()
		}
		wg.Wait()
		busy := a.k.chGroup("busy")
		if got := a.subs.refs(busy); got != conns/2 {
			t.Fatalf("refs %d, want %d", got, conns/2)
		}
		if got := numsub(t, admin, busy); got != 1 {
			t.Fatalf("NUMSUB busy: %d", got)
		}
		members, err := a.GroupMembers(ctx, "busy")
		if err != nil || len(members) != conns/2 {
			t.Fatalf("members %v %v", members, err)
		}
		other.mustPublish(t, ScopeGroup, "busy", "after-churn", "")
		a.waitDelivery(t, 5*time.Second, "delivery after churn", frameIs("after-churn"))
	}, testredis.WithCluster())
}

// TestRegistry: register, join, query and unregister keep every key right.
func TestRegistry(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", func(c *Config) {
			c.NodeStats = func() NodeStats { return NodeStats{MessagesIn: 5, MessagesOut: 9} }
		})
		bn := startNode(t, b, "b", nil)
		a.mustRegister(t, "a1", "ann", "g1", "g2")
		bn.mustRegister(t, "b1", "ann", "g1")
		ctx := ctxT(t, 10*time.Second)

		eq := func(what string, got []string, err error, want ...string) {
			t.Helper()
			if err != nil || strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("%s: %v (%v), want %v", what, got, err, want)
			}
		}
		m, err := a.GroupMembers(ctx, "g1")
		eq("g1 members", m, err, "a1", "b1")
		m, err = bn.UserConnections(ctx, "ann")
		eq("ann's connections", m, err, "a1", "b1")
		m, err = bn.ConnectionGroups(ctx, "a1")
		eq("a1's groups", m, err, "g1", "g2")
		info, ok, err := bn.Connection(ctx, "a1")
		if err != nil || !ok || info != connInfo("a1", "ann") {
			t.Fatalf("connection: %+v %v %v", info, ok, err)
		}
		nodes, err := a.Nodes(ctx)
		if err != nil || len(nodes) != 2 || nodes[0].ID != "a" || nodes[0].Address != "a:0" || nodes[1].ID != "b" {
			t.Fatalf("nodes %+v %v", nodes, err)
		}
		// The connection count arrives with the next heartbeat, with the
		// node's message counts (none from a node without NodeStats).
		waitFor(t, 5*time.Second, "connection count", func() bool {
			nodes, _ := a.Nodes(ctx)
			return len(nodes) == 2 && nodes[0].Connections == 1 && !nodes[0].Started.IsZero() &&
				nodes[0].MessagesIn == 5 && nodes[0].MessagesOut == 9 && nodes[1].MessagesIn == 0 && nodes[1].MessagesOut == 0
		})

		if err := a.UnregisterConnection(ctx, connInfo("a1", "ann"), []string{"g1"}); err != nil {
			t.Fatal(err)
		}
		m, err = a.GroupMembers(ctx, "g1")
		eq("g1 after unregister", m, err, "b1")
		m, err = a.GroupMembers(ctx, "g2") // known to the backplane, not passed in
		eq("g2 after unregister", m, err)
		m, err = a.UserConnections(ctx, "ann")
		eq("ann after unregister", m, err, "b1")
		m, err = a.ConnectionGroups(ctx, "a1")
		eq("a1 groups after unregister", m, err)
		if _, ok, _ := a.Connection(ctx, "a1"); ok {
			t.Fatal("a1 still registered")
		}
		if err := a.JoinGroup(ctx, "a1", "late"); !errors.Is(err, ErrUnknownConnection) {
			t.Fatalf("join after unregister: %v", err)
		}
		if err := a.RegisterConnection(ctx, connInfo("bad:id", "")); err == nil {
			t.Fatal("id with ':' accepted")
		}
	}, testredis.WithCluster())
}

// TestShutdown removes the node's connections and keys, is idempotent, and
// refuses work afterwards.
func TestShutdown(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		bn := startNode(t, b, "b", nil)
		a.mustRegister(t, "a1", "ann", "g")
		bn.mustRegister(t, "b1", "ann", "g")
		ctx := ctxT(t, 10*time.Second)
		if err := a.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Shutdown(ctx); err != nil {
			t.Fatalf("second shutdown: %v", err)
		}
		m, _ := bn.GroupMembers(ctx, "g")
		u, _ := bn.UserConnections(ctx, "ann")
		if strings.Join(m, ",") != "b1" || strings.Join(u, ",") != "b1" {
			t.Fatalf("after shutdown: group %v user %v", m, u)
		}
		for _, k := range []string{a.k.node("a"), a.k.nodeConns("a"), a.k.conn("a1"), a.k.connGroups("a1")} {
			if n, _ := bn.rdb.Exists(ctx, k).Result(); n != 0 {
				t.Fatalf("%s left behind", k)
			}
		}
		nodes, _ := bn.Nodes(ctx)
		if len(nodes) != 1 || nodes[0].ID != "b" {
			t.Fatalf("nodes %+v", nodes)
		}
		if err := a.Publish(ctx, ScopeAll, "", nil, ""); !errors.Is(err, ErrClosed) {
			t.Fatalf("publish after shutdown: %v", err)
		}
		if err := a.JoinGroup(ctx, "a1", "g"); !errors.Is(err, ErrClosed) {
			t.Fatalf("join after shutdown: %v", err)
		}
		if err := a.Ready(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("ready after shutdown: %v", err)
		}
		if err := a.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("start after shutdown: %v", err)
		}
	}, testredis.WithCluster())
}

// TestReady: green on a healthy node, red before Start.
func TestReady(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		a := startNode(t, b, "a", nil)
		if err := a.Ready(ctxT(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		bp, err := New(b.NewClient(), Config{NodeID: "x"}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := bp.Ready(ctxT(t, time.Second)); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("ready before start: %v", err)
		}
		if err := bp.Shutdown(ctxT(t, time.Second)); err != nil {
			t.Fatalf("shutdown of a never started backplane: %v", err)
		}
	}, testredis.WithCluster())
}

// TestDuplicatesAndGarbage: a re-sent envelope (same origin instance and
// seq) is delivered once; undecodable messages and a panicking handler are
// counted, not fatal.
func TestDuplicatesAndGarbage(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		var panics atomic.Int32
		// A backplane whose handler panics on "boom" frames.
		rdb := b.NewClient()
		a := &testNode{rdb: rdb, sig: make(chan struct{}, 1)}
		bp, err := New(rdb, Config{NodeID: "p", HeartbeatInterval: 100 * time.Millisecond}, func(d Delivery) {
			if string(d.Frame) == "boom" {
				panics.Add(1)
				panic("handler bug")
			}
			a.handle(d)
		}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		a.Backplane = bp
		if err := bp.Start(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = bp.Shutdown(context.Background()) })
		ctx := ctxT(t, 10*time.Second)
		e := envelope{kind: KindFrame, scope: ScopeAll, instance: 42, seq: 5, origin: "z"}
		msg := appendEnvelope(nil, &e, []byte("once"))
		admin := b.NewClient()
		ch := a.k.chAll()
		for range 2 {
			if err := rawPublish(ctx, admin, ch, msg); err != nil {
				t.Fatal(err)
			}
		}
		e.seq = 6
		if err := rawPublish(ctx, admin, ch, "garbage"); err != nil {
			t.Fatal(err)
		}
		if err := rawPublish(ctx, admin, ch, appendEnvelope(nil, &e, []byte("boom"))); err != nil {
			t.Fatal(err)
		}
		e.seq = 7
		if err := rawPublish(ctx, admin, ch, appendEnvelope(nil, &e, []byte("after"))); err != nil {
			t.Fatal(err)
		}
		a.waitDelivery(t, 5*time.Second, "after", frameIs("after"))
		n := 0
		for _, d := range a.deliveries() {
			if string(d.Frame) == "once" {
				n++
			}
		}
		s := a.Stats()
		if n != 1 || s.Duplicates != 1 || s.Dropped != 2 || panics.Load() != 1 {
			t.Fatalf("once delivered %d times, stats %+v, panics %d", n, s, panics.Load())
		}
	}, testredis.WithCluster())
}

// BenchmarkPublish measures group fan-out throughput from one node to
// another over a real redis-server: 256-byte frames from parallel callers,
// each call blocking until its pipeline ran.
func BenchmarkPublish(bm *testing.B) {
	srv := testredis.Start(bm)
	b := testredis.Backend{Name: "redis-server", Server: srv}
	recv := startNode(bm, b, "recv", func(c *Config) { c.HeartbeatInterval = time.Second })
	send := startNode(bm, b, "send", func(c *Config) { c.HeartbeatInterval = time.Second })
	recv.mustRegister(bm, "r1", "", "bench")
	frame := make([]byte, 256)
	bm.ReportAllocs()
	bm.SetParallelism(32)
	bm.ResetTimer()
	bm.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := send.Publish(ctx, ScopeGroup, "bench", frame, ""); err != nil {
				bm.Error(err)
				return
			}
		}
	})
	bm.StopTimer()
	s := send.Stats()
	bm.ReportMetric(float64(s.Published)/bm.Elapsed().Seconds(), "pub/s")
}

// TestPostKeepsOrder: Post does not wait for Redis, but its publications
// keep their place among the node's Publish calls, and all arrive.
func TestPostKeepsOrder(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		checkGoroutines(t)
		recv := startNode(t, b, "recv", nil)
		send := startNode(t, b, "send", nil)
		recv.mustRegister(t, "r1", "", "posted")

		const n = 2000
		ctx := context.Background()
		for i := range n {
			frame := []byte("m-" + strconv.Itoa(i))
			var err error
			if i%3 == 0 {
				err = send.Publish(ctx, ScopeGroup, "posted", frame, "")
			} else {
				err = send.Post(ctx, ScopeGroup, "posted", frame, "")
			}
			if err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		waitFor(t, 20*time.Second, "all publications", func() bool { return len(recv.deliveries()) >= n })
		for i, d := range recv.deliveries() {
			if want := "m-" + strconv.Itoa(i); string(d.Frame) != want {
				t.Fatalf("delivery %d is %q, want %q (out of order or lost)", i, d.Frame, want)
			}
		}
		waitFor(t, 5*time.Second, "posted publications counted", func() bool { return send.Stats().Published >= n })
		if s := send.Stats(); s.PublishErrors != 0 {
			t.Fatalf("sender stats %+v", s)
		}
		if err := send.Post(ctx, ScopeGroup, "posted", []byte("x"), ""); err != nil {
			t.Fatalf("post: %v", err)
		}
		if err := send.Post(ctx, Scope(99), "posted", []byte("x"), ""); !errors.Is(err, ErrInvalidScope) {
			t.Fatalf("post with a bad scope: %v", err)
		}
	})
}

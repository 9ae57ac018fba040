package session

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// clock is a test's time: the store's Now and, through advance, Redis's
// TTLs move together.
type clock struct {
	t   *testing.T
	b   testredis.Backend
	rdb redis.UniversalClient
	now time.Time
}

func newClock(t *testing.T, b testredis.Backend, rdb redis.UniversalClient) *clock {
	return &clock{t: t, b: b, rdb: rdb, now: time.Unix(1_800_000_000, 0)}
}

func (c *clock) Now() time.Time { return c.now }

// advance moves time on by d. miniredis fast-forwards its clock; on a real
// server every key's remaining TTL is shortened by d (and a key whose TTL
// runs out is deleted), which is what d passing would do to it.
func (c *clock) advance(d time.Duration) {
	c.t.Helper()
	c.now = c.now.Add(d)
	if c.b.Mini != nil {
		c.b.Mini.FastForward(d)
		return
	}
	ctx := context.Background()
	for _, k := range testredis.Keys(c.t, c.rdb) {
		left, err := c.rdb.PTTL(ctx, k).Result()
		if err != nil {
			c.t.Fatal(err)
		}
		switch {
		case left < 0: // no TTL (or gone meanwhile)
		case left <= d:
			err = c.rdb.Del(ctx, k).Err()
		default:
			err = c.rdb.PExpire(ctx, k, left-d).Err()
		}
		if err != nil {
			c.t.Fatal(err)
		}
	}
}

// checkTTL fails unless every key has a TTL within a minute of want.
func checkTTL(t *testing.T, rdb redis.UniversalClient, want time.Duration, keys ...string) {
	t.Helper()
	for _, k := range keys {
		d, err := rdb.PTTL(context.Background(), k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if d < want-time.Minute || d > want {
			t.Fatalf("%s: TTL %v, want about %v", k, d, want)
		}
	}
}

// ttlEnv is a store with a test clock and a 7-day TTL, and a session of
// alice's that bob joined.
type ttlEnv struct {
	rdb  redis.UniversalClient
	clk  *clock
	s    *Store
	sess contract.Session
}

const testTTL = 7 * 24 * time.Hour

func newTTLEnv(t *testing.T, b testredis.Backend) ttlEnv {
	t.Helper()
	ctx := context.Background()
	rdb := b.NewClient()
	clk := newClock(t, b, rdb)
	s := NewStore(rdb, &recordingRouter{}, Config{Prefix: "t", TTL: testTTL, Now: clk.Now})
	sess, err := s.Create(ctx, "alice", contract.CreateSessionRequest{Name: "n", Type: contract.SessionTypeMultiAgent})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Join(ctx, "bob", sess.ID); err != nil {
		t.Fatal(err)
	}
	return ttlEnv{rdb: rdb, clk: clk, s: s, sess: sess}
}

// TestActiveSessionOutlivesTTL: a session with an event a day is kept well
// past its TTL, record and members included, not only its history.
func TestActiveSessionOutlivesTTL(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		v := newTTLEnv(t, b)
		rdb, clk, s, sess, ttl := v.rdb, v.clk, v.s, v.sess, testTTL
		for day := 1; day <= 10; day++ {
			clk.advance(24 * time.Hour)
			if _, err := s.Emit(ctx, sess.ID, "", "T", map[string]int{"day": day}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, sess.ID); err != nil {
				t.Fatalf("day %d: session: %v", day, err)
			}
			for _, u := range []string{"alice", "bob"} {
				if ok, err := s.IsMember(ctx, sess.ID, u); err != nil || !ok {
					t.Fatalf("day %d: %s a member: %v %v", day, u, ok, err)
				}
			}
			checkTTL(t, rdb, ttl, s.keySession(sess.ID), s.keyMembers(sess.ID), s.keyEvents(sess.ID))
		}
		if evs, err := s.History(ctx, sess.ID, "", 100); err != nil || len(evs) != 10 {
			t.Fatalf("history: %d events, %v; want 10", len(evs), err)
		}
		// A join renews too: the session is kept a TTL after it.
		clk.advance(ttl - time.Hour)
		if _, err := s.Join(ctx, "carol", sess.ID); err != nil {
			t.Fatal(err)
		}
		checkTTL(t, rdb, ttl, s.keySession(sess.ID), s.keyMembers(sess.ID), s.keyEvents(sess.ID))
		clk.advance(2 * time.Hour)
		if ok, err := s.IsMember(ctx, sess.ID, "bob"); err != nil || !ok {
			t.Fatalf("bob a member after carol's join renewed the session: %v %v", ok, err)
		}
	}, testredis.WithCluster())
}

// TestIdleSessionExpires: a session without activity is gone, every key of
// it, a TTL after its last activity.
func TestIdleSessionExpires(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		v := newTTLEnv(t, b)
		rdb, clk, s, sess, ttl := v.rdb, v.clk, v.s, v.sess, testTTL
		if _, err := s.Emit(ctx, sess.ID, "", "T", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		clk.advance(ttl - time.Minute)
		if ok, _ := s.Exists(ctx, sess.ID); !ok {
			t.Fatal("session gone before its TTL")
		}
		clk.advance(2 * time.Minute)
		if ok, _ := s.Exists(ctx, sess.ID); ok {
			t.Fatal("idle session still there after its TTL")
		}
		if keys := testredis.Keys(t, rdb); len(keys) != 0 {
			t.Fatalf("keys left after the TTL: %v", keys)
		}
		if _, err := s.Join(ctx, "bob", sess.ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("join of the expired session: %v", err)
		}
	})
}

// TestJoinUnknownSessionLeavesNothing: joining or inviting to an unknown id
// reports ErrNotFound and writes no key (the user's connections still join
// its group, as the original hub's did).
func TestJoinUnknownSessionLeavesNothing(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		rdb := b.NewClient()
		router := &recordingRouter{}
		s := NewStore(rdb, router, Config{Prefix: "t"})
		if _, err := s.Join(ctx, "bob", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("join unknown: %v", err)
		}
		if keys := testredis.Keys(t, rdb); len(keys) != 0 {
			t.Fatalf("keys after joining an unknown session: %v", keys)
		}
		if g := router.joined[GroupName("nope")]; !slices.Equal(g, []string{"bob"}) {
			t.Fatalf("group joins %v, want bob's", g)
		}
		if err := s.Invite(ctx, "nope", "carol"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("invite to unknown: %v", err)
		}
		if keys := testredis.Keys(t, rdb); len(keys) != 0 {
			t.Fatalf("keys after inviting to an unknown session: %v", keys)
		}

		// A user with sessions keeps them, and only them.
		sess, err := s.Create(ctx, "alice", contract.CreateSessionRequest{Name: "n", Type: contract.SessionTypeMultiAgent})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, "bob", sess.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Join(ctx, "bob", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("join unknown: %v", err)
		}
		for _, k := range testredis.Keys(t, rdb) {
			if strings.Contains(k, "nope") {
				t.Fatalf("key %s left by joining an unknown session", k)
			}
		}
		if ids, _ := rdb.SMembers(ctx, s.keyUserSessions("bob")).Result(); !slices.Equal(ids, []string{sess.ID}) {
			t.Fatalf("bob's sessions %v, want [%s]", ids, sess.ID)
		}
		checkTTL(t, rdb, s.cfg.TTL, s.keyUserSessions("bob"))
		if ids, err := s.UserSessions(ctx, "bob"); err != nil || !slices.Equal(ids, []string{sess.ID}) {
			t.Fatalf("bob rejoins %v (%v), want [%s]", ids, err, sess.ID)
		}
	}, testredis.WithCluster())
}

// TestRejoinDropsGoneSessions: a rejoin lists only the sessions that still
// exist and drops the others from the user's list, whose TTL it renews.
func TestRejoinDropsGoneSessions(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		rdb := b.NewClient()
		clk := newClock(t, b, rdb)
		const ttl = 7 * 24 * time.Hour
		s := NewStore(rdb, &recordingRouter{}, Config{Prefix: "t", TTL: ttl, Now: clk.Now})
		req := contract.CreateSessionRequest{Name: "n", Type: contract.SessionTypeMultiAgent}
		idle, err := s.Create(ctx, "alice", req)
		if err != nil {
			t.Fatal(err)
		}
		busy, err := s.Create(ctx, "alice", req)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{idle.ID, busy.ID} {
			if _, err := s.Join(ctx, "bob", id); err != nil {
				t.Fatal(err)
			}
		}
		clk.advance(4 * 24 * time.Hour)
		if _, err := s.Emit(ctx, busy.ID, "", "T", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		ids, err := s.UserSessions(ctx, "bob")
		sort.Strings(ids)
		want := []string{idle.ID, busy.ID}
		sort.Strings(want)
		if err != nil || !slices.Equal(ids, want) {
			t.Fatalf("bob's sessions on day 4: %v (%v), want %v", ids, err, want)
		}
		checkTTL(t, rdb, ttl, s.keyUserSessions("bob")) // renewed by the rejoin

		clk.advance(4 * 24 * time.Hour) // the idle session has expired
		if ok, _ := s.Exists(ctx, idle.ID); ok {
			t.Fatal("the idle session outlived its TTL")
		}
		ids, err = s.UserSessions(ctx, "bob")
		if err != nil || !slices.Equal(ids, []string{busy.ID}) {
			t.Fatalf("bob's sessions on day 8: %v (%v), want [%s]", ids, err, busy.ID)
		}
		if raw, _ := rdb.SMembers(ctx, s.keyUserSessions("bob")).Result(); !slices.Equal(raw, []string{busy.ID}) {
			t.Fatalf("bob's stored sessions %v: the gone one was not dropped", raw)
		}
		checkTTL(t, rdb, ttl, s.keyUserSessions("bob"))
	}, testredis.WithCluster())
}

// roundTrips counts what a client sends: commands alone and pipelines.
type roundTrips struct {
	mu     sync.Mutex
	single []string
	pipes  [][]string
}

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.mu.Lock()
		r.single = append(r.single, cmd.Name())
		r.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		names := make([]string, len(cmds))
		for i, c := range cmds {
			names[i] = c.Name()
		}
		r.mu.Lock()
		r.pipes = append(r.pipes, names)
		r.mu.Unlock()
		return next(ctx, cmds)
	}
}

func (r *roundTrips) take() (single []string, pipes [][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	single, pipes = r.single, r.pipes
	r.single, r.pipes = nil, nil
	return single, pipes
}

// TestRoundTrips: an event not due a renewal costs its XADD alone, one due
// renews the three session keys in the same round trip, and a join of an
// existing session is one round trip.
func TestRoundTrips(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		rdb := b.NewClient()
		clk := newClock(t, b, rdb)
		s := NewStore(rdb, &recordingRouter{}, Config{Prefix: "t", Now: clk.Now})
		sess, err := s.Create(ctx, "alice", contract.CreateSessionRequest{Name: "n", Type: contract.SessionTypeMultiAgent})
		if err != nil {
			t.Fatal(err)
		}
		// The first join loads the script into Redis.
		if _, err := s.Join(ctx, "bob", sess.ID); err != nil {
			t.Fatal(err)
		}
		rt := &roundTrips{}
		rdb.AddHook(rt)

		if _, err := s.Join(ctx, "carol", sess.ID); err != nil {
			t.Fatal(err)
		}
		single, pipes := rt.take()
		if len(single) != 0 || len(pipes) != 1 || !slices.Equal(pipes[0], []string{"evalsha", "sadd", "pexpire"}) {
			t.Fatalf("join: commands %v, pipelines %v; want one pipeline", single, pipes)
		}

		emit := func() {
			t.Helper()
			if _, err := s.Emit(ctx, sess.ID, "", "T", map[string]int{}); err != nil {
				t.Fatal(err)
			}
		}
		emit()
		single, pipes = rt.take()
		if len(single) != 0 || len(pipes) != 1 || !slices.Equal(pipes[0], []string{"xadd", "pexpire", "pexpire", "pexpire"}) {
			t.Fatalf("first event: commands %v, pipelines %v; want XADD and three PEXPIRE in one", single, pipes)
		}
		clk.advance(30 * time.Second)
		rt.take() // what advancing the clock sent
		emit()
		single, pipes = rt.take()
		if !slices.Equal(single, []string{"xadd"}) || len(pipes) != 0 {
			t.Fatalf("event within the renewal interval: commands %v, pipelines %v; want XADD alone", single, pipes)
		}
		clk.advance(31 * time.Second)
		rt.take() // what advancing the clock sent
		emit()
		if _, pipes = rt.take(); len(pipes) != 1 || len(pipes[0]) != 4 {
			t.Fatalf("event after the renewal interval: pipelines %v; want the renewal", pipes)
		}
	})
}

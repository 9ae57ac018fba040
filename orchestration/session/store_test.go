package session

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// sentFrame is one send the store asked the router for.
type sentFrame struct {
	scope, key, exclude, target string
	payload                     json.RawMessage
}

// recordingRouter stands in for the hub node at the store's boundary: it
// records what the store asked to send and which users joined which groups.
type recordingRouter struct {
	mu     sync.Mutex
	sent   []sentFrame
	joined map[string][]string
	fail   error
}

func (r *recordingRouter) SendGroupExcept(_ context.Context, group, exclude, target string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sentFrame{"group", group, exclude, target, args[0].(json.RawMessage)})
	return r.fail
}

func (r *recordingRouter) PostGroupExcept(ctx context.Context, group, exclude, target string, args ...any) error {
	return r.SendGroupExcept(ctx, group, exclude, target, args...)
}

func (r *recordingRouter) SendConnection(_ context.Context, conn, target string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sent = append(r.sent, sentFrame{"conn", conn, "", target, args[0].(json.RawMessage)})
	return r.fail
}

func (r *recordingRouter) AddUserToGroup(_ context.Context, user, group string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.joined == nil {
		r.joined = map[string][]string{}
	}
	r.joined[group] = append(r.joined[group], user)
	return nil
}

func (r *recordingRouter) RemoveUserFromGroup(_ context.Context, user, group string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var keep []string
	for _, u := range r.joined[group] {
		if u != user {
			keep = append(keep, u)
		}
	}
	r.joined[group] = keep
	return nil
}

func TestStoreLifecycle(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		router := &recordingRouter{}
		s := NewStore(b.NewClient(), router, Config{Prefix: "t"})

		sess, err := s.Create(ctx, "alice", contract.CreateSessionRequest{Name: "n", Type: contract.SessionTypeMultiAgent, AgentIDs: []string{"a1"}})
		if err != nil {
			t.Fatal(err)
		}
		if sess.ID == "" || sess.Name != "n" || len(sess.ParticipantAgentIDs) != 1 {
			t.Fatalf("created %+v", sess)
		}
		got, err := s.Get(ctx, sess.ID)
		if err != nil || got.ID != sess.ID || got.Name != "n" {
			t.Fatalf("get: %+v %v", got, err)
		}
		if owner, _ := s.Owner(ctx, sess.ID); owner != "alice" {
			t.Fatalf("owner %q", owner)
		}
		if _, err := s.Get(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing session: %v", err)
		}
		if _, err := s.Join(ctx, "bob", sess.ID); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.IsMember(ctx, sess.ID, "bob"); !ok {
			t.Fatal("bob is not a member after Join")
		}
		if ids, _ := s.UserSessions(ctx, "bob"); len(ids) != 1 || ids[0] != sess.ID {
			t.Fatalf("bob's sessions %v", ids)
		}
		if g := router.joined[GroupName(sess.ID)]; len(g) != 2 {
			t.Fatalf("group joins %v", g)
		}
		if err := s.Leave(ctx, "bob", sess.ID); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.IsMember(ctx, sess.ID, "bob"); !ok {
			t.Fatal("Leave must keep bob's invitation")
		}
		if ids, _ := s.UserSessions(ctx, "bob"); len(ids) != 0 {
			t.Fatalf("bob's sessions after leave %v", ids)
		}
		if err := s.Remove(ctx, sess.ID, "bob"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.IsMember(ctx, sess.ID, "bob"); ok {
			t.Fatal("bob still a member after Remove")
		}
		if err := s.Invite(ctx, sess.ID, "carol"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.IsMember(ctx, sess.ID, "carol"); !ok {
			t.Fatal("carol not a member after Invite")
		}
		// Joining an unknown id joins its group but reports ErrNotFound.
		if _, err := s.Join(ctx, "bob", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("join unknown: %v", err)
		}
	})
}

func TestEmitRecordsThenSendsWithEventID(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		router := &recordingRouter{}
		s := NewStore(b.NewClient(), router, Config{Prefix: "t"})
		var ids []string
		for i := 0; i < 5; i++ {
			id, err := s.Emit(ctx, "s1", "conn-1", "ReceiveSessionMessage", map[string]any{"content": fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		// Each emit: one group send excluding the caller, one send to the
		// caller — so the caller gets it exactly once.
		if len(router.sent) != 10 {
			t.Fatalf("%d sends, want 10", len(router.sent))
		}
		first := router.sent[0]
		if first.scope != "group" || first.key != "session-s1" || first.exclude != "conn-1" {
			t.Fatalf("first send %+v", first)
		}
		if router.sent[1].scope != "conn" || router.sent[1].key != "conn-1" {
			t.Fatalf("second send %+v", router.sent[1])
		}
		var p struct {
			EventID string `json:"eventId"`
			Content string `json:"content"`
		}
		if err := json.Unmarshal(first.payload, &p); err != nil || p.EventID != ids[0] || p.Content != "0" {
			t.Fatalf("payload %s (%v)", first.payload, err)
		}
		all, err := s.History(ctx, "s1", "", 100)
		if err != nil || len(all) != 5 {
			t.Fatalf("history: %d %v", len(all), err)
		}
		for i, e := range all {
			if e.EventID != ids[i] || e.Target != "ReceiveSessionMessage" {
				t.Fatalf("event %d: %+v", i, e)
			}
			var q struct{ EventID, Content string }
			_ = json.Unmarshal(e.Payload, &q)
			if q.EventID != ids[i] || q.Content != fmt.Sprint(i) {
				t.Fatalf("event %d payload %s", i, e.Payload)
			}
		}
		after, err := s.History(ctx, "s1", ids[2], 100)
		if err != nil || len(after) != 2 || after[0].EventID != ids[3] {
			t.Fatalf("history after %s: %+v %v", ids[2], after, err)
		}
		limited, _ := s.History(ctx, "s1", "", 2)
		if len(limited) != 2 {
			t.Fatalf("limit: %d", len(limited))
		}
		if _, err := s.History(ctx, "s1", "garbage", 10); !errors.Is(err, ErrInvalidEventID) {
			t.Fatalf("invalid after id: %v", err)
		}
	})
}

func TestEmitRefusesWhenRedisRefuses(t *testing.T) {
	srv := testredis.Start(t)
	router := &recordingRouter{}
	rdb := srv.NewClient()
	s := NewStore(rdb, router, Config{})
	srv.Stop()
	if _, err := s.Emit(context.Background(), "s1", "c", "X", map[string]any{}); err == nil {
		t.Fatal("emit succeeded with Redis down")
	}
	if len(router.sent) != 0 {
		t.Fatalf("an event that was not recorded was sent: %+v", router.sent)
	}
}

func TestInjectEventID(t *testing.T) {
	cases := map[string]string{
		`{}`:        `{"eventId":"1-0"}`,
		`{"a":1}`:   `{"eventId":"1-0","a":1}`,
		` { "a":1}`: `{"eventId":"1-0","a":1}`,
		`[1]`:       `[1]`,
		`"x"`:       `"x"`,
		`{ }`:       `{"eventId":"1-0"}`,
	}
	for in, want := range cases {
		if got := string(injectEventID([]byte(in), "1-0")); got != want {
			t.Errorf("inject(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestHistoryTTLRenewal: every recorded event keeps the history alive, but a
// busy session renews its TTL once per renewal interval, not per event.
func TestHistoryTTLRenewal(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		ctx := context.Background()
		rdb := b.NewClient()
		now := time.Unix(1_800_000_000, 0)
		s := NewStore(rdb, &recordingRouter{}, Config{Prefix: "t", TTL: time.Hour, Now: func() time.Time { return now }})
		key := s.keyEvents("s1")
		ttl := func() time.Duration {
			t.Helper()
			d, err := rdb.PTTL(ctx, key).Result()
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		if _, err := s.Emit(ctx, "s1", "", "T", map[string]int{"n": 1}); err != nil {
			t.Fatal(err)
		}
		if d := ttl(); d < 59*time.Minute || d > time.Hour {
			t.Fatalf("history TTL after the first event: %v, want about 1h", d)
		}
		// Within the renewal interval (TTL/10, at most a minute) further
		// events leave the TTL alone: shorten it to see that.
		if err := rdb.PExpire(ctx, key, 30*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		now = now.Add(50 * time.Second)
		if _, err := s.Emit(ctx, "s1", "", "T", map[string]int{"n": 2}); err != nil {
			t.Fatal(err)
		}
		if d := ttl(); d > 30*time.Second {
			t.Fatalf("history TTL renewed within the interval: %v", d)
		}
		now = now.Add(20 * time.Second)
		if _, err := s.Emit(ctx, "s1", "", "T", map[string]int{"n": 3}); err != nil {
			t.Fatal(err)
		}
		if d := ttl(); d < 59*time.Minute {
			t.Fatalf("history TTL after the interval: %v, want renewed to about 1h", d)
		}
		if n, _ := rdb.XLen(ctx, key).Result(); n != 3 {
			t.Fatalf("history holds %d events, want 3", n)
		}
	})
}

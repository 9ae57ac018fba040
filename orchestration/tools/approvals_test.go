package tools

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// lines returns the audit lines as decoded JSON objects.
func (s *syncBuffer) audit() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["audit"] == true {
			out = append(out, m)
		}
	}
	return out
}

// node is one Approvals instance with its own client, like a hub node.
type node struct {
	a   *Approvals
	rdb redis.UniversalClient
	log *syncBuffer
}

func newNode(t *testing.T, b testredis.Backend, pcfg PolicyConfig) node {
	t.Helper()
	p, err := NewPolicy(pcfg)
	if err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	rdb := b.NewClient()
	a := NewApprovals(rdb, p, ApprovalsConfig{Prefix: "t", WaitSlice: 200 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(buf, nil))})
	return node{a: a, rdb: rdb, log: buf}
}

// ask is an Authorize running in the background.
type ask struct {
	req    chan contract.ToolApprovalRequest
	done   chan struct{}
	res    ApprovalResult
	err    error
	cancel context.CancelFunc
}

func startAsk(t *testing.T, n node, session, command string) *ask {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	k := &ask{req: make(chan contract.ToolApprovalRequest, 1), done: make(chan struct{}), cancel: cancel}
	t.Cleanup(func() { cancel(); <-k.done })
	go func() {
		defer close(k.done)
		k.res, k.err = n.a.Authorize(ctx, ApprovalRequest{RequesterUser: "alice", Context: Context{
			ToolName: "bash", Command: command, Parameters: map[string]any{"command": command, "n": 1.0},
			AgentID: "agent-1", SessionID: session, WorkingDirectory: "w"}},
			func(r contract.ToolApprovalRequest) { k.req <- r })
	}()
	return k
}

// notified waits for the ToolApprovalRequired payload.
func (k *ask) notified(t *testing.T) contract.ToolApprovalRequest {
	t.Helper()
	select {
	case r := <-k.req:
		return r
	case <-k.done:
		t.Fatalf("Authorize returned without asking: %+v %v", k.res, k.err)
	case <-time.After(10 * time.Second):
		t.Fatal("no approval request")
	}
	return contract.ToolApprovalRequest{}
}

func (k *ask) result(t *testing.T) ApprovalResult {
	t.Helper()
	select {
	case <-k.done:
	case <-time.After(15 * time.Second):
		t.Fatal("Authorize did not return")
	}
	if k.err != nil {
		t.Fatalf("Authorize: %v", k.err)
	}
	return k.res
}

func TestApprovalDecidedOnAnotherNode(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n1, n2 := newNode(t, b, PolicyConfig{}), newNode(t, b, PolicyConfig{})
		k := startAsk(t, n1, "s1", "make build")
		req := k.notified(t)
		if req.ID == "" || req.ToolName != "bash" || req.AgentID != "agent-1" || req.SessionID != "s1" || !req.IsDangerous ||
			req.Parameters["command"] != "make build" {
			t.Fatalf("request %+v", req)
		}
		rec, err := n2.a.Get(context.Background(), req.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Status != StatusPending || rec.RequesterUser != "alice" || rec.Command != "make build" ||
			rec.Parameters["n"] != 1.0 || !rec.IsDangerous || rec.WorkingDirectory != "w" {
			t.Fatalf("record %+v", rec)
		}
		// The record expires: TTL = timeout + margin.
		ttl := n2.rdb.PTTL(context.Background(), "t:approval:"+req.ID).Val()
		if ttl <= 0 || ttl > DefaultApprovalTimeout+time.Minute {
			t.Fatalf("ttl %v", ttl)
		}
		if err := n2.a.Decide(context.Background(), req.ID, true, "", "bob"); err != nil {
			t.Fatal(err)
		}
		res := k.result(t)
		if !res.Approved || res.DecidedBy != "bob" || res.ApprovalID != req.ID || res.Reason != "approved by bob" {
			t.Fatalf("result %+v", res)
		}
		rec, _ = n1.a.Get(context.Background(), req.ID)
		if rec.Status != StatusApproved || rec.DecidedBy != "bob" || rec.DecidedAt.IsZero() {
			t.Fatalf("record %+v", rec)
		}
		// Audit lines on both nodes: the decision where it was made, the
		// outcome where the call waits.
		if !hasAudit(n2.log.audit(), "approval.decided", req.ID, "bob") {
			t.Fatalf("decider audit %v", n2.log.audit())
		}
		if !hasAudit(n1.log.audit(), "tool.authorized", req.ID, "bob") {
			t.Fatalf("waiter audit %v", n1.log.audit())
		}
		// The decision list is gone once consumed.
		if n := n1.rdb.Exists(context.Background(), "t:approval:"+req.ID+":decision").Val(); n != 0 {
			t.Fatal("decision list left behind")
		}
	})
}

func hasAudit(lines []map[string]any, event, id, by string) bool {
	for _, l := range lines {
		if l["event"] == event && l["approval_id"] == id && l["decided_by"] == by {
			return true
		}
	}
	return false
}

func TestApprovalDenied(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n1, n2 := newNode(t, b, PolicyConfig{}), newNode(t, b, PolicyConfig{})
		k := startAsk(t, n1, "s1", "make")
		req := k.notified(t)
		if err := n2.a.Decide(context.Background(), req.ID, false, "not now", "bob"); err != nil {
			t.Fatal(err)
		}
		res := k.result(t)
		if res.Approved || res.Reason != "not now" || res.DecidedBy != "bob" {
			t.Fatalf("result %+v", res)
		}
	})
}

func TestApprovalDecidedBeforeWaiting(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n1, n2 := newNode(t, b, PolicyConfig{}), newNode(t, b, PolicyConfig{})
		// The decision is recorded inside notify, before the waiter's first
		// BLPOP: it must not be lost.
		var decideErr error
		res, err := n1.a.Authorize(context.Background(), ApprovalRequest{RequesterUser: "alice",
			Context: Context{ToolName: "write_file", SessionID: "s1"}},
			func(r contract.ToolApprovalRequest) {
				decideErr = n2.a.Decide(context.Background(), r.ID, true, "", "bob")
			})
		if err != nil || decideErr != nil {
			t.Fatal(err, decideErr)
		}
		if !res.Approved || res.DecidedBy != "bob" {
			t.Fatalf("result %+v", res)
		}
	})
}

func TestApprovalTimeout(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n1, n2 := newNode(t, b, PolicyConfig{ApprovalTimeout: 300 * time.Millisecond}), newNode(t, b, PolicyConfig{})
		start := time.Now()
		k := startAsk(t, n1, "s1", "make")
		req := k.notified(t)
		res := k.result(t)
		if res.Approved || res.Reason != "approval timed out" || res.DecidedBy != DecidedByTimeout {
			t.Fatalf("result %+v", res)
		}
		if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
			t.Fatalf("took %v", d)
		}
		rec, err := n2.a.Get(context.Background(), req.ID)
		if err != nil || rec.Status != StatusTimedOut {
			t.Fatalf("record %+v %v", rec, err)
		}
		// A decision after the timeout is refused.
		if err := n2.a.Decide(context.Background(), req.ID, true, "", "bob"); !errors.Is(err, ErrAlreadyDecided) {
			t.Fatalf("late decision: %v", err)
		}
		if !hasAudit(n1.log.audit(), "tool.authorized", req.ID, DecidedByTimeout) {
			t.Fatalf("audit %v", n1.log.audit())
		}
	})
}

func TestApprovalDoubleDecision(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n1, n2 := newNode(t, b, PolicyConfig{}), newNode(t, b, PolicyConfig{})
		k := startAsk(t, n1, "s1", "make")
		req := k.notified(t)
		// Racing deciders on two nodes: exactly one wins.
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for i := range 20 {
			n := []node{n1, n2}[i%2]
			wg.Go(func() { errs <- n.a.Decide(context.Background(), req.ID, i%3 != 0, "", "user") })
		}
		wg.Wait()
		close(errs)
		wins := 0
		for err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrAlreadyDecided):
				t.Fatalf("decide: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d decisions won", wins)
		}
		res := k.result(t)
		rec, _ := n2.a.Get(context.Background(), req.ID)
		if res.Approved != (rec.Status == StatusApproved) {
			t.Fatalf("result %+v disagrees with record %+v", res, rec)
		}
		if err := n2.a.Decide(context.Background(), req.ID, true, "", "bob"); !errors.Is(err, ErrAlreadyDecided) {
			t.Fatalf("second decision: %v", err)
		}
	})
}

func TestApprovalUnknownID(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n := newNode(t, b, PolicyConfig{})
		ctx := context.Background()
		for _, id := range []string{uuid.NewString(), "nope", "x:decision", ""} {
			if err := n.a.Decide(ctx, id, true, "", "bob"); !errors.Is(err, ErrApprovalNotFound) {
				t.Fatalf("Decide(%q): %v", id, err)
			}
			if _, err := n.a.Get(ctx, id); !errors.Is(err, ErrApprovalNotFound) {
				t.Fatalf("Get(%q): %v", id, err)
			}
		}
		if !hasAuditOutcome(n.log.audit(), "not-found") {
			t.Fatalf("audit %v", n.log.audit())
		}
	})
}

func hasAuditOutcome(lines []map[string]any, outcome string) bool {
	for _, l := range lines {
		if l["outcome"] == outcome {
			return true
		}
	}
	return false
}

func TestApprovalMaxPending(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		cfg := PolicyConfig{MaxPendingRequests: 2}
		n1, n2 := newNode(t, b, cfg), newNode(t, b, cfg)
		// Two pending approvals in s1, on two nodes: the count is farm-wide.
		k1 := startAsk(t, n1, "s1", "make a")
		r1 := k1.notified(t)
		k2 := startAsk(t, n2, "s1", "make b")
		k2.notified(t)
		res, err := n1.a.Authorize(context.Background(), ApprovalRequest{Context: Context{ToolName: "bash", Command: "make c", SessionID: "s1"}},
			func(contract.ToolApprovalRequest) { t.Error("notified beyond the cap") })
		if err != nil || res.Approved || !strings.Contains(res.Reason, "too many pending approval requests") {
			t.Fatalf("third: %+v %v", res, err)
		}
		// Another session is not affected.
		k3 := startAsk(t, n2, "s2", "make d")
		k3.notified(t)
		// A decision frees a slot.
		if err := n2.a.Decide(context.Background(), r1.ID, true, "", "bob"); err != nil {
			t.Fatal(err)
		}
		k1.result(t)
		k4 := startAsk(t, n1, "s1", "make e")
		k4.notified(t)
	})
}

func TestApprovalStalePendingExpires(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n := newNode(t, b, PolicyConfig{MaxPendingRequests: 1})
		// A node died while waiting: its entry's deadline has passed.
		past := float64(time.Now().Add(-time.Second).UnixMilli())
		n.rdb.ZAdd(context.Background(), "t:approvals:pending:s1", redis.Z{Score: past, Member: uuid.NewString()})
		k := startAsk(t, n, "s1", "make")
		k.notified(t)
	})
}

func TestApprovalCancelled(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n := newNode(t, b, PolicyConfig{})
		k := startAsk(t, n, "s1", "make")
		req := k.notified(t)
		k.cancel()
		res := k.result(t)
		if res.Approved || res.DecidedBy != DecidedByCancel || !strings.Contains(res.Reason, "cancelled") {
			t.Fatalf("result %+v", res)
		}
		if err := n.a.Decide(context.Background(), req.ID, true, "", "bob"); !errors.Is(err, ErrAlreadyDecided) {
			t.Fatalf("decision after cancel: %v", err)
		}
		// The slot is free again.
		if c := n.rdb.ZCard(context.Background(), "t:approvals:pending:s1").Val(); c != 0 {
			t.Fatalf("%d pending", c)
		}
	})
}

func TestApprovalPolicyShortcuts(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		n := newNode(t, b, PolicyConfig{})
		ctx := context.Background()
		notify := func(contract.ToolApprovalRequest) { t.Error("asked the user") }
		res, err := n.a.Authorize(ctx, ApprovalRequest{Context: Context{ToolName: "read_file"}, RequesterUser: "alice"}, notify)
		if err != nil || !res.Approved || res.Rule != RuleAutoApproved || res.ApprovalID != "" || res.DecidedBy != DecidedByPolicy {
			t.Fatalf("read_file %+v %v", res, err)
		}
		res, err = n.a.Authorize(ctx, ApprovalRequest{Context: Context{ToolName: "bash", Command: "rm -rf /"}}, notify)
		if err != nil || res.Approved || res.Rule != RuleDenyList || !res.IsDangerous {
			t.Fatalf("rm %+v %v", res, err)
		}
		if keys := n.rdb.Keys(ctx, "t:*").Val(); len(keys) != 0 {
			t.Fatalf("policy decisions wrote %v", keys)
		}
		lines := n.log.audit()
		if len(lines) != 2 || lines[0]["outcome"] != "approved" || lines[1]["outcome"] != "denied" || lines[1]["rule"] != RuleDenyList {
			t.Fatalf("audit %v", lines)
		}
	})
}

func TestApprovalRedisDownFailsClosed(t *testing.T) {
	p, _ := NewPolicy(PolicyConfig{})
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	a := NewApprovals(rdb, p, ApprovalsConfig{Logger: slog.New(slog.NewTextHandler(&syncBuffer{}, nil))})
	res, err := a.Authorize(context.Background(), ApprovalRequest{Context: Context{ToolName: "write_file"}},
		func(contract.ToolApprovalRequest) { t.Error("asked the user") })
	if err == nil || res.Approved {
		t.Fatalf("result %+v %v", res, err)
	}
}

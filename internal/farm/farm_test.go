package farm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// testFarm is a set of nodes sharing one Redis, each with its own client so
// that a node can be killed on its own.
type testFarm struct {
	t     *testing.T
	b     testredis.Backend
	nodes []*farm.Node
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startFarm(t *testing.T, b testredis.Backend, n int, tune func(*farm.NodeConfig)) *testFarm {
	t.Helper()
	f := &testFarm{t: t, b: b}
	for i := 0; i < n; i++ {
		cfg := farm.NodeConfig{
			NodeID:            fmt.Sprintf("n%d", i+1),
			DevTrustUserParam: true,
			Dev:               true,
			HeartbeatInterval: 100 * time.Millisecond,
			Logger:            quietLogger(),
		}
		// Tests send in bursts far above a chat user's rate.
		cfg.Hub.InvocationRate, cfg.Hub.InvocationBurst = 1e6, 1e6
		if tune != nil {
			tune(&cfg)
		}
		node, err := farm.StartNode(context.Background(), cfg, b.NewClient())
		if err != nil {
			t.Fatalf("start node %d: %v", i+1, err)
		}
		f.nodes = append(f.nodes, node)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = node.Shutdown(ctx)
		})
	}
	return f
}

// recorder collects the arguments of one callback target in arrival order.
type recorder struct {
	mu   sync.Mutex
	msgs []json.RawMessage
	ch   chan struct{}
}

func record(c *client.Conn, target string) *recorder {
	r := &recorder{ch: make(chan struct{}, 1)}
	c.On(target, func(args []json.RawMessage) {
		r.mu.Lock()
		if len(args) > 0 {
			r.msgs = append(r.msgs, args[0])
		}
		r.mu.Unlock()
		select {
		case r.ch <- struct{}{}:
		default:
		}
	})
	return r
}

func (r *recorder) snapshot() []json.RawMessage {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]json.RawMessage(nil), r.msgs...)
}

// waitFor polls until cond holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, base, hub, user string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := base + hub
	if user != "" {
		u += "?user=" + user
	}
	c, err := client.Dial(ctx, u, client.Options{})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func invoke(t *testing.T, c *client.Conn, out any, target string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.InvokeInto(ctx, out, target, args...); err != nil {
		t.Fatalf("%s: %v", target, err)
	}
}

func createSession(t *testing.T, c *client.Conn, name string) string {
	t.Helper()
	var resp contract.SessionCreatedResponse
	invoke(t, c, &resp, "CreateSession", contract.CreateSessionRequest{Name: name, Type: contract.SessionTypeMultiAgent})
	if !resp.Success || resp.SessionID == "" {
		t.Fatalf("CreateSession failed: %+v", resp)
	}
	return resp.SessionID
}

type chatMsg struct {
	EventID  string `json:"eventId"`
	Content  string `json:"content"`
	Role     int    `json:"role"`
	SenderID string `json:"senderId"`
}

func contents(t *testing.T, raw []json.RawMessage) []string {
	out := make([]string, 0, len(raw))
	for _, r := range raw {
		var m chatMsg
		if err := json.Unmarshal(r, &m); err != nil {
			t.Fatalf("decode message: %v", err)
		}
		out = append(out, m.Content)
	}
	return out
}

// TestSessionMessagesAcrossNodes: clients on three nodes in one session each
// receive every message in send order; a client in another session on one of
// those nodes receives none.
func TestSessionMessagesAcrossNodes(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 3, nil)
		const hub = "/hubs/orchestrator"
		alice := dial(t, f.nodes[0].URL(), hub, "alice")
		bob := dial(t, f.nodes[1].URL(), hub, "bob")
		carol := dial(t, f.nodes[2].URL(), hub, "carol")
		dave := dial(t, f.nodes[1].URL(), hub, "dave") // other session, same node as bob

		recs := map[string]*recorder{}
		for name, c := range map[string]*client.Conn{"alice": alice, "bob": bob, "carol": carol, "dave": dave} {
			recs[name] = record(c, "ReceiveSessionMessage")
		}
		sid := createSession(t, alice, "x")
		invoke(t, bob, nil, "JoinSession", sid)
		invoke(t, carol, nil, "JoinSession", sid)
		other := createSession(t, dave, "y")
		// alice joins dave's session too: her sentinel there travels the
		// same ordered path after her messages to x, so when dave has the
		// sentinel, any leak from x would already have arrived.
		invoke(t, alice, nil, "JoinSession", other)

		const n = 100
		var want []string
		for i := 0; i < n; i++ {
			msg := fmt.Sprintf("m%03d", i)
			want = append(want, msg)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := alice.Send(ctx, "SendSessionMessage", sid, msg)
			cancel()
			if err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		invoke(t, alice, nil, "SendSessionMessage", other, "sentinel")
		for _, name := range []string{"alice", "bob", "carol"} {
			r := recs[name]
			waitFor(t, 10*time.Second, name+" receives all", func() bool { return len(r.snapshot()) >= n })
		}
		waitFor(t, 10*time.Second, "dave receives the sentinel", func() bool { return len(recs["dave"].snapshot()) >= 1 })
		for _, name := range []string{"bob", "carol"} {
			got := contents(t, recs[name].snapshot())
			if strings.Join(got, ",") != strings.Join(want, ",") {
				t.Fatalf("%s received %d messages out of order or wrong: %v", name, len(got), got)
			}
		}
		got := contents(t, recs["alice"].snapshot())
		if strings.Join(got[:n], ",") != strings.Join(want, ",") || len(got) != n+1 || got[n] != "sentinel" {
			t.Fatalf("alice received %v", got)
		}
		if d := contents(t, recs["dave"].snapshot()); len(d) != 1 || d[0] != "sentinel" {
			t.Fatalf("dave (other session) received %v", d)
		}

		// The history holds the messages, oldest first, with their event ids.
		var events []contract.HistoryEvent
		invoke(t, carol, &events, "GetSessionHistory", sid, nil, 1000)
		var hist []string
		for _, e := range events {
			if e.Target == "ReceiveSessionMessage" {
				var m chatMsg
				_ = json.Unmarshal(e.Payload, &m)
				if m.EventID != e.EventID {
					t.Fatalf("payload eventId %q != event id %q", m.EventID, e.EventID)
				}
				hist = append(hist, m.Content)
			}
		}
		if strings.Join(hist, ",") != strings.Join(want, ",") {
			t.Fatalf("history = %v", hist)
		}
		// Live messages carry the same event ids: a client knows where it
		// stopped and can resume after any of them.
		var live chatMsg
		_ = json.Unmarshal(recs["bob"].snapshot()[49], &live)
		var rest []contract.HistoryEvent
		invoke(t, bob, &rest, "GetSessionHistory", sid, live.EventID, 1000)
		if len(rest) != n-50 {
			t.Fatalf("history after event 50: %d events, want %d", len(rest), n-50)
		}
		// afterEventId and limit may be left out: the whole history.
		var whole []contract.HistoryEvent
		invoke(t, bob, &whole, "GetSessionHistory", sid)
		if len(whole) != len(events) {
			t.Fatalf("history with the session id only: %d events, want %d", len(whole), len(events))
		}
	}, testredis.WithCluster())
}

// TestNegotiateOnOneNodeWebSocketOnAnother: no sticky sessions.
func TestNegotiateOnOneNodeWebSocketOnAnother(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 2, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		const hub = "/hubs/orchestrator"
		neg, err := client.Negotiate(ctx, f.nodes[0].URL()+hub, client.Options{})
		if err != nil {
			t.Fatalf("negotiate on node 1: %v", err)
		}
		c, err := client.DialToken(ctx, f.nodes[1].URL()+hub, neg.ConnectionToken, client.Options{})
		if err != nil {
			t.Fatalf("websocket on node 2 with node 1's token: %v", err)
		}
		defer c.Close()
		if _, ok := f.nodes[1].Hub.LocalConnection(neg.ConnectionID); !ok {
			t.Fatalf("node 2 does not hold the negotiated connection")
		}
		sid := createSession(t, c, "no-sticky")
		if sid == "" {
			t.Fatal("no session")
		}
		// A forged token is refused with 404, as ASP.NET Core does.
		req, _ := http.NewRequest(http.MethodGet, f.nodes[1].URL()+hub+"?id=1.forged.token", nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("forged token: status %d, want 404", resp.StatusCode)
		}
	}, testredis.WithCluster())
}

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

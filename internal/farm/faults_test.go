package farm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/backplane"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
)

// rawConn is a WebSocket client that speaks the protocol by hand, for
// misbehaving on purpose.
func rawConn(t *testing.T, base, hubPath, user string) *websocket.Conn {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + hubPath
	if user != "" {
		u += "?user=" + user
	}
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

func rawHandshake(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("{\"protocol\":\"json\",\"version\":1}\x1e")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("handshake reply: %v", err)
	}
	if !strings.HasPrefix(string(data), "{}\x1e") {
		t.Fatalf("handshake reply %q", data)
	}
}

// readUntilClosed reads records until the server closes; it returns every
// record seen.
func readUntilClosed(t *testing.T, ws *websocket.Conn, within time.Duration) []string {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(within))
	var recs []string
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatalf("server did not close the connection within %v; records %q", within, recs)
			}
			return recs
		}
		for _, r := range strings.Split(string(data), "\x1e") {
			if r != "" {
				recs = append(recs, r)
			}
		}
	}
}

// TestKilledNodeIsCleanedUp: a node that dies without cleanup loses its
// connections from every group (the session's included), user set and
// connection record within ~3 heartbeats; the survivors keep serving.
func TestKilledNodeIsCleanedUp(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		// Long enough that a loaded machine running -race keeps the
		// survivors' own heartbeats on time, short enough for a quick test.
		const hb = 250 * time.Millisecond
		f := startFarm(t, b, 3, func(c *farm.NodeConfig) { c.HeartbeatInterval = hb })
		const hub = "/hubs/orchestrator"
		alice := dial(t, f.nodes[0].URL(), hub, "alice")
		bob := dial(t, f.nodes[1].URL(), hub, "bob")
		victim := dial(t, f.nodes[2].URL(), hub, "carol")
		bobMsgs := record(bob, "ReceiveSessionMessage")
		sid := createSession(t, alice, "k")
		invoke(t, bob, nil, "JoinSession", sid)
		invoke(t, victim, nil, "JoinSession", sid)
		group := session.GroupName(sid)
		ctx := context.Background()
		members, err := f.nodes[0].BP.GroupMembers(ctx, group)
		if err != nil || len(members) != 3 {
			t.Fatalf("group members before kill: %v %v", members, err)
		}
		victimID := victim.ConnectionID()
		if conns, err := f.nodes[1].BP.UserConnections(ctx, "carol"); err != nil || !contains(conns, victimID) {
			t.Fatalf("user set before kill: %v %v", conns, err)
		}

		// The deadline comes from the heartbeat interval: the node is dead
		// once it missed backplane.DefaultDeadAfterMissed (3) heartbeats
		// since its last one (at most 3 intervals after the kill); a
		// survivor's reaper, ticking every interval, sees that within one
		// more; the cleanup's round trips get the rest, with room for a
		// loaded machine and a cluster's extra hops.
		deadline := time.Duration(backplane.DefaultDeadAfterMissed)*hb + hb + 4*hb
		killedAt := time.Now()
		f.nodes[2].Kill()
		waitFor(t, deadline, "the dead node's connection to leave the session group, the user set and the registry", func() bool {
			m, err := f.nodes[0].BP.GroupMembers(ctx, group)
			if err != nil || len(m) != 2 || contains(m, victimID) {
				return false
			}
			conns, err := f.nodes[1].BP.UserConnections(ctx, "carol")
			if err != nil || len(conns) != 0 {
				return false
			}
			_, ok, err := f.nodes[0].BP.Connection(ctx, victimID)
			return err == nil && !ok
		})
		t.Logf("cleanup took %v (heartbeat %v, deadline %v)", time.Since(killedAt), hb, deadline)
		// The survivors keep serving.
		invoke(t, alice, nil, "SendSessionMessage", sid, "after-kill")
		waitFor(t, 5*time.Second, "bob receives after the kill", func() bool { return len(bobMsgs.snapshot()) == 1 })
	}, testredis.WithCluster())
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestStalledClientIsClosedOthersOnTime: a client that reads nothing is
// closed once its queue is full; a healthy client on the same node keeps
// receiving every message promptly.
func TestStalledClientIsClosedOthersOnTime(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 2, func(c *farm.NodeConfig) {
			c.Hub.SendQueueBytes = 256 << 10
			c.Hub.WriteTimeout = 2 * time.Second
		})
		const hub = "/hubs/orchestrator"
		alice := dial(t, f.nodes[1].URL(), hub, "alice") // publisher on the other node
		healthy := dial(t, f.nodes[0].URL(), hub, "healthy")
		sid := createSession(t, alice, "stall")
		invoke(t, healthy, nil, "JoinSession", sid)

		stalled := rawConn(t, f.nodes[0].URL(), hub, "staller")
		rawHandshake(t, stalled)
		join := fmt.Sprintf("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinSession\",\"arguments\":[%q]}\x1e", sid)
		if err := stalled.WriteMessage(websocket.TextMessage, []byte(join)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "the stalled client to join", func() bool {
			m, _ := f.nodes[0].BP.GroupMembers(context.Background(), session.GroupName(sid))
			return len(m) == 3
		})

		var latencies []time.Duration
		done := make(chan struct{})
		const n = 1500
		healthy.On("ReceiveSessionMessage", func(args []json.RawMessage) {
			var m chatMsg
			_ = json.Unmarshal(args[0], &m)
			sentNs, _ := strconv.ParseInt(strings.SplitN(m.Content, "|", 2)[0], 10, 64)
			latencies = append(latencies, time.Since(time.Unix(0, sentNs)))
			if len(latencies) == n {
				close(done)
			}
		})
		pad := strings.Repeat("x", 8<<10) // 1500 x 8 KiB = 12 MiB, more than socket buffers hold
		// Each send waits for its completion, so the latency measured is
		// delivery alone, not a backlog of queued invocations.
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := alice.Invoke(ctx, "SendSessionMessage", sid, fmt.Sprintf("%d|%s", time.Now().UnixNano(), pad))
			cancel()
			if err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatalf("healthy client received %d of %d", len(latencies), n)
		}
		var worst time.Duration
		for _, l := range latencies {
			worst = max(worst, l)
		}
		// The stalled client must be gone (closed as a slow consumer).
		waitFor(t, 10*time.Second, "the stalled client to be closed", func() bool {
			for _, c := range f.nodes[0].Hub.Connections() {
				if c.User() == "staller" {
					return false
				}
			}
			return true
		})
		if worst > 2*time.Second {
			t.Fatalf("healthy client's worst latency %v: the stalled client slowed it down", worst)
		}
		t.Logf("healthy client: %d messages, worst latency %v", n, worst)
	})
}

// TestBadInput: malformed handshakes, invalid JSON, oversized frames,
// unknown connection tokens and unknown targets get a clear error or close,
// and the node keeps serving.
func TestBadInput(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 1, func(c *farm.NodeConfig) {
			c.Hub.MaxMessageSize = 4 << 10
			c.Hub.HandshakeTimeout = 500 * time.Millisecond
		})
		base := f.nodes[0].URL()
		const hub = "/hubs/orchestrator"
		healthy := dial(t, base, hub, "healthy")

		t.Run("handshake garbage", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			_ = ws.WriteMessage(websocket.TextMessage, []byte("hello\x1e"))
			recs := readUntilClosed(t, ws, 5*time.Second)
			if len(recs) != 1 || !strings.Contains(recs[0], `"error"`) {
				t.Fatalf("records %q", recs)
			}
		})
		t.Run("unsupported protocol", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			_ = ws.WriteMessage(websocket.TextMessage, []byte("{\"protocol\":\"xml\",\"version\":1}\x1e"))
			recs := readUntilClosed(t, ws, 5*time.Second)
			if len(recs) != 1 || recs[0] != `{"error":"The protocol 'xml' is not supported."}` {
				t.Fatalf("records %q", recs)
			}
		})
		t.Run("no handshake", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			readUntilClosed(t, ws, 5*time.Second) // closed after HandshakeTimeout
		})
		t.Run("invalid json", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			rawHandshake(t, ws)
			_ = ws.WriteMessage(websocket.TextMessage, []byte("{\"type\":1,\"target\":\x1e"))
			recs := readUntilClosed(t, ws, 5*time.Second)
			if !strings.Contains(strings.Join(recs, " "), `"type":7`) {
				t.Fatalf("no Close record: %q", recs)
			}
		})
		t.Run("record without separator", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			rawHandshake(t, ws)
			_ = ws.WriteMessage(websocket.TextMessage, []byte(`{"type":6}`))
			readUntilClosed(t, ws, 5*time.Second)
		})
		t.Run("oversized frame", func(t *testing.T) {
			ws := rawConn(t, base, hub, "")
			rawHandshake(t, ws)
			big := fmt.Sprintf("{\"type\":1,\"target\":\"x\",\"arguments\":[%q]}\x1e", strings.Repeat("a", 8<<10))
			_ = ws.WriteMessage(websocket.TextMessage, []byte(big))
			readUntilClosed(t, ws, 5*time.Second)
		})
		t.Run("unknown connection token", func(t *testing.T) {
			wsURL := "ws" + strings.TrimPrefix(base, "http") + hub + "?id="
			upgrade := func(token string) (int, string) {
				ws, resp, err := websocket.DefaultDialer.Dial(wsURL+url.QueryEscape(token), nil)
				if err == nil {
					ws.Close()
					t.Fatalf("token %q: the WebSocket was accepted", token)
				}
				if resp == nil {
					t.Fatalf("token %q: no HTTP answer: %v", token, err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, strings.TrimSpace(string(body))
			}
			// Garbage, a forged signature, and a token of another farm
			// (another secret) are all unknown: 404 as ASP.NET Core answers.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			neg, err := client.Negotiate(ctx, base+hub, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.Split(neg.ConnectionToken, ".")
			if len(parts) != 3 {
				t.Fatalf("token %q", neg.ConnectionToken)
			}
			for _, tok := range []string{"nope", "1.forged.token", parts[0] + "." + parts[1] + ".AAAA", parts[0] + "." + parts[1] + "x." + parts[2]} {
				if code, body := upgrade(tok); code != http.StatusNotFound || body != "No Connection with that ID" {
					t.Errorf("token %q: %d %q, want 404 No Connection with that ID", tok, code, body)
				}
			}
			// A token already in use on this node is refused too.
			c, err := client.DialToken(ctx, base+hub, neg.ConnectionToken, client.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if code, body := upgrade(neg.ConnectionToken); code != http.StatusConflict || !strings.Contains(body, "already has an active connection") {
				t.Errorf("token in use: %d %q, want 409", code, body)
			}
			// The first connection with that token is unharmed.
			if _, err := c.Invoke(ctx, "GetSessionHistory", "none", nil, 1); err != nil {
				t.Errorf("the connection whose token was reused: %v", err)
			}
		})
		t.Run("unknown target and bad arguments", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err := healthy.Invoke(ctx, "NoSuchMethod", 1)
			var ie *client.InvocationError
			if !errors.As(err, &ie) || !strings.Contains(ie.Message, "NoSuchMethod") {
				t.Fatalf("unknown target: %v", err)
			}
			_, err = healthy.Invoke(ctx, "JoinSession")
			if !errors.As(err, &ie) || !strings.Contains(ie.Message, "expects 1") {
				t.Fatalf("wrong argument count: %v", err)
			}
			_, err = healthy.Invoke(ctx, "JoinSession", map[string]int{"a": 1})
			if !errors.As(err, &ie) || !strings.Contains(ie.Message, "argument 1") {
				t.Fatalf("wrong argument type: %v", err)
			}
			// This farm is open (no authentication): anyone may join any
			// session, so sending to one without joining is accepted and
			// recorded (authenticated farms refuse it: security_test).
			if _, err = healthy.Invoke(ctx, "SendSessionMessage", "not-joined", "hi"); err != nil {
				t.Fatalf("sending to a session one has not joined, on an open farm: %v", err)
			}
			var hist []struct {
				Target string `json:"target"`
			}
			if err := healthy.InvokeInto(ctx, &hist, "GetSessionHistory", "not-joined", nil, 10); err != nil || len(hist) != 1 || hist[0].Target != "ReceiveSessionMessage" {
				t.Fatalf("history of the session sent to: %+v, %v", hist, err)
			}
		})
		// Through all of it the healthy client was served.
		sid := createSession(t, healthy, "still-alive")
		if sid == "" {
			t.Fatal("no session")
		}
		// Every bad connection is gone (the one that had its token reused
		// was closed by its client; the node may take a moment to see it).
		waitFor(t, 5*time.Second, "only the healthy connection to remain", func() bool {
			return len(f.nodes[0].Hub.Connections()) == 1
		})
	})
}

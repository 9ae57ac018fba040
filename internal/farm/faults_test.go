package farm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
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

// TestRedisOutageLocalService: while Redis is down a node reports not
// ready, keeps its connections, still delivers to its own members (local
// delivery does not wait for Redis; the send reports that the other nodes
// were not reached), still runs streams, and refuses a session message to
// its sender with a clear error instead of accepting and dropping it. When
// Redis is back both nodes turn ready by themselves and session messages
// flow across them again.
func TestRedisOutageLocalService(t *testing.T) {
	srv := testredis.Start(t)
	f := startFarm(t, testredis.Backend{Name: "redis-server", Server: srv}, 2, nil)
	const hub = "/hubs/orchestrator"
	alice := dial(t, f.nodes[0].URL(), hub, "alice")
	bob := dial(t, f.nodes[0].URL(), hub, "bob") // same node as alice
	carol := dial(t, f.nodes[1].URL(), hub, "carol")
	sid := createSession(t, alice, "outage")
	invoke(t, bob, nil, "JoinSession", sid)
	invoke(t, carol, nil, "JoinSession", sid)
	group := session.GroupName(sid)
	notes := map[string]*recorder{}
	msgs := map[string]*recorder{}
	for name, c := range map[string]*client.Conn{"alice": alice, "bob": bob, "carol": carol} {
		notes[name] = record(c, "LocalNote")
		msgs[name] = record(c, "ReceiveSessionMessage")
	}

	srv.Stop()
	waitFor(t, 5*time.Second, "both nodes not ready", func() bool {
		for _, n := range f.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := n.Ready(ctx)
			cancel()
			if err == nil {
				return false
			}
		}
		return true
	})

	// Local delivery goes on; the error says the rest of the farm was not
	// reached.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	err := f.nodes[0].Hub.SendGroup(ctx, group, "LocalNote", "during the outage")
	cancel()
	if err == nil {
		t.Error("SendGroup with Redis down reported no error: the other nodes were not reached")
	}
	for _, name := range []string{"alice", "bob"} {
		r := notes[name]
		waitFor(t, 5*time.Second, name+" (same node) receives the group send during the outage", func() bool {
			return len(r.snapshot()) == 1
		})
	}

	// A stream needs no Redis.
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	st, err := bob.Stream(sctx, "Counter", 3)
	if err != nil {
		t.Fatalf("stream during the outage: %v", err)
	}
	var items []string
	for {
		it, err := st.Next(sctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream during the outage: %v", err)
		}
		items = append(items, string(it))
	}
	if strings.Join(items, ",") != "0,1,2" {
		t.Errorf("stream during the outage gave %v", items)
	}

	// A session message cannot be recorded: refused to the sender, and
	// nobody receives it.
	ictx, icancel := context.WithTimeout(context.Background(), 10*time.Second)
	_, err = alice.Invoke(ictx, "SendSessionMessage", sid, "lost?")
	icancel()
	var ie *client.InvocationError
	if !errors.As(err, &ie) || !strings.Contains(ie.Message, "not recorded") {
		t.Fatalf("SendSessionMessage with Redis down: %v; want an error saying it was not recorded", err)
	}
	for name, c := range map[string]*client.Conn{"alice": alice, "bob": bob, "carol": carol} {
		select {
		case <-c.Done():
			t.Fatalf("%s was disconnected by the outage: %v", name, c.Err())
		default:
		}
	}

	srv.Restart()
	waitFor(t, 15*time.Second, "both nodes ready again by themselves", func() bool {
		for _, n := range f.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := n.Ready(ctx)
			cancel()
			if err != nil {
				return false
			}
		}
		return true
	})
	// This redis-server keeps no data across a restart (the fault tests in
	// e2e/faults restart one with AOF and check that sessions survive):
	// what is checked here is that the farm works end to end again, across
	// both nodes, with clients that connect now.
	// Ready means the subscription and the publisher work; the Redis
	// client's pool may still fail other new connections fast for a moment
	// (it retries dialling once a second after repeated failures).
	waitFor(t, 10*time.Second, "both nodes' Redis clients to answer", func() bool {
		for _, n := range f.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := n.BP.Nodes(ctx)
			cancel()
			if err != nil {
				return false
			}
		}
		return true
	})
	dave := dial(t, f.nodes[0].URL(), hub, "dave")
	erin := dial(t, f.nodes[1].URL(), hub, "erin")
	daveMsgs, erinMsgs := record(dave, "ReceiveSessionMessage"), record(erin, "ReceiveSessionMessage")
	sid2 := createSession(t, dave, "after-outage")
	invoke(t, erin, nil, "JoinSession", sid2)
	invoke(t, dave, nil, "SendSessionMessage", sid2, "after the outage")
	for name, r := range map[string]*recorder{"dave (node 1)": daveMsgs, "erin (node 2)": erinMsgs} {
		waitFor(t, 10*time.Second, name+" receives the message sent after the outage", func() bool {
			return len(r.snapshot()) == 1
		})
	}
	for name, r := range msgs {
		if c := contents(t, r.snapshot()); slices.Contains(c, "lost?") {
			t.Errorf("%s received the refused message", name)
		}
	}
}

// TestRejoinRetriedOrRefused: a new connection whose user's sessions cannot
// be read at first (here the user's session set briefly has the wrong type,
// as if Redis were failing) is put into its sessions once a retry succeeds;
// when they stay unreadable the connection is closed with allowReconnect
// instead of being left connected outside its sessions.
func TestRejoinRetriedOrRefused(t *testing.T) {
	srv := testredis.Start(t)
	f := startFarm(t, testredis.Backend{Name: "redis-server", Server: srv}, 1, nil)
	const hub = "/hubs/orchestrator"
	alice := dial(t, f.nodes[0].URL(), hub, "alice")
	sid := createSession(t, alice, "rejoin")

	admin := srv.NewClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const key = "hf:user:alice:sessions"
	if n, err := admin.SCard(ctx, key).Result(); err != nil || n != 1 {
		t.Fatalf("alice's session set %s: %d members, %v", key, n, err)
	}
	// Errors Redis answered with WRONGTYPE: a failed read of the set.
	wrongTypes := func() int {
		info, err := admin.Info(ctx, "errorstats").Result()
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`errorstat_WRONGTYPE:count=(\d+)`).FindStringSubmatch(info)
		if m == nil {
			return 0
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	breakSet := func() {
		t.Helper()
		if err := admin.Rename(ctx, key, key+":saved").Err(); err != nil {
			t.Fatal(err)
		}
		if err := admin.Set(ctx, key, "not a set", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	mendSet := func() {
		t.Helper()
		if err := admin.Rename(ctx, key+":saved", key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	u := f.nodes[0].URL() + hub + "?user=alice"

	// A read that fails for a moment is retried.
	before := wrongTypes()
	breakSet()
	type dialed struct {
		c   *client.Conn
		err error
	}
	res := make(chan dialed, 1)
	go func() {
		c, err := client.Dial(ctx, u, client.Options{})
		res <- dialed{c, err}
	}()
	waitFor(t, 5*time.Second, "the new connection's rejoin to fail once", func() bool { return wrongTypes() > before })
	mendSet()
	var back dialed
	select {
	case back = <-res:
	case <-time.After(15 * time.Second):
		t.Fatal("the connection whose rejoin was retried did not start")
	}
	if back.err != nil {
		t.Fatalf("the connection whose rejoin was retried: %v", back.err)
	}
	t.Cleanup(func() { _ = back.c.Close() })
	got := record(back.c, "ReceiveSessionMessage")
	invoke(t, alice, nil, "SendSessionMessage", sid, "you are back")
	waitFor(t, 5*time.Second, "the retried connection to receive its session's message", func() bool {
		return len(got.snapshot()) == 1
	})

	// A read that keeps failing: closed with allowReconnect.
	breakSet()
	defer mendSet()
	c, err := client.Dial(ctx, u, client.Options{})
	if err != nil {
		t.Fatalf("dial while the sessions cannot be read: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(15 * time.Second):
		_ = c.Close()
		t.Fatal("a connection that could not rejoin its sessions stayed open")
	}
	if text, allow := c.CloseMessage(); !allow || text == "" {
		t.Errorf("Close %q allowReconnect=%v; want an error with allowReconnect", text, allow)
	}
}

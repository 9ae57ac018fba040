package farm_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// get returns the status and body of GET url.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitReadyz polls the node's /readyz until it answers status.
func waitReadyz(t *testing.T, n *farm.Node, status int, within time.Duration) {
	t.Helper()
	var got int
	var body string
	deadline := time.Now().Add(within)
	for {
		got, body = get(t, n.URL()+"/readyz")
		if got == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /readyz answered %d %q for %v, want %d", n.ID, got, body, within, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// farmSession is a session with members on different nodes: a message from
// sender must reach every receiver.
type farmSession struct {
	id        string
	sender    *client.Conn
	receivers []*recorder
}

// sessionsAcross creates three sessions whose members are spread over a
// and b, so that every node's group subscriptions are needed.
func sessionsAcross(t *testing.T, a, b *farm.Node) []farmSession {
	t.Helper()
	const hub = hubs.OrchestratorPath
	alice, dave := dialReconnecting(t, a.URL(), hub, "alice"), dialReconnecting(t, a.URL(), hub, "dave")
	bob, carol := dialReconnecting(t, b.URL(), hub, "bob"), dialReconnecting(t, b.URL(), hub, "carol")
	rec := map[*client.Conn]*recorder{}
	for _, c := range []*client.Conn{alice, bob, carol, dave} {
		rec[c] = record(c, "ReceiveSessionMessage")
	}
	var out []farmSession
	for _, s := range []struct {
		sender  *client.Conn
		members []*client.Conn
	}{
		{alice, []*client.Conn{bob}},        // a → b
		{carol, []*client.Conn{dave}},       // b → a
		{bob, []*client.Conn{alice, carol}}, // b → a and b
	} {
		id := createSession(t, s.sender, "readyz")
		ss := farmSession{id: id, sender: s.sender}
		for _, m := range s.members {
			invoke(t, m, nil, "JoinSession", id)
			ss.receivers = append(ss.receivers, rec[m])
		}
		out = append(out, ss)
	}
	return out
}

// dialReconnecting connects a client that reconnects by itself, as the
// official clients do: a node may ask its clients to reconnect after its
// subscription came back (they rejoin their sessions on any node).
func dialReconnecting(t *testing.T, base, hub, user string) *client.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, base+hub+"?user="+user, client.Options{
		Reconnect: []time.Duration{0, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
			500 * time.Millisecond, time.Second, time.Second, time.Second, time.Second, time.Second},
	})
	if err != nil {
		t.Fatalf("dial %s as %s: %v", base+hub, user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// checkDelivery sends a message in every session until every receiver got
// one: a send made while its sender or a receiver is reconnecting may be
// lost to it (the session history keeps it), so each round sends anew.
func checkDelivery(t *testing.T, sessions []farmSession, tag string) {
	t.Helper()
	for i, s := range sessions {
		prefix := fmt.Sprintf("%s-%d-", tag, i)
		has := func(r *recorder) bool {
			for _, c := range contents(t, r.snapshot()) {
				if strings.HasPrefix(c, prefix) {
					return true
				}
			}
			return false
		}
		all := func() bool {
			for _, r := range s.receivers {
				if !has(r) {
					return false
				}
			}
			return true
		}
		deadline := time.Now().Add(30 * time.Second)
		for round := 0; !all(); round++ {
			if time.Now().After(deadline) {
				t.Fatalf("session %d: not every receiver got a %s message in 30s", i, tag)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := s.sender.Invoke(ctx, "SendSessionMessage", s.id, fmt.Sprintf("%s%d", prefix, round))
			cancel()
			if err != nil {
				t.Logf("session %d round %d: send: %v (retrying)", i, round, err)
			}
			for wait := time.Now().Add(2 * time.Second); !all() && time.Now().Before(wait); {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
}

// TestReadyzRedWhileSubscriptionsRefused kills the pub/sub connections under
// two real nodes (CLIENT KILL TYPE pubsub) while Redis' ACL refuses
// SUBSCRIBE, so the subscriptions cannot come back: /readyz and
// hubfarm_ready stay red (and /healthz green) until Redis accepts them
// again; then /readyz turns green and every session group delivers again.
func TestReadyzRedWhileSubscriptionsRefused(t *testing.T) {
	srv := testredis.Start(t)
	f := startFarm(t, testredis.Backend{Name: "redis-server", Server: srv}, 2, nil)
	n1, n2 := f.nodes[0], f.nodes[1]
	both := []*farm.Node{n1, n2}
	sessions := sessionsAcross(t, n1, n2)
	checkDelivery(t, sessions, "before")
	for _, n := range both {
		waitReadyz(t, n, http.StatusOK, 5*time.Second)
	}
	before := scrapeAll(t, both)

	admin := srv.NewClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "-subscribe").Err(); err != nil {
		t.Fatal(err)
	}
	if err := admin.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range both {
		waitReadyz(t, n, http.StatusServiceUnavailable, 10*time.Second)
	}
	// Red it stays while nothing can subscribe, through several health
	// checks (one per 100ms heartbeat); the process itself is alive.
	for i := 0; i < 5; i++ {
		for _, n := range both {
			if code, body := get(t, n.URL()+"/readyz"); code != http.StatusServiceUnavailable {
				t.Fatalf("%s /readyz answered %d %q while SUBSCRIBE is refused", n.ID, code, body)
			}
			if code, _ := get(t, n.URL()+"/healthz"); code != http.StatusOK {
				t.Fatalf("%s /healthz answered %d", n.ID, code)
			}
		}
		time.Sleep(100 * time.Millisecond) // spacing the checks over health-check rounds, not waiting for a condition
	}
	for _, n := range both {
		if m := scrape(t, n); m.get("hubfarm_ready") != 0 {
			t.Errorf("%s: hubfarm_ready = %v while /readyz is red", n.ID, m.get("hubfarm_ready"))
		}
	}

	if err := admin.Do(ctx, "ACL", "SETUSER", "default", "+subscribe").Err(); err != nil {
		t.Fatal(err)
	}
	for _, n := range both {
		waitReadyz(t, n, http.StatusOK, 10*time.Second)
		wantValue(t, n, 1, "hubfarm_ready")
	}
	for i, n := range both {
		if d := scrape(t, n).get("hubfarm_backplane_reconnects_total") - before[i].get("hubfarm_backplane_reconnects_total"); d < 1 {
			t.Errorf("%s: reconnects moved by %v, want at least 1", n.ID, d)
		}
	}
	checkDelivery(t, sessions, "after")
}

// TestReadyzRedWhileSubscriberFrozen freezes the pub/sub connection of a
// node (a TCP proxy between it and Redis stops passing its bytes: no error,
// just silence). /readyz turns red because the probe no longer comes back,
// the other node stays green; once the health check replaced the silent
// connection /readyz is green and every session group delivers again.
func TestReadyzRedWhileSubscriberFrozen(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		addr := ""
		if b.Server != nil {
			addr = b.Server.Addr()
		} else {
			addr = b.Mini.Addr()
		}
		p := testredis.StartFreezeProxy(t, addr)
		proxied := redis.NewClient(&redis.Options{Addr: p.Addr()})
		t.Cleanup(func() { _ = proxied.Close() })
		n1 := startNodeOn(t, "n1", proxied)
		n2 := startNodeOn(t, "n2", b.NewClient())
		sessions := sessionsAcross(t, n1, n2)
		checkDelivery(t, sessions, "before")
		waitReadyz(t, n1, http.StatusOK, 5*time.Second)
		before := scrape(t, n1)

		p.FreezeSubscribers()
		waitReadyz(t, n1, http.StatusServiceUnavailable, 10*time.Second)
		if code, body := get(t, n2.URL()+"/readyz"); code != http.StatusOK {
			t.Fatalf("n2 /readyz answered %d %q; only n1's subscriber is frozen", code, body)
		}
		// The backplane replaces a connection silent for 5s.
		waitReadyz(t, n1, http.StatusOK, 20*time.Second)
		if d := scrape(t, n1).get("hubfarm_backplane_reconnects_total") - before.get("hubfarm_backplane_reconnects_total"); d < 1 {
			t.Errorf("n1: reconnects moved by %v, want at least 1", d)
		}
		checkDelivery(t, sessions, "after")
	})
}

// startNodeOn starts a node like startFarm does, on the given client.
func startNodeOn(t *testing.T, id string, rdb redis.UniversalClient) *farm.Node {
	t.Helper()
	cfg := farm.NodeConfig{NodeID: id, DevTrustUserParam: true, Dev: true,
		HeartbeatInterval: 100 * time.Millisecond, Logger: quietLogger()}
	cfg.Hub.InvocationRate, cfg.Hub.InvocationBurst = 1e6, 1e6
	n, err := farm.StartNode(context.Background(), cfg, rdb)
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return n
}

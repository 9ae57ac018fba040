package farm_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

// upgradeToken opens the WebSocket of hub on the node at base with id=token
// and returns the connection (nil when refused) and the HTTP status.
func upgradeToken(t *testing.T, base, hub, token string) (*websocket.Conn, int, string) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(base, "http") + hub + "?id=" + url.QueryEscape(token)
	ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
	if err == nil {
		t.Cleanup(func() { ws.Close() })
		return ws, resp.StatusCode, ""
	}
	if resp == nil {
		t.Fatalf("upgrade: no HTTP answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return nil, resp.StatusCode, strings.TrimSpace(string(body))
}

// TestConnectionTokenOpensOneConnectionFarmWide: a negotiated connection
// token opens one connection on the whole farm. The same token presented
// again, on the other node or the same one, is refused with 409 Conflict
// (as ASP.NET Core answers a second transport for a connection), also once
// the first connection has closed; the first connection keeps working and
// its registry entry stays. Of two upgrades with one token racing on two
// nodes exactly one wins. Connections without a token (skipNegotiation)
// are not affected.
func TestConnectionTokenOpensOneConnectionFarmWide(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := startFarm(t, b, 2, nil)
		const hub = "/hubs/orchestrator"
		a, bn := f.nodes[0].URL(), f.nodes[1].URL()
		rdb := b.NewClient()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		entryNode := func(connID string) string {
			t.Helper()
			node, err := rdb.HGet(ctx, "hf:conn:"+connID, "node").Result()
			if err != nil {
				t.Fatalf("registry entry of %s: %v", connID, err)
			}
			return node
		}

		neg, err := client.Negotiate(ctx, a+hub+"?user=ann", client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		first, err := client.DialToken(ctx, a+hub+"?user=ann", neg.ConnectionToken, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		sid := createSession(t, first, "token reuse")
		for _, node := range []struct{ name, base string }{{"the other node", bn}, {"the same node", a}} {
			if ws, code, body := upgradeToken(t, node.base, hub, neg.ConnectionToken); ws != nil || code != http.StatusConflict ||
				!strings.Contains(body, "already has an active connection") {
				t.Fatalf("the token again on %s: %d %q, want 409", node.name, code, body)
			}
		}
		// The first connection is unharmed, and so is its registry entry.
		invoke(t, first, nil, "SendSessionMessage", sid, "still here")
		if node := entryNode(neg.ConnectionID); node != "n1" {
			t.Fatalf("the connection's registry entry names node %q, want n1", node)
		}
		if got := len(f.nodes[1].Hub.Connections()); got != 0 {
			t.Fatalf("node 2 holds %d connections, want none", got)
		}

		// A used token stays used after its connection closed.
		_ = first.Close()
		waitFor(t, 10*time.Second, "the first connection to leave node 1", func() bool {
			_, ok := f.nodes[0].Hub.LocalConnection(neg.ConnectionID)
			return !ok
		})
		if ws, code, _ := upgradeToken(t, bn, hub, neg.ConnectionToken); ws != nil || code != http.StatusConflict {
			t.Fatalf("a used token after its connection closed: %d, want 409", code)
		}

		// Two upgrades with one fresh token, one per node, at once.
		neg2, err := client.Negotiate(ctx, bn+hub, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		codes := make([]int, 2)
		var wg sync.WaitGroup
		for i, base := range []string{a, bn} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := "ws" + strings.TrimPrefix(base, "http") + hub + "?id=" + url.QueryEscape(neg2.ConnectionToken)
				ws, resp, _ := websocket.DefaultDialer.Dial(u, nil)
				if ws != nil {
					defer ws.Close()
				}
				if resp != nil {
					codes[i] = resp.StatusCode
				}
			}()
		}
		wg.Wait()
		if !(codes[0] == http.StatusSwitchingProtocols && codes[1] == http.StatusConflict) &&
			!(codes[0] == http.StatusConflict && codes[1] == http.StatusSwitchingProtocols) {
			t.Fatalf("racing upgrades answered %v, want one 101 and one 409", codes)
		}

		// skipNegotiation connections: a fresh id each, on either node.
		for _, base := range []string{a, bn, a, bn} {
			c := dial(t, base, hub, "")
			invoke(t, c, nil, "GetSessionHistory", "none", nil, 1)
		}
	})
}

// TestConnectionTokenDuringRedisOutage: while Redis cannot say whether
// another node holds a connection id, an upgrade with a connection token
// is refused with 503 (it could not be registered farm-wide either); a
// skipNegotiation connection still opens and is served locally, and once
// Redis is back tokens work again.
func TestConnectionTokenDuringRedisOutage(t *testing.T) {
	srv := testredis.Start(t)
	f := startFarm(t, testredis.Backend{Name: "redis-server", Server: srv}, 1, func(c *farm.NodeConfig) {
		c.Hub.RedisTimeout = 2 * time.Second
	})
	const hub = "/hubs/orchestrator"
	base := f.nodes[0].URL()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	srv.Stop()
	neg, err := client.Negotiate(ctx, base+hub, client.Options{}) // needs no Redis
	if err != nil {
		t.Fatal(err)
	}
	if ws, code, _ := upgradeToken(t, base, hub, neg.ConnectionToken); ws != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("a token upgrade during the outage: %d, want 503", code)
	}
	ws := rawConn(t, base, hub, "")
	rawHandshake(t, ws)

	srv.Restart()
	waitFor(t, 20*time.Second, "a token upgrade to work again", func() bool {
		neg, err := client.Negotiate(ctx, base+hub, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ws, code, _ := upgradeToken(t, base, hub, neg.ConnectionToken)
		if ws != nil {
			ws.Close()
		}
		return code == http.StatusSwitchingProtocols
	})
}

package farm_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode/auth"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

var jwtSecret = []byte("test-secret")

func securedFarm(t *testing.T, b testredis.Backend, n int, tune func(*farm.NodeConfig)) *testFarm {
	t.Helper()
	v, err := auth.New(auth.Config{HS256Secret: jwtSecret, Audience: "hubfarm", Leeway: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return startFarm(t, b, n, func(c *farm.NodeConfig) {
		c.DevTrustUserParam = false
		c.Auth = v
		if tune != nil {
			tune(c)
		}
	})
}

func token(t *testing.T, sub string, ttl time.Duration, extra jwt.MapClaims) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "aud": "hubfarm", "exp": time.Now().Add(ttl).Unix()}
	for k, v := range extra {
		claims[k] = v
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func dialAs(t *testing.T, url, tok string) (*client.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, client.Options{AccessToken: func() (string, error) { return tok, nil }})
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func mustDialAs(t *testing.T, url, tok string) *client.Conn {
	t.Helper()
	c, err := dialAs(t, url, tok)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c
}

func statusOf(err error) int {
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.StatusCode
	}
	return 0
}

func TestAuthenticationRefusals(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 1, nil)
		url := f.nodes[0].URL() + "/hubs/orchestrator"
		other, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "a", "aud": "hubfarm", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte("wrong"))
		cases := map[string]string{
			"missing":        "",
			"expired":        token(t, "alice", -time.Hour, nil),
			"wrongly signed": other,
			"wrong audience": token(t, "alice", time.Hour, jwt.MapClaims{"aud": "someone-else"}),
			"garbage":        "not.a.jwt",
		}
		for name, tok := range cases {
			_, err := dialAs(t, url, tok)
			if statusOf(err) != http.StatusUnauthorized {
				t.Errorf("%s token: %v, want a 401 refusal", name, err)
			}
		}
		// skipNegotiation with a bad token is refused at the upgrade.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := client.Dial(ctx, url, client.Options{SkipNegotiation: true, AccessToken: func() (string, error) { return cases["expired"], nil }})
		if statusOf(err) != http.StatusUnauthorized {
			t.Errorf("skipNegotiation with an expired token: %v", err)
		}
		c := mustDialAs(t, url, token(t, "alice", time.Hour, nil))
		createSession(t, c, "ok")
	})
}

func TestSessionAuthorisation(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 2, nil)
		url1 := f.nodes[0].URL() + "/hubs/orchestrator"
		url2 := f.nodes[1].URL() + "/hubs/orchestrator"
		alice := mustDialAs(t, url1, token(t, "alice", time.Hour, nil))
		mallory := mustDialAs(t, url2, token(t, "mallory", time.Hour, nil))
		admin := mustDialAs(t, url2, token(t, "root", time.Hour, jwt.MapClaims{"role": "admin"}))
		errs := record(mallory, "ReceiveError")
		malloryMsgs := record(mallory, "ReceiveSessionMessage")
		sid := createSession(t, alice, "private")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		forbidden := func(what string, err error) {
			t.Helper()
			var ie *client.InvocationError
			if !errors.As(err, &ie) || !strings.Contains(ie.Message, "FORBIDDEN") {
				t.Fatalf("%s: %v, want FORBIDDEN", what, err)
			}
		}
		_, err := mallory.Invoke(ctx, "JoinSession", sid)
		forbidden("join", err)
		waitFor(t, 5*time.Second, "ReceiveError FORBIDDEN", func() bool {
			s := errs.snapshot()
			return len(s) == 1 && strings.Contains(string(s[0]), `"FORBIDDEN"`)
		})
		_, err = mallory.Invoke(ctx, "GetSessionHistory", sid, nil, 10)
		forbidden("read history", err)
		_, err = mallory.Invoke(ctx, "SendSessionMessage", sid, "hi")
		forbidden("write", err)
		_, err = mallory.Invoke(ctx, "InviteToSession", sid, "mallory")
		forbidden("invite self", err)

		// The admin may use every session.
		invoke(t, admin, nil, "JoinSession", sid)
		invoke(t, admin, nil, "SendSessionMessage", sid, "from admin")

		// Invited by the owner, mallory may join; removed, she may not.
		invoke(t, alice, nil, "InviteToSession", sid, "mallory")
		invoke(t, mallory, nil, "JoinSession", sid)
		invoke(t, alice, nil, "SendSessionMessage", sid, "welcome")
		waitFor(t, 5*time.Second, "mallory receives once invited", func() bool { return len(malloryMsgs.snapshot()) == 1 })
		invoke(t, alice, nil, "RemoveFromSession", sid, "mallory")
		_, err = mallory.Invoke(ctx, "SendSessionMessage", sid, "still here?")
		forbidden("write after removal", err)
		invoke(t, alice, nil, "SendSessionMessage", sid, "after removal")
		invoke(t, alice, nil, "SendSessionMessage", sid, "after removal 2")
		var hist []struct{ Target string }
		invoke(t, admin, &hist, "GetSessionHistory", sid, nil, 100)
		if n := len(malloryMsgs.snapshot()); n != 1 {
			t.Fatalf("mallory received %d messages; only the one sent while she was a member was hers", n)
		}
	}, testredis.WithCluster())
}

func TestStolenConnectionTokenRefused(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 2, nil)
		hub := "/hubs/orchestrator"
		aliceTok := token(t, "alice", time.Hour, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		neg, err := client.Negotiate(ctx, f.nodes[0].URL()+hub, client.Options{AccessToken: func() (string, error) { return aliceTok, nil }})
		if err != nil {
			t.Fatal(err)
		}
		// Mallory presents alice's connection token with her own JWT.
		_, err = client.DialToken(ctx, f.nodes[1].URL()+hub, neg.ConnectionToken, client.Options{
			AccessToken: func() (string, error) { return token(t, "mallory", time.Hour, nil), nil }})
		if statusOf(err) != http.StatusUnauthorized {
			t.Fatalf("stolen connection token: %v, want 401", err)
		}
		// Alice herself may use it on any node.
		c, err := client.DialToken(ctx, f.nodes[1].URL()+hub, neg.ConnectionToken, client.Options{
			AccessToken: func() (string, error) { return aliceTok, nil }})
		if err != nil {
			t.Fatalf("alice with her own connection token: %v", err)
		}
		c.Close()
	})
}

func TestExpiredTokenClosesConnection(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 1, func(c *farm.NodeConfig) { c.Hub.ScanInterval = 50 * time.Millisecond })
		c := mustDialAs(t, f.nodes[0].URL()+"/hubs/orchestrator", token(t, "alice", 1500*time.Millisecond, nil))
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("connection with an expired token stayed open")
		}
		if msg, reconnect := c.CloseMessage(); !strings.Contains(msg, "Authentication expired") || !reconnect {
			t.Fatalf("close message %q allowReconnect=%v", msg, reconnect)
		}
	})
}

func TestPerUserConnectionLimit(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 2, func(c *farm.NodeConfig) { c.Hub.MaxConnectionsPerUser = 3 })
		tok := token(t, "alice", time.Hour, nil)
		for i := 0; i < 3; i++ {
			mustDialAs(t, f.nodes[i%2].URL()+"/hubs/agent", tok)
		}
		_, err := dialAs(t, f.nodes[1].URL()+"/hubs/agent", tok)
		var se *client.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusTooManyRequests || !strings.Contains(se.Body, "Too many connections") {
			t.Fatalf("4th connection of one user: %v, want 429 with a clear message", err)
		}
		// Another user is not affected.
		mustDialAs(t, f.nodes[1].URL()+"/hubs/agent", token(t, "bob", time.Hour, nil))
	})
}

// TestInvocationFloodIsRateLimited: a raw connection pipelines invocations
// far faster than its rate allows. Every one is answered: at most the
// bucket's burst plus its refill over the flood are served, the rest get
// RATE_LIMITED, and the counters say exactly that. Meanwhile another
// client on the same node is served promptly (each call within a deadline)
// and a connection of another user is not limited at all.
func TestInvocationFloodIsRateLimited(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		const rate, burst = 20, 20
		f := securedFarm(t, b, 1, func(c *farm.NodeConfig) {
			c.Hub.InvocationRate = rate
			c.Hub.InvocationBurst = burst
		})
		n := f.nodes[0]
		url := n.URL() + "/hubs/orchestrator"
		flooderTok := token(t, "flooder", time.Hour, nil)
		sid := createSession(t, mustDialAs(t, url, flooderTok), "flood")
		calm := mustDialAs(t, url, token(t, "calm", time.Hour, nil))
		calmSID := createSession(t, calm, "calm")

		ws, _, err := websocket.DefaultDialer.Dial(wsURL(n, "/hubs/orchestrator")+"?access_token="+flooderTok, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		rawHandshake(t, ws)

		// The reader counts the completions of the flood's invocations.
		const total, perFrame = 1000, 50
		type tally struct{ ok, limited, other int }
		results := make(chan tally, 1)
		go func() {
			var c tally
			defer func() { results <- c }()
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			for c.ok+c.limited+c.other < total {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				for _, rec := range strings.Split(string(data), "\x1e") {
					var m struct {
						Type         int    `json:"type"`
						InvocationID string `json:"invocationId"`
						Error        string `json:"error"`
					}
					if json.Unmarshal([]byte(rec), &m) != nil || m.Type != 3 || !strings.HasPrefix(m.InvocationID, "f") {
						continue
					}
					switch {
					case m.Error == "":
						c.ok++
					case strings.Contains(m.Error, "RATE_LIMITED"):
						c.limited++
					default:
						c.other++
					}
				}
			}
		}()

		// The calm client calls one after another as the flood starts, at
		// most its own burst's worth (a client that kept calling back to
		// back would be flooding too).
		calmDone := make(chan []time.Duration, 1)
		go func() {
			var lat []time.Duration
			defer func() { calmDone <- lat }()
			for i := 0; i < burst/2; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				start := time.Now()
				_, err := calm.Invoke(ctx, "GetSessionHistory", calmSID, nil, 10)
				cancel()
				if err != nil {
					t.Errorf("calm client's call %d during the flood: %v", i, err)
					return
				}
				lat = append(lat, time.Since(start))
			}
		}()

		before := scrape(t, n)
		start := time.Now()
		for i := 0; i < total; i += perFrame {
			var frame strings.Builder
			for j := i; j < i+perFrame; j++ {
				fmt.Fprintf(&frame, "{\"type\":1,\"invocationId\":\"f%d\",\"target\":\"SendSessionMessage\",\"arguments\":[%q,\"spam\"]}\x1e", j, sid)
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte(frame.String())); err != nil {
				t.Fatal(err)
			}
		}
		got := <-results
		elapsed := time.Since(start)
		lat := <-calmDone

		if got.ok+got.limited != total || got.other != 0 {
			t.Fatalf("%d invocations: %d served, %d rate limited, %d other errors; every one must be served or limited", total, got.ok, got.limited, got.other)
		}
		if allowed := burst + int(elapsed.Seconds()*rate) + 1; got.ok > allowed || got.ok < burst {
			t.Fatalf("%d served in %v; the bucket allows between %d and %d", got.ok, elapsed, burst, allowed)
		}
		hub := []string{"hub", hubs.OrchestratorName}
		// Exactly the flood's refusals: limits are per connection, and the
		// calm client was never limited.
		wantDelta(t, []*farm.Node{n}, []metricSet{before}, float64(got.limited), "hubfarm_invocations_rate_limited_total", hub...)
		wantDelta(t, []*farm.Node{n}, []metricSet{before}, float64(got.ok), "hubfarm_invocations_total",
			"hub", hubs.OrchestratorName, "method", "SendSessionMessage", "outcome", "ok")

		var worst time.Duration
		for _, l := range lat {
			worst = max(worst, l)
		}
		if worst > 2*time.Second {
			t.Fatalf("the calm client waited up to %v during the flood", worst)
		}
		t.Logf("flood of %d in %v: %d served, %d rate limited; calm client: %d calls, slowest %v", total, elapsed, got.ok, got.limited, len(lat), worst)

	})
}

func TestOriginCheck(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 1, func(c *farm.NodeConfig) { c.Hub.AllowedOrigins = []string{"https://app.example"} })
		url := f.nodes[0].URL() + "/hubs/orchestrator/negotiate?negotiateVersion=1"
		tok := token(t, "alice", time.Hour, nil)
		try := func(origin string) *http.Response {
			req, _ := http.NewRequest(http.MethodPost, url, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Origin", origin)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if r := try("https://app.example"); r.StatusCode != 200 || r.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || r.Header.Get("Access-Control-Allow-Credentials") != "true" {
			t.Fatalf("allowed origin: %d %v", r.StatusCode, r.Header)
		}
		if r := try("https://evil.example"); r.StatusCode != http.StatusForbidden {
			t.Fatalf("foreign origin: %d", r.StatusCode)
		}
		req, _ := http.NewRequest(http.MethodOptions, url, nil)
		req.Header.Set("Origin", "https://app.example")
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent || !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
			t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
		}
	})
}

// TestFarmViewNeedsATokenOnASecuredFarm: /api/farm (node addresses and
// counts) answers a secured farm's caller only with a valid bearer token.
func TestFarmViewNeedsATokenOnASecuredFarm(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) { farmViewNeedsAToken(t, b) })
}

func farmViewNeedsAToken(t *testing.T, b testredis.Backend) {
	f := securedFarm(t, b, 1, nil)
	get := func(tok string) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, f.nodes[0].URL()+"/api/farm", nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for name, tok := range map[string]string{"none": "", "expired": token(t, "alice", -time.Hour, nil), "garbage": "x.y.z"} {
		if got := get(tok); got != http.StatusUnauthorized {
			t.Errorf("%s token: status %d, want 401", name, got)
		}
	}
	if got := get(token(t, "alice", time.Hour, nil)); got != http.StatusOK {
		t.Errorf("valid token: status %d, want 200", got)
	}
}

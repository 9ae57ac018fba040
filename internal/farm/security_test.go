package farm_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/orchestratorchat/hubfarm/hubnode/auth"
	"github.com/orchestratorchat/hubfarm/hubnode/client"
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

func TestInvocationFloodIsRateLimited(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		f := securedFarm(t, b, 1, func(c *farm.NodeConfig) {
			c.Hub.InvocationRate = 20
			c.Hub.InvocationBurst = 20
		})
		url := f.nodes[0].URL() + "/hubs/orchestrator"
		flooder := mustDialAs(t, url, token(t, "flooder", time.Hour, nil))
		calm := mustDialAs(t, url, token(t, "calm", time.Hour, nil))
		sid := createSession(t, flooder, "flood")

		var limited, ok atomic.Int64
		done := make(chan struct{})
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for i := 0; i < 300; i++ {
				_, err := flooder.Invoke(ctx, "SendSessionMessage", sid, "spam")
				var ie *client.InvocationError
				switch {
				case err == nil:
					ok.Add(1)
				case errors.As(err, &ie) && strings.Contains(ie.Message, "RATE_LIMITED"):
					limited.Add(1)
				default:
					t.Errorf("flood invoke: %v", err)
					return
				}
			}
		}()
		// Meanwhile the calm client is served promptly.
		for i := 0; i < 5; i++ {
			start := time.Now()
			createSession(t, calm, "calm")
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("calm client waited %v during the flood", d)
			}
		}
		<-done
		if limited.Load() == 0 {
			t.Fatalf("300 rapid invocations: none rate limited (%d ok)", ok.Load())
		}
		t.Logf("flood: %d served, %d rate limited", ok.Load(), limited.Load())
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

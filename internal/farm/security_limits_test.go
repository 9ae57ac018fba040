package farm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// oneRedis is a real redis-server backend, for tests whose subject does not
// depend on the Redis flavour (the checks happen before or beside Redis).
func oneRedis(t *testing.T) testredis.Backend {
	return testredis.Backend{Name: "redis-server", Server: testredis.Start(t)}
}

// userOf returns the user the node attached to a client's connection.
func userOf(t *testing.T, n *farm.Node, c *client.Conn) string {
	t.Helper()
	conn, ok := n.Hub.LocalConnection(c.ConnectionID())
	if !ok {
		t.Fatalf("node %s does not hold connection %s", n.ID, c.ConnectionID())
	}
	return conn.User()
}

// wsURL is the ws:// URL of a hub of n.
func wsURL(n *farm.Node, hubPath string) string {
	return "ws" + strings.TrimPrefix(n.URL(), "http") + hubPath
}

// TestPublicKeysAndRotationOverWebSocket: RS256 tokens checked with a PEM
// public key and ES256 tokens checked with a JWKS file are accepted through
// real WebSocket connections, as are HS256 tokens signed with the current
// or the previous secret of a rotation; iss and aud are enforced when
// configured; tokens signed with anything else are refused with 401,
// whether they come in the Authorization header or the access_token query
// parameter.
func TestPublicKeysAndRotationOverWebSocket(t *testing.T) {
	dir := t.TempDir()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	pemFile := filepath.Join(dir, "rsa1.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := os.WriteFile(pemFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	enc := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{"kty": "EC", "kid": "ec1", "crv": "P-256", "use": "sig",
		"x": enc(ek.PublicKey.X.FillBytes(make([]byte, 32))), "y": enc(ek.PublicKey.Y.FillBytes(make([]byte, 32)))}}})
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	const iss, aud = "https://id.example", "hubfarm"
	v, err := auth.New(auth.Config{PublicKeyFiles: []string{pemFile}, JWKSFile: jwksFile,
		HS256Secret: []byte("new-secret"), PreviousHS256Secrets: [][]byte{[]byte("old-secret")}, Issuer: iss, Audience: aud})
	if err != nil {
		t.Fatal(err)
	}
	f := startFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.DevTrustUserParam, c.Auth = false, v })
	n := f.nodes[0]
	url := n.URL() + hubs.OrchestratorPath

	claims := func(sub string, edit func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": sub, "iss": iss, "aud": aud, "exp": time.Now().Add(time.Hour).Unix()}
		if edit != nil {
			edit(c)
		}
		return c
	}
	sign := func(m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
		tok := jwt.NewWithClaims(m, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	accepted := map[string]string{
		"rs256-pem":        sign(jwt.SigningMethodRS256, "rsa1", rk, claims("rs256-pem", nil)),
		"rs256-pem-no-kid": sign(jwt.SigningMethodRS256, "", rk, claims("rs256-pem-no-kid", nil)),
		"es256-jwks":       sign(jwt.SigningMethodES256, "ec1", ek, claims("es256-jwks", nil)),
		"hs256-current":    sign(jwt.SigningMethodHS256, "", []byte("new-secret"), claims("hs256-current", nil)),
		"hs256-previous":   sign(jwt.SigningMethodHS256, "", []byte("old-secret"), claims("hs256-previous", nil)),
	}
	for user, tok := range accepted {
		c := mustDialAs(t, url, tok)
		if got := userOf(t, n, c); got != user {
			t.Errorf("%s: the connection's user is %q", user, got)
		}
		createSession(t, c, user)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	refused := map[string]string{
		"wrong issuer":           sign(jwt.SigningMethodRS256, "rsa1", rk, claims("x", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })),
		"no issuer":              sign(jwt.SigningMethodES256, "ec1", ek, claims("x", func(c jwt.MapClaims) { delete(c, "iss") })),
		"wrong audience":         sign(jwt.SigningMethodES256, "ec1", ek, claims("x", func(c jwt.MapClaims) { c["aud"] = "another-app" })),
		"expired":                sign(jwt.SigningMethodRS256, "rsa1", rk, claims("x", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })),
		"not yet valid":          sign(jwt.SigningMethodRS256, "rsa1", rk, claims("x", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(time.Hour).Unix() })),
		"RS256 by another key":   sign(jwt.SigningMethodRS256, "rsa1", other, claims("x", nil)),
		"RS256 no kid other key": sign(jwt.SigningMethodRS256, "", other, claims("x", nil)),
		"ES256 unknown kid":      sign(jwt.SigningMethodES256, "ec2", ek, claims("x", nil)),
		"HS256 unknown secret":   sign(jwt.SigningMethodHS256, "", []byte("guessed"), claims("x", nil)),
		// Algorithm confusion: the public key used as an HMAC secret.
		"HS256 keyed by the PEM": sign(jwt.SigningMethodHS256, "rsa1", pemBytes, claims("x", nil)),
		"alg none":               sign(jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, claims("x", nil)),
		"missing":                "",
	}
	before := scrape(t, n)
	for name, tok := range refused {
		if _, err := dialAs(t, url, tok); statusOf(err) != http.StatusUnauthorized {
			t.Errorf("%s: %v, want 401 at negotiate", name, err)
		}
		// The same token on the upgrade itself, in the query string as
		// browsers send it.
		u := wsURL(n, hubs.OrchestratorPath)
		if tok != "" {
			u += "?access_token=" + tok
		}
		ws, resp, err := websocket.DefaultDialer.Dial(u, nil)
		if err == nil {
			ws.Close()
			t.Errorf("%s: the upgrade with the token in the query succeeded", name)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: upgrade: %v, want 401", name, err)
		}
	}
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, float64(len(refused)), "hubfarm_handshake_failures_total", "reason", "unauthorized")

	// A good token in the query string works as well as in the header.
	ws, _, err := websocket.DefaultDialer.Dial(wsURL(n, hubs.OrchestratorPath)+"?access_token="+accepted["es256-jwks"], nil)
	if err != nil {
		t.Fatalf("a valid token in the query string: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	rawHandshake(t, ws)
}

// TestOriginCheckOnWebSocketUpgrade: with allowed origins configured, a
// browser from an allowed origin, a same-origin page and a non-browser
// client (no Origin) connect; a foreign origin is refused at negotiate and,
// when it skips negotiate, at the WebSocket upgrade, with 403 and a metric.
func TestOriginCheckOnWebSocketUpgrade(t *testing.T) {
	f := securedFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.Hub.AllowedOrigins = []string{"https://app.example"} })
	n := f.nodes[0]
	url := n.URL() + hubs.OrchestratorPath
	tok := token(t, "alice", time.Hour, nil)
	dialOrigin := func(origin string, skip bool) error {
		h := http.Header{}
		if origin != "" {
			h.Set("Origin", origin)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, url, client.Options{Header: h, SkipNegotiation: skip,
			AccessToken: func() (string, error) { return tok, nil }})
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		return err
	}
	for _, origin := range []string{"https://app.example", "HTTPS://APP.EXAMPLE", n.URL(), ""} {
		for _, skip := range []bool{false, true} {
			if err := dialOrigin(origin, skip); err != nil {
				t.Errorf("origin %q (skipNegotiation %v): %v", origin, skip, err)
			}
		}
	}
	before := scrape(t, n)
	for _, origin := range []string{"https://evil.example", "https://app.example.evil.example", "null"} {
		err := dialOrigin(origin, false)
		var se *client.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusForbidden || se.Op != "negotiate" {
			t.Errorf("origin %q at negotiate: %v, want 403", origin, err)
		}
		err = dialOrigin(origin, true)
		if !errors.As(err, &se) || se.StatusCode != http.StatusForbidden || se.Op != "websocket upgrade" || !strings.Contains(se.Body, "Origin not allowed") {
			t.Errorf("origin %q at the upgrade: %v, want 403 Origin not allowed", origin, err)
		}
	}
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, 3, "hubfarm_handshake_failures_total", "reason", "origin")
}

// TestPerNodeConnectionLimit: a node at its connection limit refuses the
// next WebSocket with 503 and a clear message (the load balancer tries
// another node, which accepts it) and takes connections again once one
// left.
func TestPerNodeConnectionLimit(t *testing.T) {
	i := 0
	f := securedFarm(t, oneRedis(t), 2, func(c *farm.NodeConfig) {
		if i++; i == 1 {
			c.Hub.MaxConnections = 2
		}
	})
	full, spare := f.nodes[0], f.nodes[1]
	url := full.URL() + hubs.AgentPath
	first := mustDialAs(t, url, token(t, "u1", time.Hour, nil))
	mustDialAs(t, url, token(t, "u2", time.Hour, nil))
	before := scrape(t, full)
	_, err := dialAs(t, url, token(t, "u3", time.Hour, nil))
	var se *client.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusServiceUnavailable || !strings.Contains(se.Body, "connection limit") {
		t.Fatalf("third connection to a node limited to 2: %v, want 503 naming the connection limit", err)
	}
	wantDelta(t, []*farm.Node{full}, []metricSet{before}, 1, "hubfarm_handshake_failures_total", "reason", "node_full")
	mustDialAs(t, spare.URL()+hubs.AgentPath, token(t, "u3", time.Hour, nil))

	_ = first.Close()
	waitFor(t, 5*time.Second, "the node to have room again", func() bool { return full.Hub.ConnectionCount() == 1 })
	mustDialAs(t, url, token(t, "u3", time.Hour, nil))
}

// TestGroupsPerConnectionLimit: a connection may be in a bounded number of
// groups; the next join is refused with a clear error and leaves the
// connection usable, and leaving a group makes room.
func TestGroupsPerConnectionLimit(t *testing.T) {
	f := securedFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.Hub.MaxGroupsPerConnection = 3 })
	c := mustDialAs(t, f.nodes[0].URL()+hubs.AgentPath, token(t, "alice", time.Hour, nil))
	for _, a := range []string{"a1", "a2", "a3"} {
		invoke(t, c, nil, "SubscribeToAgent", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.Invoke(ctx, "SubscribeToAgent", "a4")
	var ie *client.InvocationError
	if !errors.As(err, &ie) || !strings.Contains(ie.Message, "at most 3 groups") {
		t.Fatalf("fourth group: %v, want an error naming the limit", err)
	}
	invoke(t, c, nil, "UnsubscribeFromAgent", "a1")
	invoke(t, c, nil, "SubscribeToAgent", "a4")
	conn, _ := f.nodes[0].Hub.LocalConnection(c.ConnectionID())
	if got := len(conn.Groups()); got != 3 {
		t.Fatalf("the connection is in %d groups, want 3", got)
	}
}

// TestNegotiateRatePerIP: one client address that negotiates (or opens
// WebSockets) faster than the per-IP rate is refused with 429 beyond the
// burst, while another address is served normally.
func TestNegotiateRatePerIP(t *testing.T) {
	f := securedFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.Hub.NegotiateRatePerIP = 1 }) // burst 2
	n := f.nodes[0]
	tok := token(t, "alice", time.Hour, nil)
	from := func(ip string) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
		tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	negotiate := func(c *http.Client) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, n.URL()+hubs.OrchestratorPath+"/negotiate?negotiateVersion=1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("negotiate: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	flooder, other := from("127.0.0.1"), from("127.0.0.2")
	start := time.Now()
	ok, limited := 0, 0
	for range 8 {
		switch code, body := negotiate(flooder); code {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			limited++
			if !strings.Contains(body, "Too many negotiate requests") {
				t.Errorf("429 body %q", body)
			}
		default:
			t.Fatalf("negotiate: %d %q", code, body)
		}
	}
	// Burst 2, then one token per second.
	if allowed := 2 + int(time.Since(start)/time.Second); ok > allowed || limited == 0 {
		t.Fatalf("8 negotiates in %v: %d served, %d refused; at most %d may be served", time.Since(start), ok, limited, allowed)
	}
	if code, body := negotiate(other); code != http.StatusOK {
		t.Fatalf("another address was refused: %d %q", code, body)
	}
	// The WebSocket upgrade draws on the same bucket.
	before := scrape(t, n)
	d := &websocket.Dialer{NetDialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}}).DialContext}
	h := http.Header{"Authorization": {"Bearer " + tok}}
	ws, resp, err := d.Dial(wsURL(n, hubs.OrchestratorPath), h)
	if err == nil {
		ws.Close()
		t.Fatal("a WebSocket from the flooding address was accepted")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("WebSocket from the flooding address: %v, want 429", err)
	}
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, 1, "hubfarm_handshake_failures_total", "reason", "rate_limited")
	d.NetDialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext
	ws, _, err = d.Dial(wsURL(n, hubs.OrchestratorPath), h)
	if err != nil {
		t.Fatalf("WebSocket from another address: %v", err)
	}
	ws.Close()
}

// TestInputLimitsOverWebSocket: arguments nested too deeply, ids and texts
// that are too long, and a message over the size limit are refused with a
// clear error (the last by closing that connection), and the node keeps
// serving the caller's other calls and other connections.
func TestInputLimitsOverWebSocket(t *testing.T) {
	f := securedFarm(t, oneRedis(t), 1, func(c *farm.NodeConfig) { c.Hub.MaxMessageSize = 100 << 10 })
	n := f.nodes[0]
	url := n.URL() + hubs.OrchestratorPath
	alice := mustDialAs(t, url, token(t, "alice", time.Hour, nil))
	bystander := mustDialAs(t, url, token(t, "bob", time.Hour, nil))
	sid := createSession(t, alice, "limits")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	refused := func(what, want string, target string, args ...any) {
		t.Helper()
		_, err := alice.Invoke(ctx, target, args...)
		var ie *client.InvocationError
		if !errors.As(err, &ie) || !strings.Contains(ie.Message, want) {
			t.Errorf("%s: %v, want an error containing %q", what, err, want)
		}
	}
	deep := json.RawMessage(strings.Repeat("[", 40) + `"x"` + strings.Repeat("]", 40))
	refused("arguments nested 40 deep", "nested too deeply", "SendSessionMessage", sid, deep)
	refused("a 200-byte session id", "VALIDATION_FAILED", "JoinSession", strings.Repeat("s", 200))
	refused("an empty session id", "VALIDATION_FAILED", "GetSessionHistory", "", nil, 10)
	refused("a session id with a line break", "VALIDATION_FAILED", "JoinSession", "s1\nlevel=ERROR msg=forged")
	refused("a 200-byte user id", "VALIDATION_FAILED", "InviteToSession", sid, strings.Repeat("u", 200))
	refused("a 200-byte plan id", "VALIDATION_FAILED", "GetPlan", strings.Repeat("p", 200))
	refused("a 200-byte agent id", "VALIDATION_FAILED", "CreateOrchestrationPlan", contract.CreatePlanRequest{SessionID: sid,
		Goal: "g", Strategy: contract.StrategySequential, AvailableAgentIDs: []string{strings.Repeat("a", 200)}, MaxSteps: 3})
	refused("70 KiB of content", "VALIDATION_FAILED", "SendSessionMessage", sid, strings.Repeat("c", 70<<10))
	refused("a 40 KiB goal", "VALIDATION_FAILED", "CreateOrchestrationPlan", contract.CreatePlanRequest{SessionID: sid,
		Goal: strings.Repeat("g", 40<<10), Strategy: contract.StrategySequential, AvailableAgentIDs: []string{"scripted-writer"}, MaxSteps: 3})
	refused("a wrongly typed argument", "Error binding argument 1", "JoinSession", map[string]int{"id": 1})
	var resp contract.SessionCreatedResponse
	invoke(t, alice, &resp, "CreateSession", contract.CreateSessionRequest{Name: strings.Repeat("n", 300)})
	if resp.Success || resp.Error == nil || !strings.Contains(*resp.Error, "too long") {
		t.Errorf("a 300-byte session name: %+v", resp)
	}
	// None of that hurt the connection.
	invoke(t, alice, nil, "SendSessionMessage", sid, "still here")

	// A message over the size limit closes that connection only.
	before := scrape(t, n)
	_, err := alice.Invoke(ctx, "SendSessionMessage", sid, strings.Repeat("x", 120<<10))
	if err == nil {
		t.Fatal("a 120 KiB message was accepted")
	}
	select {
	case <-alice.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the connection that sent 120 KiB stayed open")
	}
	wantDelta(t, []*farm.Node{n}, []metricSet{before}, 1, "hubfarm_connections_closed_total", "reason", "message_too_big")
	createSession(t, bystander, "unaffected")
}

// TestPlansInAnotherUsersSession: an outsider may not plan in, run, read,
// cancel or message the orchestration of a session that is not theirs:
// every call is refused with FORBIDDEN.
func TestPlansInAnotherUsersSession(t *testing.T) {
	f := securedFarm(t, oneRedis(t), 2, nil)
	alice := mustDialAs(t, f.nodes[0].URL()+hubs.OrchestratorPath, token(t, "alice", time.Hour, nil))
	mallory := mustDialAs(t, f.nodes[1].URL()+hubs.OrchestratorPath, token(t, "mallory", time.Hour, nil))
	errs := record(mallory, "ReceiveError")
	sid := createSession(t, alice, "plans")
	req := contract.CreatePlanRequest{SessionID: sid, Goal: "private goal", Strategy: contract.StrategySequential,
		AvailableAgentIDs: []string{"scripted-writer"}, MaxSteps: 3}
	var plan contract.OrchestrationPlan
	invoke(t, alice, &plan, "CreateOrchestrationPlan", req)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		target string
		args   []any
	}{
		{"CreateOrchestrationPlan", []any{req}},
		{"ExecutePlan", []any{plan.ID}},
		{"GetPlan", []any{plan.ID}},
		{"CancelExecution", []any{plan.ID}},
	} {
		_, err := mallory.Invoke(ctx, c.target, c.args...)
		var ie *client.InvocationError
		if !errors.As(err, &ie) || !strings.Contains(ie.Message, "FORBIDDEN") {
			t.Errorf("mallory's %s on alice's session: %v, want FORBIDDEN", c.target, err)
		}
	}
	// SendOrchestrationMessage reports refusals with ReceiveError.
	invoke(t, mallory, nil, "SendOrchestrationMessage", contract.OrchestrationMessageRequest{SessionID: sid, Message: "let me in",
		AgentIDs: []string{"scripted-writer"}, Strategy: contract.StrategySequential})
	waitFor(t, 5*time.Second, "ReceiveError FORBIDDEN for SendOrchestrationMessage", func() bool {
		for _, e := range errs.snapshot() {
			if strings.Contains(string(e), `"FORBIDDEN"`) {
				return true
			}
		}
		return false
	})
	// The plan is untouched: alice still reads it as created.
	var st contract.PlanState
	invoke(t, alice, &st, "GetPlan", plan.ID)
	if st.Plan.ID != plan.ID {
		t.Fatalf("alice's plan: %+v", st)
	}

	// An admin may use every session: plans included.
	admin := mustDialAs(t, f.nodes[1].URL()+hubs.OrchestratorPath, token(t, "root", time.Hour, jwt.MapClaims{"role": "admin"}))
	st = contract.PlanState{}
	invoke(t, admin, &st, "GetPlan", plan.ID)
	if st.Plan.ID != plan.ID {
		t.Fatalf("the admin's GetPlan: %+v", st)
	}
	var adminPlan contract.OrchestrationPlan
	invoke(t, admin, &adminPlan, "CreateOrchestrationPlan", req)
	invoke(t, admin, nil, "CancelExecution", adminPlan.ID)
}

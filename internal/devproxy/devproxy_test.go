package devproxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// nameServer returns a backend that answers every request with its name, the
// request body (if any) after a colon, and echoes the Host it saw in a header.
func nameServer(t *testing.T, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Forwarded-For", r.Header.Get("X-Forwarded-For"))
		if len(b) > 0 {
			fmt.Fprintf(w, "%s:%s", name, b)
			return
		}
		fmt.Fprint(w, name)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// echoWSServer returns a backend that upgrades to WebSocket and echoes every
// message prefixed with its name.
func echoWSServer(t *testing.T, name string) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte(name+":"), msg...)); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// deadURL returns the URL of a loopback port that refuses connections.
func deadURL(t *testing.T) *url.URL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return mustURL(t, "http://"+addr)
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func urls(t *testing.T, srvs ...*httptest.Server) []*url.URL {
	t.Helper()
	out := make([]*url.URL, len(srvs))
	for i, s := range srvs {
		out[i] = mustURL(t, s.URL)
	}
	return out
}

// startProxy serves p on a loopback httptest server.
func startProxy(t *testing.T, p *Proxy) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.Close()
		p.CloseIdleConnections()
	})
	return srv
}

// get fetches url and returns the body and the backend header.
func get(t *testing.T, c *http.Client, u string) (status int, body, backend string) {
	t.Helper()
	res, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(b), res.Header.Get(BackendHeader)
}

func TestAlternatesBetweenBackends(t *testing.T) {
	a, b, c := nameServer(t, "a"), nameServer(t, "b"), nameServer(t, "c")
	hosts := map[string]string{mustURL(t, a.URL).Host: "a", mustURL(t, b.URL).Host: "b", mustURL(t, c.URL).Host: "c"}
	px := startProxy(t, New(urls(t, a, b, c), nil))

	var got []string
	for range 9 {
		status, body, backend := get(t, px.Client(), px.URL+"/x")
		if status != http.StatusOK {
			t.Fatalf("status %d", status)
		}
		if hosts[backend] != body {
			t.Fatalf("%s header %q names %q, body says %q", BackendHeader, backend, hosts[backend], body)
		}
		got = append(got, body)
	}
	// Strict rotation: each window of three sees every backend once, in the same order.
	for i := 3; i < len(got); i++ {
		if got[i] != got[i-3] {
			t.Fatalf("not round-robin: %v", got)
		}
	}
	if got[0] == got[1] || got[1] == got[2] || got[0] == got[2] {
		t.Fatalf("not round-robin: %v", got)
	}
}

func TestKeepsHostAndSetsForwardedFor(t *testing.T) {
	a := nameServer(t, "a")
	px := startProxy(t, New(urls(t, a), nil))
	req, _ := http.NewRequest(http.MethodGet, px.URL+"/", nil)
	req.Host = "console.example:8080"
	res, err := px.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if h := res.Header.Get("X-Seen-Host"); h != "console.example:8080" {
		t.Errorf("backend saw Host %q, want the client's", h)
	}
	if f := res.Header.Get("X-Seen-Forwarded-For"); f != "127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", f)
	}
}

func TestWebSocketPassThrough(t *testing.T) {
	a, b := echoWSServer(t, "a"), echoWSServer(t, "b")
	hosts := map[string]string{mustURL(t, a.URL).Host: "a", mustURL(t, b.URL).Host: "b"}
	px := startProxy(t, New(urls(t, a, b), nil))
	wsURL := "ws" + strings.TrimPrefix(px.URL, "http") + "/hub?id=tok"

	seen := map[string]bool{}
	var conns []*websocket.Conn
	for i := range 4 {
		c, res, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		conns = append(conns, c)
		name := hosts[res.Header.Get(BackendHeader)]
		if name == "" {
			t.Fatalf("upgrade response lacks a valid %s: %q", BackendHeader, res.Header.Get(BackendHeader))
		}
		seen[name] = true
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		for j := range 3 {
			msg := fmt.Sprintf("m%d-%d", i, j)
			if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			mt, got, err := c.ReadMessage()
			if err != nil {
				t.Fatal(err)
			}
			if mt != websocket.TextMessage || string(got) != name+":"+msg {
				t.Fatalf("echo = %d %q, want text %q", mt, got, name+":"+msg)
			}
		}
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("upgrades did not alternate: %v", seen)
	}
	for _, c := range conns {
		c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
		c.Close()
	}
}

func TestSkipsDeadBackend(t *testing.T) {
	a, b := nameServer(t, "a"), nameServer(t, "b")
	backends := []*url.URL{mustURL(t, a.URL), deadURL(t), mustURL(t, b.URL)}
	px := startProxy(t, New(backends, nil))

	counts := map[string]int{}
	for i := range 12 {
		// Alternate GET and POST so a body is also carried over to the next backend.
		var res *http.Response
		var err error
		payload := fmt.Sprintf("p%d", i)
		if i%2 == 0 {
			res, err = px.Client().Get(px.URL + "/")
		} else {
			res, err = px.Client().Post(px.URL+"/", "text/plain", strings.NewReader(payload))
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("request %d: status %d %s", i, res.StatusCode, body)
		}
		name, rest, _ := strings.Cut(string(body), ":")
		if i%2 == 1 && rest != payload {
			t.Fatalf("request %d: body not forwarded intact: %q", i, body)
		}
		counts[name]++
	}
	if counts["a"] == 0 || counts["b"] == 0 || counts["a"]+counts["b"] != 12 {
		t.Fatalf("unexpected distribution %v", counts)
	}
}

func TestWebSocketSkipsDeadBackend(t *testing.T) {
	a := echoWSServer(t, "a")
	px := startProxy(t, New([]*url.URL{deadURL(t), mustURL(t, a.URL)}, nil))
	wsURL := "ws" + strings.TrimPrefix(px.URL, "http") + "/"
	for i := range 4 {
		c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		c.Close()
	}
}

func TestAllBackendsDead(t *testing.T) {
	px := startProxy(t, New([]*url.URL{deadURL(t), deadURL(t)}, nil))
	status, _, _ := get(t, px.Client(), px.URL+"/")
	if status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", status)
	}
}

func TestNoBackends(t *testing.T) {
	px := startProxy(t, New(nil, nil))
	status, _, _ := get(t, px.Client(), px.URL+"/")
	if status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", status)
	}
}

func TestSetBackends(t *testing.T) {
	a, b, c := nameServer(t, "a"), nameServer(t, "b"), nameServer(t, "c")
	p := New(urls(t, a, b), nil)
	px := startProxy(t, p)

	p.SetBackends(urls(t, c)) // drain a and b
	for range 4 {
		if _, body, _ := get(t, px.Client(), px.URL+"/"); body != "c" {
			t.Fatalf("after SetBackends served by %q", body)
		}
	}
	if got := p.Backends(); len(got) != 1 || got[0].String() != c.URL {
		t.Fatalf("Backends() = %v", got)
	}

	p.SetBackends(urls(t, a, c))
	seen := map[string]bool{}
	for range 4 {
		_, body, _ := get(t, px.Client(), px.URL+"/")
		seen[body] = true
	}
	if !seen["a"] || !seen["c"] || seen["b"] {
		t.Fatalf("served by %v, want a and c", seen)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		a, b := echoWSServer(t, "a"), echoWSServer(t, "b")
		// Closed below rather than at test end, so their goroutines count.
		p := New(urls(t, a, b), nil)
		px := httptest.NewServer(p)
		defer func() {
			px.Close()
			p.CloseIdleConnections()
			a.Close()
			b.Close()
		}()
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		wsURL := "ws" + strings.TrimPrefix(px.URL, "http") + "/"
		for range 10 {
			res, err := client.Get(px.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
			if err != nil {
				t.Fatal(err)
			}
			c.WriteMessage(websocket.TextMessage, []byte("x"))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, _, err := c.ReadMessage(); err != nil {
				t.Fatal(err)
			}
			c.Close() // abrupt close: the proxy must tear down its side as well
		}
	}()

	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("goroutines: %d before, %d after\n%s", before, n, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/orchestratorchat/hubfarm/backplane"
	"github.com/orchestratorchat/hubfarm/metrics"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesPageAndAssets(t *testing.T) {
	h := Handler()
	res := get(t, h, http.MethodGet, "/", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK || !strings.Contains(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET / = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if !strings.Contains(string(body), "<!doctype html>") {
		t.Fatalf("GET / is not the page: %.80s", body)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Fatalf("page without CSP: %q", csp)
	}
	etag := res.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if res := get(t, h, http.MethodGet, "/", map[string]string{"If-None-Match": etag}); res.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation = %d, want 304", res.StatusCode)
	}
	if res := get(t, h, http.MethodHead, "/", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("HEAD / = %d", res.StatusCode)
	}

	// Every embedded module and stylesheet is served with its type.
	n := 0
	err := fs.WalkDir(Static(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || p == "index.html" {
			return err
		}
		n++
		res := get(t, h, http.MethodGet, AssetsPrefix+p, nil)
		ct := res.Header.Get("Content-Type")
		switch {
		case res.StatusCode != http.StatusOK:
			t.Errorf("GET %s = %d", p, res.StatusCode)
		case strings.HasSuffix(p, ".js") && !strings.HasPrefix(ct, "text/javascript"):
			t.Errorf("GET %s: Content-Type %q", p, ct)
		case strings.HasSuffix(p, ".css") && !strings.HasPrefix(ct, "text/css"):
			t.Errorf("GET %s: Content-Type %q", p, ct)
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walk: %v, %d assets", err, n)
	}
}

func TestHandlerRefusesOthers(t *testing.T) {
	h := Handler()
	for _, p := range []string{"/assets/", "/assets/nope.js", "/assets/../web.go", "/other"} {
		if res := get(t, h, http.MethodGet, p, nil); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", p, res.StatusCode)
		}
	}
	if res := get(t, h, http.MethodPost, "/", nil); res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST / = %d, want 405", res.StatusCode)
	}
}

func TestIndexReferencesOnlyEmbeddedAssets(t *testing.T) {
	page, err := fs.ReadFile(Static(), "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range strings.Split(string(page), AssetsPrefix)[1:] {
		name := part[:strings.IndexAny(part, `"'`)]
		if _, err := fs.Stat(Static(), name); err != nil {
			t.Errorf("index.html refers to %s%s, which is not embedded", AssetsPrefix, name)
		}
	}
}

func TestFarmAPI(t *testing.T) {
	hb := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := metrics.NewNode(prometheus.NewRegistry())
	m.MessageInCounter("1").Add(3)
	m.MessageInCounter("6").Add(4)
	m.RecordsOut.Add(11)
	src := FarmSource{
		NodeID: "node-b",
		Nodes: func(context.Context) ([]backplane.NodeInfo, error) {
			return []backplane.NodeInfo{
				{ID: "node-a", Address: "10.0.0.1:8080", Connections: 2, LastHeartbeat: hb, MessagesIn: 40, MessagesOut: 800},
				{ID: "node-b", Address: "10.0.0.2:8080", Connections: 5, LastHeartbeat: hb},
			}, nil
		},
		ConnectionNode: func(_ context.Context, id string) (string, error) {
			if id == "c1" {
				return "node-a", nil
			}
			return "", errors.New("boom")
		},
		MessageTotals: m.MessageTotals,
	}
	res := get(t, FarmAPI(src), http.MethodGet, "/api/farm?connection=c1&connection=c2", nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	var v FarmView
	if err := json.NewDecoder(res.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	if v.ServedBy.ID != "node-b" || v.ServedBy.MessagesIn != 7 || v.ServedBy.MessagesOut != 11 {
		t.Errorf("servedBy = %+v", v.ServedBy)
	}
	if len(v.Nodes) != 2 || v.Nodes[1].Connections != 5 || !v.Nodes[0].LastHeartbeat.Equal(hb) ||
		v.Nodes[0].MessagesIn != 40 || v.Nodes[0].MessagesOut != 800 || v.Nodes[1].MessagesIn != 0 {
		t.Errorf("nodes = %+v", v.Nodes)
	}
	if v.Connections["c1"] != "node-a" || v.Connections["c2"] != "" {
		t.Errorf("connections = %v", v.Connections)
	}

	src.Nodes = func(context.Context) ([]backplane.NodeInfo, error) { return nil, errors.New("redis down") }
	res = get(t, FarmAPI(src), http.MethodGet, "/api/farm", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), "redis down") {
		t.Errorf("registry failure = %d %s", res.StatusCode, body)
	}
}

func TestFarmAPIAuthenticates(t *testing.T) {
	asked := 0
	src := FarmSource{
		NodeID: "node-a",
		Nodes: func(context.Context) ([]backplane.NodeInfo, error) {
			asked++
			return []backplane.NodeInfo{{ID: "node-a", Address: "10.0.0.1:8080"}}, nil
		},
		Authenticate: func(r *http.Request) error {
			if r.Header.Get("Authorization") != "Bearer good" {
				return errors.New("token expired at 12:00")
			}
			return nil
		},
	}
	res := get(t, FarmAPI(src), http.MethodGet, "/api/farm", nil)
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("WWW-Authenticate") != "Bearer" ||
		strings.Contains(string(body), "10.0.0.1") || strings.Contains(string(body), "expired") || asked != 0 {
		t.Fatalf("without a token: %d %q %s (registry asked %d times)", res.StatusCode, res.Header.Get("WWW-Authenticate"), body, asked)
	}
	res = get(t, FarmAPI(src), http.MethodGet, "/api/farm", map[string]string{"Authorization": "Bearer good"})
	if res.StatusCode != http.StatusOK || asked != 1 {
		t.Fatalf("with a token: %d (registry asked %d times)", res.StatusCode, asked)
	}
}

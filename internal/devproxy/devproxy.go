// Package devproxy is a small round-robin reverse proxy for development farms.
//
// It stands in for the plain load balancer that sits in front of a production
// farm: every request, including each WebSocket upgrade, goes to the next
// backend in turn, with deliberately no stickiness, so a SignalR negotiate and
// the WebSocket that follows it usually land on different hub nodes. A backend
// that refuses the connection is skipped for that request and the next one is
// tried (at most once per backend). Every proxied response carries the header
// X-Hubfarm-Backend naming the backend that served it.
package devproxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// BackendHeader is the response header that names the backend (host:port)
// which served the request.
const BackendHeader = "X-Hubfarm-Backend"

// Proxy is a round-robin reverse proxy. It is safe for concurrent use; the
// backend set may be changed at any time with SetBackends.
type Proxy struct {
	logger    *slog.Logger
	transport *http.Transport
	errorLog  *slog.Logger

	mu       sync.RWMutex
	backends []*url.URL

	next atomic.Uint64
}

// New returns a proxy that alternates between backends. Each backend URL
// gives scheme and host (for example http://127.0.0.1:9001); a path in it is
// used as a prefix of the proxied request path. A nil logger discards logs.
func New(backends []*url.URL, logger *slog.Logger) *Proxy {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	p := &Proxy{
		logger: logger,
		transport: &http.Transport{
			Proxy:                 nil, // never route loopback backends through an environment proxy
			DialContext:           dialer.DialContext,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
	}
	p.SetBackends(backends)
	return p
}

// SetBackends replaces the backend set. Requests already in flight, and
// proxied WebSockets, keep the backend they have; later requests use the new
// set. An empty set makes the proxy answer 503.
func (p *Proxy) SetBackends(backends []*url.URL) {
	cp := make([]*url.URL, 0, len(backends))
	for _, b := range backends {
		if b == nil {
			continue
		}
		u := *b
		cp = append(cp, &u)
	}
	p.mu.Lock()
	p.backends = cp
	p.mu.Unlock()
	p.logger.Debug("devproxy backends set", "count", len(cp))
}

// Backends returns a copy of the current backend set.
func (p *Proxy) Backends() []*url.URL {
	p.mu.RLock()
	defer p.mu.RUnlock()
	out := make([]*url.URL, len(p.backends))
	for i, b := range p.backends {
		u := *b
		out[i] = &u
	}
	return out
}

// CloseIdleConnections closes idle keep-alive connections to the backends.
// Call it when shutting the proxy down.
func (p *Proxy) CloseIdleConnections() {
	p.transport.CloseIdleConnections()
}

// ServeHTTP proxies r to the next backend, skipping backends that refuse the
// connection. When no backend can be reached it answers 502.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.RLock()
	backends := p.backends
	p.mu.RUnlock()
	n := len(backends)
	if n == 0 {
		http.Error(w, "devproxy: no backends", http.StatusServiceUnavailable)
		return
	}

	// Track whether the body has been touched: a request may only be retried
	// on another backend while nothing of it has been sent.
	var body *trackingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &trackingBody{rc: r.Body}
		r.Body = body
		defer body.rc.Close()
	}

	start := p.next.Add(1) - 1
	for i := range n {
		backend := backends[(start+uint64(i))%uint64(n)]
		last := i == n-1
		if p.serveOne(w, r, backend, body, last) {
			return
		}
		p.logger.Warn("devproxy: backend unreachable, trying next", "backend", backend.Host, "method", r.Method, "path", r.URL.Path)
	}
}

// serveOne proxies r to backend. It reports false (and writes nothing) when
// the backend could not be dialled and the request may be retried elsewhere.
func (p *Proxy) serveOne(w http.ResponseWriter, r *http.Request, backend *url.URL, body *trackingBody, last bool) bool {
	retry := false
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(backend)
			pr.Out.Host = pr.In.Host // keep the client's Host, as a load balancer does (WebSocket origin checks compare against it)
			pr.SetXForwarded()
		},
		Transport: p.transport,
		ModifyResponse: func(res *http.Response) error {
			res.Header.Set(BackendHeader, backend.Host)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, req *http.Request, err error) {
			if !last && isDialError(err) && r.Context().Err() == nil && (body == nil || !body.used()) {
				retry = true
				return
			}
			if r.Context().Err() != nil {
				// The client went away; nobody will read an answer.
				p.logger.Debug("devproxy: client gone", "backend", backend.Host, "path", r.URL.Path, "err", err)
				return
			}
			p.logger.Warn("devproxy: proxy error", "backend", backend.Host, "method", r.Method, "path", r.URL.Path, "err", err)
			w.Header().Set(BackendHeader, backend.Host)
			http.Error(w, "devproxy: bad gateway", http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(p.logger.Handler(), slog.LevelDebug),
	}
	rp.ServeHTTP(w, r)
	return !retry
}

// isDialError reports whether err happened while connecting to the backend,
// i.e. before any part of the request was sent.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// trackingBody wraps a request body, records whether it has been read, and
// ignores Close so that the body survives a failed attempt; ServeHTTP closes
// the underlying body itself.
type trackingBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *trackingBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *trackingBody) Close() error { return nil }

func (b *trackingBody) used() bool { return b.read.Load() }

package hubnode

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipLimiter rate-limits negotiate and WebSocket requests per client IP. Its
// map is bounded: idle entries are swept by the node's scan loop, and when it
// is full new IPs are let through untracked rather than refused, so a flood
// from many addresses cannot lock legitimate clients out.
type ipLimiter struct {
	mu      sync.Mutex
	entries map[string]*ipEntry
	limit   rate.Limit
	burst   int
	max     int
}

type ipEntry struct {
	lim  *rate.Limiter
	seen time.Time
}

const ipLimiterMaxEntries = 100_000

func newIPLimiter(perSecond float64) *ipLimiter {
	return &ipLimiter{entries: map[string]*ipEntry{}, limit: rate.Limit(perSecond),
		burst: max(1, int(2*perSecond)), max: ipLimiterMaxEntries}
}

func (l *ipLimiter) allow(ip string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[ip]
	if e == nil {
		if len(l.entries) >= l.max {
			return true
		}
		e = &ipEntry{lim: rate.NewLimiter(l.limit, l.burst)}
		l.entries[ip] = e
	}
	e.seen = now
	return e.lim.AllowN(now, 1)
}

// sweep forgets IPs idle for longer than it takes their bucket to refill.
func (l *ipLimiter) sweep(now time.Time) {
	idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Minute
	l.mu.Lock()
	defer l.mu.Unlock()
	for ip, e := range l.entries {
		if now.Sub(e.seen) > idle {
			delete(l.entries, ip)
		}
	}
}

// clientIP is the request's client address: the host part of RemoteAddr.
// Behind a load balancer every request comes from the balancer; configure
// the balancer's own per-IP limits there.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// originAllowed applies AllowedOrigins to a browser request. Requests without
// an Origin header (non-browser clients) are allowed; a same-origin browser
// request is always allowed.
func (n *Node) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range n.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// cors writes the CORS headers of an allowed cross-origin request. Browsers
// send negotiate with credentials, so the origin is echoed (never "*").
func (n *Node) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if !n.originAllowed(r) {
		return false
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Credentials", "true")
	h.Add("Vary", "Origin")
	return true
}

// preflight answers the browser's OPTIONS request before negotiate.
func (n *Node) preflight(w http.ResponseWriter, r *http.Request) {
	if !n.cors(w, r) {
		http.Error(w, "Origin not allowed", http.StatusForbidden)
		return
	}
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, X-SignalR-User-Agent, Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
}

// jsonDepth returns the nesting depth of a JSON value (0 for a scalar),
// without decoding it.
func jsonDepth(b []byte) int {
	depth, deepest := 0, 0
	inString, escaped := false, false
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			depth++
			deepest = max(deepest, depth)
		case ']', '}':
			depth--
		}
	}
	return deepest
}

package loadgen

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
)

// errorLog counts errors by kind and keeps the first message of each kind.
// Errors are rare compared with messages, so a mutex is cheap enough.
type errorLog struct {
	mu    sync.Mutex
	kinds map[string]*ErrorKind
	total int64
}

// ErrorKind is one line of the report's error table.
type ErrorKind struct {
	Kind    string `json:"kind"`
	Count   int64  `json:"count"`
	Example string `json:"example"`
}

func newErrorLog() *errorLog { return &errorLog{kinds: map[string]*ErrorKind{}} }

// add counts one error of kind; the first error of a kind is kept whole.
func (l *errorLog) add(kind string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	k := l.kinds[kind]
	if k == nil {
		k = &ErrorKind{Kind: kind}
		if err != nil {
			k.Example = err.Error()
		}
		l.kinds[kind] = k
	}
	k.Count++
}

func (l *errorLog) count() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// list returns the kinds, most frequent first.
func (l *errorLog) list() []ErrorKind {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ErrorKind, 0, len(l.kinds))
	for _, k := range l.kinds {
		out = append(out, *k)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Kind < out[j].Kind
	})
	return out
}

// errHTTPStatus is returned by the WebSocket dial for a refused upgrade.
type errHTTPStatus struct {
	op     string
	status int
	body   string
}

func (e *errHTTPStatus) Error() string {
	return fmt.Sprintf("%s: HTTP %d: %s", e.op, e.status, e.body)
}

// classify names the kind of an error for the report: the operation, then
// an HTTP status, a hub error code ("RATE_LIMITED: ..." gives RATE_LIMITED)
// or a transport failure class. Kinds must stay few: they are table rows.
func classify(op string, err error) string {
	var se *client.StatusError
	var he *errHTTPStatus
	var ie *invocationError
	var ne net.Error
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s: negotiate HTTP %d", op, se.StatusCode)
	case errors.As(err, &he):
		return fmt.Sprintf("%s: %s HTTP %d", op, he.op, he.status)
	case errors.As(err, &ie):
		return op + ": " + hubErrorCode(ie.msg)
	case errors.Is(err, errTimeout):
		return op + ": timeout"
	case errors.Is(err, errConnClosed):
		return op + ": connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return op + ": network timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return op + ": connection refused"
	case strings.Contains(err.Error(), "connection reset"):
		return op + ": connection reset"
	case strings.Contains(err.Error(), "too many open files"):
		return op + ": too many open files"
	case strings.Contains(err.Error(), "cannot assign requested address"):
		return op + ": out of local ports"
	}
	return op + ": other"
}

// hubErrorCode shortens a Completion error text to its code: the farm's
// errors read "CODE: message"; anything else (for example "Method does not
// exist.") is kept up to 60 bytes.
func hubErrorCode(msg string) string {
	// The node wraps a hub method's error as "... on the server.
	// HubException: CODE: message", like ASP.NET Core.
	if _, after, ok := strings.Cut(msg, "HubException: "); ok {
		msg = after
	}
	if code, _, ok := strings.Cut(msg, ":"); ok && code != "" && strings.ToUpper(code) == code && !strings.ContainsRune(code, ' ') {
		return code
	}
	if len(msg) > 60 {
		return msg[:60] + "..."
	}
	return msg
}

package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// Why not hubnode/client: it is built for applications, and per connection
// it runs a reader goroutine plus a dispatcher goroutine (started by the
// first callback), fully decodes every record (encoding/json into a
// protocol.Message: several allocations) and queues an event per callback.
// At 40,000 deliveries per second that is a noticeable share of a core,
// taken from the farm under test on the same machine. conn below keeps one
// goroutine per connection, reuses its read and write buffers, recognises
// the server's own encoding of an Invocation ({"type":1,"target":"...") by
// its prefix and hands the raw record to the scenario, which finds its
// payload with a byte search. Only rare records (completions, closes, odd
// encodings) go through protocol.DecodeMessage. Negotiation, which happens
// once per connection, reuses client.Negotiate.

var (
	errConnClosed = errors.New("connection closed")
	errTimeout    = errors.New("timed out")
)

const (
	// writeTimeout bounds one frame write; a generator blocked longer than
	// this on a socket is measuring a dead server.
	writeTimeout = 10 * time.Second
	// maxKeptBuffer: a rare large frame must not pin its buffer for the
	// life of the connection.
	maxKeptBuffer = 64 << 10
	// closeWait bounds waiting for the server's side of a clean close.
	closeWait = time.Second
)

// invocationHandler receives every server-to-client invocation of a
// connection on its read goroutine. target and record alias the read buffer
// and are valid only during the call.
type invocationHandler func(c *conn, target, record []byte)

// handlers are a connection's callbacks, fixed when it is dialed so that
// the read goroutine never races with their assignment.
type handlers struct {
	inv invocationHandler
	// ack receives Completions that no invoke waits for (publishes sent
	// with an invocation id); errText is empty for a success.
	ack func(errText string)
}

// env is what all connections of a run share.
type env struct {
	start     time.Time // the run's monotonic clock origin
	errs      *errorLog
	records   atomic.Int64 // hub protocol records received on all connections
	live      atomic.Int64 // connections open now
	dropped   atomic.Int64 // connections that ended without Close from us
	keepAlive time.Duration

	mu    sync.Mutex
	conns []*conn
}

func newEnv() *env {
	return &env{start: time.Now(), errs: newErrorLog(), keepAlive: 15 * time.Second}
}

// now is nanoseconds on the run's monotonic clock.
func (e *env) now() int64 { return int64(time.Since(e.start)) }

func (e *env) register(c *conn) {
	e.mu.Lock()
	e.conns = append(e.conns, c)
	e.mu.Unlock()
}

func (e *env) snapshotConns() []*conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*conn(nil), e.conns...)
}

// keepAliveLoop sends a Ping on every connection that wrote nothing for
// the keep-alive interval (the server drops a connection silent for 30 s).
// One goroutine serves all connections instead of a timer each.
func (e *env) keepAliveLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := e.now()
		for _, c := range e.snapshotConns() {
			if now-c.lastWrite.Load() >= int64(e.keepAlive) {
				c.ping()
			}
		}
	}
}

// closeAll closes every connection, a few at a time, and waits for their
// readers to end.
func (e *env) closeAll() {
	conns := e.snapshotConns()
	var wg sync.WaitGroup
	work := make(chan *conn)
	for w := 0; w < min(64, len(conns)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				c.close()
			}
		}()
	}
	for _, c := range conns {
		work <- c
	}
	close(work)
	wg.Wait()
}

// dialer opens connections to one hub path.
type dialer struct {
	hub    string
	token  string
	https  []*http.Client // one per source address
	wss    []*websocket.Dialer
	header http.Header
}

// newDialer prepares HTTP clients and WebSocket dialers, one pair per
// source address (or one pair using the system's choice when sources is
// empty).
func newDialer(hub, token string, sources []netip.Addr) *dialer {
	d := &dialer{hub: hub, token: token, header: http.Header{}}
	d.header.Set("User-Agent", "hubfarm-load")
	if token != "" {
		d.header.Set("Authorization", "Bearer "+token)
	}
	if len(sources) == 0 {
		sources = []netip.Addr{{}}
	}
	// Frames carry the JSON of one or a few records; 2 KiB read buffers
	// keep thousands of idle connections cheap, and pooled write buffers
	// are held only while a frame is written.
	wpool := &sync.Pool{}
	for _, src := range sources {
		nd := &net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}
		if src.IsValid() {
			nd.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		d.https = append(d.https, &http.Client{
			Timeout: 15 * time.Second,
			Transport: &http.Transport{
				DialContext:         nd.DialContext,
				MaxIdleConns:        256,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			},
		})
		d.wss = append(d.wss, &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: 15 * time.Second,
			ReadBufferSize:   2048,
			WriteBufferSize:  2048,
			WriteBufferPool:  wpool,
		})
	}
	return d
}

// closeIdle releases the negotiate connections kept alive for reuse.
func (d *dialer) closeIdle() {
	for _, h := range d.https {
		h.CloseIdleConnections()
	}
}

// conn is a lean SignalR JSON hub connection: one read goroutine, no
// callbacks queue, reused buffers.
type conn struct {
	idx  int
	user string
	env  *env
	ws   *websocket.Conn
	h    handlers

	wmu       sync.Mutex
	wbuf      []byte       // guarded by wmu
	lastWrite atomic.Int64 // env clock, ns

	nextID  atomic.Uint64
	pmu     sync.Mutex
	pending map[uint64]chan callResult // guarded by pmu

	closing atomic.Bool
	done    chan struct{}
}

type callResult struct {
	result json.RawMessage
	err    error
}

// invocationError is a Completion carrying an error.
type invocationError struct {
	target, msg string
}

func (e *invocationError) Error() string { return e.target + ": " + e.msg }

// dial negotiates with base+hub as user, opens the WebSocket, performs the
// handshake and starts the read goroutine. idx selects the source address
// and the histogram shard.
func (d *dialer) dial(ctx context.Context, e *env, idx int, base, user string, h handlers) (*conn, error) {
	hubURL := strings.TrimRight(base, "/") + d.hub
	query := ""
	if user != "" {
		query = "user=" + url.QueryEscape(user)
	}
	src := idx % len(d.https)
	opts := client.Options{HTTPClient: d.https[src], Header: d.header}
	nr, err := client.Negotiate(ctx, withQuery(hubURL, query), opts)
	if err != nil {
		return nil, err
	}
	if nr.URL != "" {
		return nil, fmt.Errorf("negotiate: redirect to %s is not supported", nr.URL)
	}
	wsURL, err := webSocketURL(hubURL)
	if err != nil {
		return nil, err
	}
	q := "id=" + url.QueryEscape(nr.ConnectionToken)
	if query != "" {
		q = query + "&" + q
	}
	ws, resp, err := d.wss[src].DialContext(ctx, withQuery(wsURL, q), d.header)
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			var body [200]byte
			n, _ := io.ReadFull(resp.Body, body[:])
			return nil, &errHTTPStatus{op: "websocket", status: resp.StatusCode, body: strings.TrimSpace(string(body[:n]))}
		}
		return nil, fmt.Errorf("websocket: %w", err)
	}
	rest, err := handshake(ctx, ws)
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	c := &conn{idx: idx, user: user, env: e, ws: ws, h: h,
		pending: map[uint64]chan callResult{}, done: make(chan struct{})}
	// The handshake reply is a record too (the node counts it among the
	// records it wrote).
	e.records.Add(1)
	c.lastWrite.Store(e.now())
	e.live.Add(1)
	e.register(c)
	if len(rest) > 0 {
		c.onFrame(rest)
	}
	go c.readLoop()
	return c, nil
}

func withQuery(u, q string) string {
	if q == "" {
		return u
	}
	if strings.Contains(u, "?") {
		return u + "&" + q
	}
	return u + "?" + q
}

func webSocketURL(hubURL string) (string, error) {
	u, err := url.Parse(hubURL)
	if err != nil {
		return "", fmt.Errorf("hub URL: %w", err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("hub URL %q: scheme must be http, https, ws or wss", hubURL)
	}
	return u.String(), nil
}

// handshake sends the JSON protocol handshake and reads the reply; it
// returns records that arrived in the same frame.
func handshake(ctx context.Context, ws *websocket.Conn) ([]byte, error) {
	deadline := time.Now().Add(15 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ws.SetWriteDeadline(deadline)
	_ = ws.SetReadDeadline(deadline)
	if err := ws.WriteMessage(websocket.TextMessage, protocol.AppendHandshakeRequest(nil, 1)); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	_, data, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	errText, rest, err := protocol.ParseHandshakeResponse(data)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if errText != "" {
		return nil, fmt.Errorf("handshake refused: %s", errText)
	}
	_ = ws.SetWriteDeadline(time.Time{})
	_ = ws.SetReadDeadline(time.Time{})
	return rest, nil
}

// readLoop reads frames into one reused buffer until the socket ends.
func (c *conn) readLoop() {
	var err error
	defer func() { c.finish(err) }()
	var buf []byte
	for {
		var mt int
		var r io.Reader
		mt, r, err = c.ws.NextReader()
		if err != nil {
			return
		}
		if mt != websocket.TextMessage {
			err = fmt.Errorf("%w: binary frame on the JSON protocol", protocol.ErrProtocol)
			return
		}
		if buf, err = readAll(r, buf[:0]); err != nil {
			return
		}
		c.onFrame(buf)
		if cap(buf) > maxKeptBuffer {
			buf = nil
		}
	}
}

// readAll is io.ReadAll into a caller-supplied buffer.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	if cap(b) < 1024 {
		b = make([]byte, 0, 1024)
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// The server writes Invocations and Pings in exactly these forms
// (protocol.AppendInvocation with no invocation id, protocol.AppendPing).
var (
	invocationPrefix = []byte(`{"type":1,"target":"`)
	pingPrefix       = []byte(`{"type":6}`)
)

func (c *conn) onFrame(f []byte) {
	n := int64(0)
	for len(f) > 0 {
		i := bytes.IndexByte(f, protocol.RecordSeparator)
		if i < 0 {
			c.env.errs.add("receive: protocol", errors.New("frame without a record separator"))
			break
		}
		c.onRecord(f[:i])
		n++
		f = f[i+1:]
	}
	c.env.records.Add(n)
}

func (c *conn) onRecord(rec []byte) {
	if bytes.HasPrefix(rec, invocationPrefix) {
		t := rec[len(invocationPrefix):]
		if j := bytes.IndexByte(t, '"'); j > 0 && bytes.IndexByte(t[:j], '\\') < 0 {
			c.onInvocation(t[:j], rec)
			return
		}
	}
	if bytes.HasPrefix(rec, pingPrefix) {
		return
	}
	m, err := protocol.DecodeMessage(rec)
	if err != nil {
		c.env.errs.add("receive: protocol", err)
		return
	}
	switch m.Type {
	case protocol.TypeInvocation:
		c.onInvocation([]byte(m.Target), rec)
	case protocol.TypeCompletion:
		id, err := strconv.ParseUint(m.InvocationID, 10, 64)
		if err != nil {
			return
		}
		c.pmu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.pmu.Unlock()
		if ch == nil {
			if c.h.ack != nil {
				if m.HasError {
					c.h.ack(m.Error)
				} else {
					c.h.ack("")
				}
			}
			return
		}
		if m.HasError {
			ch <- callResult{err: &invocationError{msg: m.Error}}
		} else {
			ch <- callResult{result: m.Result}
		}
	case protocol.TypeClose:
		msg := m.Error
		if msg == "" {
			msg = "(no error text)"
		}
		c.env.errs.add("server close: "+hubErrorCode(msg), errors.New(msg))
	}
}

func (c *conn) onInvocation(target, rec []byte) {
	if c.h.inv != nil {
		c.h.inv(c, target, rec)
	}
}

// finish runs when the read goroutine ends.
func (c *conn) finish(err error) {
	_ = c.ws.Close()
	c.env.live.Add(-1)
	if !c.closing.Load() {
		c.env.dropped.Add(1)
		if err == nil {
			err = io.EOF
		}
		c.env.errs.add(classify("disconnect", err), err)
	}
	c.pmu.Lock()
	pending := c.pending
	c.pending = nil
	c.pmu.Unlock()
	for _, ch := range pending {
		ch <- callResult{err: errConnClosed}
	}
	close(c.done)
}

// writeLocked writes one frame; the caller holds wmu.
func (c *conn) writeLocked(frame []byte) error {
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		// Half a frame may be on the wire: the connection is unusable, and
		// closing it makes the reader notice.
		_ = c.ws.NetConn().Close()
		return err
	}
	c.lastWrite.Store(c.env.now())
	return nil
}

// writeFrame writes a complete frame built by the caller.
func (c *conn) writeFrame(frame []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(frame)
}

// ping writes a Ping unless a write is in progress (which resets idleness
// anyway).
func (c *conn) ping() {
	if !c.wmu.TryLock() {
		return
	}
	defer c.wmu.Unlock()
	c.wbuf = protocol.AppendPing(c.wbuf[:0])
	_ = c.writeLocked(c.wbuf)
}

// invoke calls a hub method with args (a JSON array) and waits for its
// Completion.
func (c *conn) invoke(ctx context.Context, target string, args []byte) (json.RawMessage, error) {
	id := c.nextID.Add(1)
	ch := make(chan callResult, 1)
	c.pmu.Lock()
	if c.pending == nil {
		c.pmu.Unlock()
		return nil, fmt.Errorf("%s: %w", target, errConnClosed)
	}
	c.pending[id] = ch
	c.pmu.Unlock()
	c.wmu.Lock()
	c.wbuf = protocol.AppendInvocation(c.wbuf[:0], strconv.FormatUint(id, 10), target, args)
	err := c.writeLocked(c.wbuf)
	if cap(c.wbuf) > maxKeptBuffer {
		c.wbuf = nil
	}
	c.wmu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("%s: write: %w", target, err)
	}
	select {
	case r := <-ch:
		if ie, ok := r.err.(*invocationError); ok {
			ie.target = target
			return nil, ie
		}
		if r.err != nil {
			return nil, fmt.Errorf("%s: %w", target, r.err)
		}
		return r.result, nil
	case <-ctx.Done():
		c.forget(id)
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: %w", target, errTimeout)
		}
		return nil, fmt.Errorf("%s: %w", target, ctx.Err())
	}
}

// invokeJSON marshals args as the argument array, invokes, and unmarshals
// the result into out (when out is not nil).
func (c *conn) invokeJSON(ctx context.Context, out any, target string, args ...any) error {
	a, err := json.Marshal(args)
	if err != nil {
		return fmt.Errorf("%s: encoding arguments: %w", target, err)
	}
	raw, err := c.invoke(ctx, target, a)
	if err != nil {
		return err
	}
	if out != nil && raw != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s: decoding result: %w", target, err)
		}
	}
	return nil
}

func (c *conn) forget(id uint64) {
	c.pmu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.pmu.Unlock()
}

// close ends the connection cleanly: a Close record and a close frame, a
// short wait for the server's side, then the socket.
func (c *conn) close() {
	if c.closing.Swap(true) {
		<-c.done
		return
	}
	c.wmu.Lock()
	c.wbuf = protocol.AppendClose(c.wbuf[:0], "", false)
	_ = c.ws.SetWriteDeadline(time.Now().Add(closeWait))
	err := c.ws.WriteMessage(websocket.TextMessage, c.wbuf)
	if err == nil {
		err = c.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeWait))
	}
	c.wmu.Unlock()
	if err == nil {
		t := time.NewTimer(closeWait)
		select {
		case <-c.done:
		case <-t.C:
		}
		t.Stop()
	}
	_ = c.ws.NetConn().Close()
	<-c.done
}

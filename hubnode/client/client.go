// Package client is a Go client for ASP.NET Core SignalR hubs using the JSON
// hub protocol over WebSockets, modelled on the behaviour of the official
// @microsoft/signalr JavaScript client: negotiate (version 1), handshake,
// invocations, server-to-client streams, callbacks, keep-alive, server
// timeout and automatic reconnect (each reconnect is a brand-new connection
// with a new negotiate, exactly like withAutomaticReconnect).
//
// A connection costs one reader goroutine. Writes are serialised on a
// per-connection lock into a reused buffer; nothing spawns a goroutine per
// message. Callbacks (On, OnResult and the lifecycle hooks) run in arrival
// order on one dispatcher goroutine, started when the first callback event
// is queued, so that a callback may call Invoke without deadlocking the
// reader.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
	"github.com/orchestratorchat/hubfarm/internal/backoff"
)

// Defaults, matching the JS client.
const (
	defaultHandshakeTimeout = 15 * time.Second
	defaultKeepAlive        = 15 * time.Second
	defaultServerTimeout    = 30 * time.Second
)

// noResultText is what the JS client answers to a client-result request it
// has no result for.
const noResultText = "Client didn't provide a result."

// Options configure a connection. The zero value is usable. Options and the
// values they refer to must not be modified while a connection uses them.
type Options struct {
	// Header holds extra headers sent on negotiate and on the WebSocket
	// upgrade.
	Header http.Header
	// AccessToken, when set, is called before every negotiate and upgrade;
	// its result is sent as "Authorization: Bearer <token>".
	AccessToken func() (string, error)
	// SkipNegotiation connects the WebSocket directly to the hub URL without
	// an id; the server creates the connection on the spot and ConnectionID
	// stays empty.
	SkipNegotiation bool
	// NegotiateVersion is the negotiateVersion query value; 0 means 1.
	NegotiateVersion int
	// HandshakeTimeout bounds the WebSocket upgrade and, separately, the hub
	// protocol handshake; 0 means 15s. It also bounds each automatic
	// reconnect attempt as a whole.
	HandshakeTimeout time.Duration
	// KeepAliveInterval: the client sends a Ping when it has sent nothing for
	// this long. 0 means 15s; negative disables Pings.
	KeepAliveInterval time.Duration
	// ServerTimeout: the connection is dropped when nothing arrived from the
	// server for this long. 0 means 30s; negative disables the check. It
	// also bounds each write.
	ServerTimeout time.Duration
	// Reconnect lists the delays before each automatic reconnect attempt
	// after a connection that was established is lost, like
	// withAutomaticReconnect([...]). nil or empty disables reconnecting.
	// Each delay d is an upper bound: the client waits a random time in
	// [d/2, d] ("equal jitter"), so that the many clients a dead node or a
	// drain drops at once do not all come back at the same instants.
	Reconnect []time.Duration
	// HTTPClient performs negotiate requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Dialer opens WebSockets; nil means websocket.DefaultDialer.
	Dialer *websocket.Dialer
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.NegotiateVersion == 0 {
		o.NegotiateVersion = 1
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = defaultHandshakeTimeout
	}
	if o.KeepAliveInterval == 0 {
		o.KeepAliveInterval = defaultKeepAlive
	}
	if o.ServerTimeout == 0 {
		o.ServerTimeout = defaultServerTimeout
	}
	if o.HTTPClient == nil {
		o.HTTPClient = http.DefaultClient
	}
	if o.Dialer == nil {
		o.Dialer = websocket.DefaultDialer
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

type connState int

const (
	stateNew connState = iota
	stateConnecting
	stateConnected
	stateReconnecting
	stateClosed
)

// Conn is a SignalR hub connection. All methods are safe for concurrent use.
type Conn struct {
	hubURL string
	opts   Options
	log    *slog.Logger

	// ctx is cancelled by Close and when the connection stops for good; it
	// aborts reconnect waits and attempts.
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	// jitter draws the random part of each reconnect delay; nil means
	// math/rand/v2. Tests set it to make the waits known.
	jitter backoff.Rand

	// nextID numbers invocations "0", "1", ... like the JS client.
	nextID atomic.Uint64

	mu      sync.Mutex
	state   connState
	closing bool // Close was called
	t       *transport
	connID  string
	calls   map[uint64]*call
	streams map[uint64]*Stream
	err     error

	handlers       map[string][]func([]json.RawMessage) // lower-cased target
	resultHandlers map[string]func([]json.RawMessage) (any, error)
	onReconnecting []func(error)
	onReconnected  []func(string)
	onClose        []func(error)
	disp           *dispatcher

	closeText  string
	closeAllow bool
}

// call is an invocation waiting for its Completion.
type call struct {
	target string
	ch     chan callResult // buffered: the reader never blocks on it
}

type callResult struct {
	result json.RawMessage
	err    error
}

// New returns an unstarted connection to hubURL (http, https, ws or wss).
// Register callbacks with On before Start so that no early message is
// missed; Dial is New followed by Start.
func New(hubURL string, opts Options) *Conn {
	opts = opts.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	return &Conn{
		hubURL:         hubURL,
		opts:           opts,
		log:            opts.Logger,
		ctx:            ctx,
		cancel:         cancel,
		done:           make(chan struct{}),
		calls:          make(map[uint64]*call),
		streams:        make(map[uint64]*Stream),
		handlers:       make(map[string][]func([]json.RawMessage)),
		resultHandlers: make(map[string]func([]json.RawMessage) (any, error)),
	}
}

// Dial connects to the hub at hubURL: it negotiates (POST
// {hubURL}/negotiate?negotiateVersion=1, following redirects) unless
// opts.SkipNegotiation is set, opens the WebSocket with id=<connectionToken>
// and performs the JSON protocol handshake. ctx bounds connecting only; use
// Close to end the connection.
func Dial(ctx context.Context, hubURL string, opts Options) (*Conn, error) {
	c := New(hubURL, opts)
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// DialToken opens the WebSocket at hubURL with id=token, skipping
// negotiate, and performs the handshake. It lets a test negotiate on one
// node (see Negotiate) and connect to another. ConnectionID is empty until
// an automatic reconnect, which negotiates normally against hubURL.
func DialToken(ctx context.Context, hubURL, token string, opts Options) (*Conn, error) {
	c := New(hubURL, opts)
	if err := c.start(ctx, token); err != nil {
		return nil, err
	}
	return c, nil
}

// Start connects as described for Dial. A failed Start may be retried; Start
// on a connected or closed connection fails.
func (c *Conn) Start(ctx context.Context) error { return c.start(ctx, "") }

func (c *Conn) start(ctx context.Context, token string) error {
	c.mu.Lock()
	if c.state != stateNew {
		c.mu.Unlock()
		return errors.New("start: the connection was already started")
	}
	c.state = stateConnecting
	c.mu.Unlock()

	// Close must be able to abort a Start in progress.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()

	t, err := c.connect(ctx, token)

	c.mu.Lock()
	if err == nil && c.closing {
		err = fmt.Errorf("start: %w", ErrNotConnected)
		c.mu.Unlock()
		t.shutdown(true)
		c.mu.Lock()
	}
	if err != nil {
		if c.closing {
			c.mu.Unlock()
			c.finish(nil)
			return err
		}
		c.state = stateNew
		c.mu.Unlock()
		return err
	}
	c.t, c.connID, c.state = t, t.connID, stateConnected
	c.mu.Unlock()
	t.startKeepAlive()
	go c.run(t)
	return nil
}

// connect establishes a transport: negotiate (unless skipped or token is
// given), WebSocket, handshake.
func (c *Conn) connect(ctx context.Context, token string) (*transport, error) {
	o := &c.opts
	base := c.hubURL
	connID := ""
	// fixedToken replaces the AccessToken factory after a redirect that
	// carried an accessToken, as in the JS client.
	fixedToken, haveFixed := "", false
	bearer := func() (string, error) {
		if haveFixed {
			return fixedToken, nil
		}
		if o.AccessToken == nil {
			return "", nil
		}
		tok, err := o.AccessToken()
		if err != nil {
			return "", fmt.Errorf("access token: %w", err)
		}
		return tok, nil
	}
	if token == "" && !o.SkipNegotiation {
		for redirects := 0; ; redirects++ {
			if redirects == maxRedirects {
				return nil, errors.New("negotiate: redirection limit exceeded")
			}
			bt, err := bearer()
			if err != nil {
				return nil, fmt.Errorf("negotiate: %w", err)
			}
			nr, err := negotiate(ctx, base, bt, o)
			if err != nil {
				return nil, err
			}
			if nr.URL != "" {
				base = nr.URL
				if nr.AccessToken != "" {
					fixedToken, haveFixed = nr.AccessToken, true
				}
				continue
			}
			if nr.UseStatefulReconnect {
				return nil, errors.New("negotiate: the server enabled stateful reconnect, which this client did not ask for")
			}
			if !nr.supportsWebSocketText() {
				return nil, errors.New("negotiate: the server offers no WebSockets transport with the Text transfer format")
			}
			token, connID = nr.ConnectionToken, nr.ConnectionID
			break
		}
	}
	bt, err := bearer()
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	return c.openTransport(ctx, base, token, connID, bt)
}

// openTransport dials the WebSocket and performs the handshake.
func (c *Conn) openTransport(ctx context.Context, base, token, connID, bearer string) (*transport, error) {
	u, err := webSocketURL(base, token)
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	ws, resp, err := dialWebSocket(dctx, c.opts.Dialer, u, requestHeader(c.opts.Header, bearer))
	if err != nil {
		if resp != nil && errors.Is(err, websocket.ErrBadHandshake) {
			var body [512]byte
			n, _ := resp.Body.Read(body[:])
			return nil, &StatusError{Op: "websocket upgrade", StatusCode: resp.StatusCode, Body: snippet(body[:n])}
		}
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	rest, err := handshake(ctx, ws, c.opts.HandshakeTimeout)
	if err != nil {
		_ = ws.Close()
		return nil, err
	}
	return newTransport(ws, connID, rest, &c.opts), nil
}

// dialWebSocket is Dialer.DialContext made cancellable: gorilla/websocket
// honours only the context's deadline while it exchanges the upgrade, so a
// Close during a reconnect attempt would otherwise wait for the timeout. The
// dialed socket gets a past deadline when ctx is cancelled, which fails the
// pending read.
func dialWebSocket(ctx context.Context, d *websocket.Dialer, u string, h http.Header) (*websocket.Conn, *http.Response, error) {
	dd := *d
	inner := d.NetDialContext
	if inner == nil && d.NetDial != nil {
		inner = func(_ context.Context, network, addr string) (net.Conn, error) { return d.NetDial(network, addr) }
	}
	if inner == nil {
		inner = (&net.Dialer{}).DialContext
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	dd.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := inner(ctx, network, addr)
		if err == nil {
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
		}
		return nc, err
	}
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		for _, nc := range conns {
			_ = nc.SetDeadline(time.Unix(1, 0))
		}
	})
	ws, resp, err := dd.DialContext(ctx, u, h)
	if !stop() && err == nil {
		_ = ws.Close()
		return nil, nil, ctx.Err()
	}
	return ws, resp, err
}

// handshake sends the JSON protocol handshake and reads the reply. It
// returns the hub messages that shared the reply's WebSocket message.
func handshake(ctx context.Context, ws *websocket.Conn, timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = ws.SetWriteDeadline(deadline)
	_ = ws.SetReadDeadline(deadline)
	// Cancelling ctx must interrupt the blocking read: a past deadline does.
	stop := context.AfterFunc(ctx, func() { _ = ws.NetConn().SetDeadline(time.Unix(1, 0)) })
	defer stop()

	if err := ws.WriteMessage(websocket.TextMessage, protocol.AppendHandshakeRequest(nil, 1)); err != nil {
		return nil, fmt.Errorf("handshake: %w", ctxErr(ctx, err))
	}
	mt, data, err := ws.ReadMessage()
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", ctxErr(ctx, err))
	}
	if !stop() {
		return nil, fmt.Errorf("handshake: %w", ctx.Err())
	}
	if mt != websocket.TextMessage {
		return nil, fmt.Errorf("handshake: %w: binary handshake response", protocol.ErrProtocol)
	}
	errText, rest, err := protocol.ParseHandshakeResponse(data)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if errText != "" {
		return nil, &HandshakeError{Message: errText}
	}
	_ = ws.SetWriteDeadline(time.Time{})
	_ = ws.SetReadDeadline(time.Time{})
	return rest, nil
}

// ctxErr prefers the context's error when it caused err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// run is the connection's reader goroutine: it reads until the transport
// ends, then reconnects or stops the connection.
func (c *Conn) run(t *transport) {
	for t != nil {
		err := t.readLoop(c.handleMessage)
		var sc *serverCloseError
		t.shutdown(errors.As(err, &sc) || c.isClosing())
		t = c.afterTransport(err)
	}
}

func (c *Conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// afterTransport fails what was pending on the lost transport and either
// reconnects (returning the new transport) or stops the connection.
func (c *Conn) afterTransport(cause error) *transport {
	reconnectable := true
	var sc *serverCloseError
	c.mu.Lock()
	if errors.As(cause, &sc) {
		c.closeText, c.closeAllow = sc.text, sc.allowReconnect
		// Without allowReconnect the JS client stops for good even when a
		// retry policy is configured.
		reconnectable = sc.allowReconnect
	}
	calls, streams := c.calls, c.streams
	c.calls, c.streams = make(map[uint64]*call), make(map[uint64]*Stream)
	c.t = nil
	closing := c.closing
	retry := !closing && reconnectable && len(c.opts.Reconnect) > 0
	if retry {
		c.state = stateReconnecting
		for _, fn := range c.onReconnecting {
			c.dispatcherLocked().push(event{fn: func() { fn(cause) }})
		}
	}
	c.mu.Unlock()

	pendingErr := ErrConnectionClosed
	if cause != nil && !closing {
		pendingErr = fmt.Errorf("%w: %w", ErrConnectionClosed, cause)
	}
	failPending(calls, streams, pendingErr)

	switch {
	case closing:
		c.finish(nil)
		return nil
	case !retry:
		c.log.Info("signalr connection closed", "err", cause)
		c.finish(cause)
		return nil
	}
	c.log.Info("signalr connection lost, reconnecting", "err", cause)
	return c.reconnect(cause)
}

func failPending(calls map[uint64]*call, streams map[uint64]*Stream, err error) {
	for _, cl := range calls {
		cl.ch <- callResult{err: fmt.Errorf("invoke %s: %w", cl.target, err)}
	}
	for _, s := range streams {
		s.finish(err, false)
	}
}

// reconnect runs the automatic reconnect loop on the reader goroutine.
func (c *Conn) reconnect(cause error) *transport {
	lastErr := cause
	for i, delay := range c.opts.Reconnect {
		if !c.sleep(backoff.Jitter(delay, c.jitter)) {
			break
		}
		ctx, cancel := context.WithTimeout(c.ctx, c.opts.HandshakeTimeout)
		t, err := c.connect(ctx, "")
		cancel()
		if err != nil {
			lastErr = err
			c.log.Warn("signalr reconnect attempt failed", "attempt", i+1, "err", err)
			continue
		}
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			t.shutdown(true)
			break
		}
		c.t, c.connID, c.state = t, t.connID, stateConnected
		for _, fn := range c.onReconnected {
			id := t.connID
			c.dispatcherLocked().push(event{fn: func() { fn(id) }})
		}
		c.mu.Unlock()
		t.startKeepAlive()
		c.log.Info("signalr reconnected", "connectionId", t.connID)
		return t
	}
	if c.isClosing() {
		c.finish(nil)
	} else {
		c.finish(fmt.Errorf("reconnect failed after %d attempts: %w", len(c.opts.Reconnect), lastErr))
	}
	return nil
}

// sleep waits d unless the connection is closed first.
func (c *Conn) sleep(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// finish moves the connection to its terminal state.
func (c *Conn) finish(err error) {
	c.mu.Lock()
	if c.state == stateClosed {
		c.mu.Unlock()
		return
	}
	c.state, c.err, c.t = stateClosed, err, nil
	for _, fn := range c.onClose {
		c.dispatcherLocked().push(event{fn: func() { fn(err) }})
	}
	if c.disp != nil {
		c.disp.close()
	}
	c.mu.Unlock()
	c.cancel()
	close(c.done)
}

// dispatcherLocked returns the dispatcher, starting it on first use.
func (c *Conn) dispatcherLocked() *dispatcher {
	if c.disp == nil {
		c.disp = newDispatcher(c.runEvent)
	}
	return c.disp
}

// runEvent executes one event on the dispatcher goroutine.
func (c *Conn) runEvent(e event) {
	if e.fn != nil {
		e.fn()
		return
	}
	for _, h := range e.handlers {
		h(e.args)
	}
	if e.reply == nil {
		return
	}
	var (
		result  any
		errText string
		isErr   bool
	)
	if e.resultFn == nil {
		errText, isErr = noResultText, true
	} else if r, err := e.resultFn(e.args); err != nil {
		errText, isErr = err.Error(), true
	} else {
		result = r
	}
	ctx, cancel := context.WithTimeout(c.ctx, e.reply.writeTimeout)
	defer cancel()
	if err := e.reply.sendResult(ctx, e.replyID, result, errText, isErr); err != nil {
		c.log.Debug("signalr client result not sent", "invocationId", e.replyID, "err", err)
	}
}

// handleMessage processes one message on the reader goroutine. It must not
// block on user code or on writes.
func (c *Conn) handleMessage(t *transport, m *protocol.Message) error {
	switch m.Type {
	case protocol.TypeInvocation:
		c.handleInvocation(t, m)
	case protocol.TypeStreamItem:
		id, ok := parseID(m.InvocationID)
		if !ok {
			c.log.Debug("signalr stream item for unknown invocation", "invocationId", m.InvocationID)
			return nil
		}
		c.mu.Lock()
		s := c.streams[id]
		var cl *call
		if s == nil {
			// A stream item for a plain invocation is a server bug; fail the
			// invocation like the JS client does.
			if cl = c.calls[id]; cl != nil {
				delete(c.calls, id)
			}
		}
		c.mu.Unlock()
		switch {
		case s != nil:
			s.push(m.Item)
		case cl != nil:
			cl.ch <- callResult{err: fmt.Errorf("invoke %s: %w: unexpected StreamItem for a non-streaming invocation", cl.target, protocol.ErrProtocol)}
		default:
			c.log.Debug("signalr stream item for unknown invocation", "invocationId", m.InvocationID)
		}
	case protocol.TypeCompletion:
		id, ok := parseID(m.InvocationID)
		if !ok {
			c.log.Debug("signalr completion for unknown invocation", "invocationId", m.InvocationID)
			return nil
		}
		c.mu.Lock()
		cl := c.calls[id]
		delete(c.calls, id)
		s := c.streams[id]
		delete(c.streams, id)
		c.mu.Unlock()
		switch {
		case cl != nil && m.HasError:
			cl.ch <- callResult{err: &InvocationError{Target: cl.target, Message: m.Error}}
		case cl != nil:
			cl.ch <- callResult{result: m.Result}
		case s != nil:
			s.complete(m)
		default:
			// Expected after a cancelled stream or an abandoned Invoke.
			c.log.Debug("signalr completion for unknown invocation", "invocationId", m.InvocationID)
		}
	case protocol.TypeClose:
		return &serverCloseError{text: m.Error, allowReconnect: m.AllowReconnect}
	default:
		// Ping needs nothing (any message resets the server timeout); Ack,
		// Sequence and unknown types are ignored like the JS client does.
	}
	return nil
}

func (c *Conn) handleInvocation(t *transport, m *protocol.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := c.lookupHandlersLocked(m.Target)
	e := event{handlers: hs, args: m.Arguments}
	if m.InvocationID != "" {
		// The server awaits a result: always answer, as the JS client does.
		e.reply, e.replyID = t, m.InvocationID
		e.resultFn = c.lookupResultLocked(m.Target)
	} else if len(hs) == 0 {
		c.log.Debug("signalr no handler for target", "target", m.Target)
		return
	}
	c.dispatcherLocked().push(e)
}

// lookupHandlersLocked finds handlers case-insensitively without
// allocating: exact lower-case hit first, then a fold comparison.
func (c *Conn) lookupHandlersLocked(target string) []func([]json.RawMessage) {
	if hs, ok := c.handlers[target]; ok {
		return hs
	}
	for k, hs := range c.handlers {
		if strings.EqualFold(k, target) {
			return hs
		}
	}
	return nil
}

func (c *Conn) lookupResultLocked(target string) func([]json.RawMessage) (any, error) {
	if fn, ok := c.resultHandlers[target]; ok {
		return fn
	}
	for k, fn := range c.resultHandlers {
		if strings.EqualFold(k, target) {
			return fn
		}
	}
	return nil
}

// parseID maps our own decimal invocation ids back to their counter value.
func parseID(s string) (uint64, bool) {
	id, err := strconv.ParseUint(s, 10, 64)
	return id, err == nil && strconv.FormatUint(id, 10) == s
}

// liveTransport returns the transport to write to, or ErrNotConnected.
func (c *Conn) liveTransportLocked() (*transport, error) {
	if c.state != stateConnected || c.t == nil {
		return nil, ErrNotConnected
	}
	return c.t, nil
}

// ConnectionID returns the server's id for the current connection; it
// changes after every automatic reconnect and is empty with
// SkipNegotiation or DialToken.
func (c *Conn) ConnectionID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connID
}

// Invoke calls a hub method and waits for its Completion. It returns the
// raw JSON result (nil for a void method, "null" for a null result), an
// *InvocationError when the server reports an error, or an error wrapping
// ErrConnectionClosed when the connection drops first. When ctx is done
// first Invoke returns ctx.Err() and the eventual Completion is ignored (the
// protocol has no way to cancel a plain invocation).
func (c *Conn) Invoke(ctx context.Context, target string, args ...any) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("invoke %s: %w", target, err)
	}
	id := c.nextID.Add(1) - 1
	cl := &call{target: target, ch: make(chan callResult, 1)}
	c.mu.Lock()
	t, err := c.liveTransportLocked()
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("invoke %s: %w", target, err)
	}
	c.calls[id] = cl
	c.mu.Unlock()

	if err := t.sendInvocation(ctx, false, strconv.FormatUint(id, 10), target, args); err != nil {
		c.removeCall(id)
		return nil, fmt.Errorf("invoke %s: %w", target, err)
	}
	select {
	case r := <-cl.ch:
		return r.result, r.err
	case <-ctx.Done():
		c.removeCall(id)
		return nil, fmt.Errorf("invoke %s: %w", target, ctx.Err())
	}
}

func (c *Conn) removeCall(id uint64) {
	c.mu.Lock()
	delete(c.calls, id)
	c.mu.Unlock()
}

// InvokeInto is Invoke followed by json.Unmarshal of the result into out.
// A void result leaves out untouched; out may be nil to discard the result.
func (c *Conn) InvokeInto(ctx context.Context, out any, target string, args ...any) error {
	raw, err := c.Invoke(ctx, target, args...)
	if err != nil {
		return err
	}
	if out == nil || raw == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("invoke %s: decoding result: %w", target, err)
	}
	return nil
}

// Send invokes a hub method without waiting for it (a non-blocking
// invocation: no invocationId, the server sends nothing back). It returns
// once the message is written.
func (c *Conn) Send(ctx context.Context, target string, args ...any) error {
	c.mu.Lock()
	t, err := c.liveTransportLocked()
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("send %s: %w", target, err)
	}
	if err := t.sendInvocation(ctx, false, "", target, args); err != nil {
		return fmt.Errorf("send %s: %w", target, err)
	}
	return nil
}

// Stream starts a server-to-client stream (a StreamInvocation). When ctx is
// done the stream is cancelled as by Stream.Cancel, so a caller that stops
// reading should cancel ctx or call Cancel.
func (c *Conn) Stream(ctx context.Context, target string, args ...any) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stream %s: %w", target, err)
	}
	id := c.nextID.Add(1) - 1
	s := newStream(c, id, target)
	c.mu.Lock()
	t, err := c.liveTransportLocked()
	if err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("stream %s: %w", target, err)
	}
	c.streams[id] = s
	c.mu.Unlock()

	if err := t.sendInvocation(ctx, true, strconv.FormatUint(id, 10), target, args); err != nil {
		c.mu.Lock()
		delete(c.streams, id)
		c.mu.Unlock()
		s.finish(err, true)
		return nil, fmt.Errorf("stream %s: %w", target, err)
	}
	s.watch(ctx)
	return s, nil
}

// On registers fn for server-to-client invocations of target (matched
// case-insensitively, like the JS client). Several functions may be
// registered for one target; they run in registration order. All callbacks
// run on the connection's dispatcher goroutine in the order the messages
// arrived; args are the raw JSON arguments and belong to fn.
func (c *Conn) On(target string, fn func(args []json.RawMessage)) {
	key := strings.ToLower(target)
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := c.handlers[key]
	// Copy on write: the reader hands the old slice to the dispatcher
	// without holding the lock.
	c.handlers[key] = append(hs[:len(hs):len(hs)], fn)
}

// Off removes every function registered with On for target.
func (c *Conn) Off(target string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.handlers, strings.ToLower(target))
}

// OnResult registers fn to answer server-to-client invocations of target
// that expect a result ("client results": the server sends an invocationId).
// fn's value is sent as the Completion result, its error's text as the
// Completion error. A later registration replaces an earlier one. Without a
// registration the client answers "Client didn't provide a result." like the
// JS client. fn runs on the dispatcher goroutine after any On handlers.
func (c *Conn) OnResult(target string, fn func(args []json.RawMessage) (any, error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.resultHandlers[strings.ToLower(target)] = fn
}

// OnReconnecting registers fn to run when the connection was lost and
// automatic reconnect starts; it receives the reason.
func (c *Conn) OnReconnecting(fn func(err error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onReconnecting = append(c.onReconnecting, fn)
}

// OnReconnected registers fn to run after an automatic reconnect succeeded;
// it receives the new connection id. Groups and other per-connection server
// state were lost with the old connection.
func (c *Conn) OnReconnected(fn func(connectionID string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onReconnected = append(c.onReconnected, fn)
}

// OnClose registers fn to run once when the connection stops for good; it
// receives the same error as Err. It runs on the dispatcher goroutine,
// after callbacks for earlier messages, and possibly after Done is closed.
func (c *Conn) OnClose(fn func(err error)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onClose = append(c.onClose, fn)
}

// Close stops the connection: it sends a Close message ({"type":7}) and a
// WebSocket close frame, waits briefly for the server to close its side,
// and waits until the reader goroutine has exited. Pending invocations fail
// with ErrConnectionClosed. Close is idempotent and returns nil; Err then
// reports nil unless the connection had already stopped for another reason.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.state == stateNew || (c.state == stateClosed && !c.closing) {
		c.closing = true
		c.mu.Unlock()
		c.finish(nil)
		return nil
	}
	first := !c.closing
	c.closing = true
	t := c.t
	c.mu.Unlock()
	// Abort a reconnect wait or attempt, or a Start in progress.
	c.cancel()
	if first && t != nil {
		ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
		err := t.sendRecord(ctx, func(b []byte) []byte { return protocol.AppendClose(b, "", false) })
		cancel()
		if err == nil {
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			err = t.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
		}
		if err == nil {
			// The server answers the close frame; its reply ends the reader.
			tm := time.NewTimer(closeGrace)
			select {
			case <-c.done:
			case <-tm.C:
			}
			tm.Stop()
		}
		t.abort()
	}
	<-c.done
	return nil
}

// Done is closed when the connection has stopped for good (after Close,
// after a server Close without allowReconnect, or when reconnecting gave
// up).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection stopped: nil while it is running or after
// Close; otherwise an error wrapping ErrServerClosed, ErrServerTimeout,
// protocol.ErrProtocol, or the transport failure.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// CloseMessage returns the last Close message received from the server:
// its error text and whether it allowed reconnecting. Both are zero when
// the server never sent one.
func (c *Conn) CloseMessage() (errText string, allowReconnect bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeText, c.closeAllow
}

// Package hubnode is the hub node runtime: negotiate, the WebSocket
// transport, the connection lifecycle (handshake, keep-alive, timeouts,
// close), per-connection bounded send queues, hub method dispatch, and the
// Clients/Groups API that reaches connections on any node of the farm through
// the backplane.
package hubnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/orchestratorchat/hubfarm/backplane"
	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
	"github.com/orchestratorchat/hubfarm/metrics"
)

// Backplane is what the node needs from the farm's shared layer; it is
// implemented by *backplane.Backplane, whose doc comment states the delivery
// guarantees.
type Backplane interface {
	Publish(ctx context.Context, scope backplane.Scope, key string, frame []byte, exclude string) error
	Post(ctx context.Context, scope backplane.Scope, key string, frame []byte, exclude string) error
	PublishConnection(ctx context.Context, connID string, frame []byte) error
	PublishUserMembership(ctx context.Context, user, group string, join bool) error
	CloseConnection(ctx context.Context, connID, reason string) error
	RegisterConnection(ctx context.Context, c backplane.ConnInfo) error
	UnregisterConnection(ctx context.Context, c backplane.ConnInfo, groups []string) error
	JoinGroup(ctx context.Context, connID, group string) error
	LeaveGroup(ctx context.Context, connID, group string) error
	UserConnections(ctx context.Context, user string) ([]string, error)
	ClaimConnection(ctx context.Context, connID string, ttl time.Duration) (bool, error)
}

// userHasRoom reports whether user may open another connection. When Redis
// cannot answer, the connection is allowed: the limit protects against
// abuse, not against an outage.
func (n *Node) userHasRoom(ctx context.Context, user string) bool {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.RedisTimeout)
	defer cancel()
	conns, err := n.bp.UserConnections(ctx, user)
	if err != nil {
		n.log.Warn("per-user connection count unavailable", "err", err)
		return true
	}
	return len(conns) < n.cfg.MaxConnectionsPerUser
}

// ErrUnknownConnection is returned for a connection id held by no node.
var ErrUnknownConnection = errors.New("hubnode: unknown connection")

// Node serves hubs to clients and delivers messages from the farm to its
// local connections.
type Node struct {
	cfg      Config
	log      *slog.Logger
	metrics  nodeMetrics
	bp       Backplane
	upgrader websocket.Upgrader
	frames   *sync.Pool // *[]byte buffers for assembling a frame (socketwrite.go)

	hubs []*Hub

	mu     sync.RWMutex
	conns  map[string]*Conn
	groups map[string]map[*Conn]struct{}
	users  map[string]map[*Conn]struct{}

	ipLimits *ipLimiter

	control         chan func()
	controlHandlers map[string]func(body []byte)

	draining atomic.Bool
	started  atomic.Bool
	stop     chan struct{}
	loops    sync.WaitGroup
	connWG   sync.WaitGroup
	// admitMu orders a new connection's connWG.Add against Drain's
	// Wait: a connection is counted before the drain starts waiting, or
	// it sees the drain and is not admitted (sync.WaitGroup forbids an
	// Add from zero that races with Wait).
	admitMu sync.Mutex
}

// New creates a node. Attach a backplane with SetBackplane before Start.
func New(cfg Config, m *metrics.Node) (*Node, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{
		cfg:             cfg,
		log:             cfg.Logger.With("node", cfg.NodeID),
		metrics:         newNodeMetrics(m),
		conns:           map[string]*Conn{},
		groups:          map[string]map[*Conn]struct{}{},
		users:           map[string]map[*Conn]struct{}{},
		control:         make(chan func(), 4096),
		controlHandlers: map[string]func([]byte){},
		stop:            make(chan struct{}),
		ipLimits:        newIPLimiter(cfg.NegotiateRatePerIP),
		frames:          newFramePool(),
	}
	n.upgrader = websocket.Upgrader{ // after n exists: CheckOrigin reads its config
		// Clients send little (invocations, pings): a small read buffer,
		// held by every idle connection; longer messages are read through
		// it in pieces.
		ReadBufferSize:  512,
		WriteBufferSize: 4096,
		// Shared write buffers: an idle connection holds none.
		WriteBufferPool:   &sync.Pool{},
		CheckOrigin:       n.originAllowed,
		HandshakeTimeout:  cfg.HandshakeTimeout,
		EnableCompression: false,
	}
	return n, nil
}

// SetBackplane attaches the farm backplane. Deliveries from it go to
// HandleDelivery.
func (n *Node) SetBackplane(bp Backplane) { n.bp = bp }

// ID is the node id.
func (n *Node) ID() string { return n.cfg.NodeID }

// Config returns the node's effective configuration (defaults filled in).
func (n *Node) Config() Config { return n.cfg }

// Logger is the node's logger.
func (n *Node) Logger() *slog.Logger { return n.log }

// AddHub registers a hub served at path.
func (n *Node) AddHub(name, path string) *Hub {
	h := &Hub{name: name, path: strings.TrimRight(path, "/"), node: n, methods: map[string]*method{}}
	n.hubs = append(n.hubs, h)
	return h
}

// HandleControl registers the handler for application control messages
// named name arriving in this node's inbox (see Backplane.PublishNodeControl).
// Handlers run on the node's control goroutine, one at a time.
func (n *Node) HandleControl(name string, fn func(body []byte)) { n.controlHandlers[name] = fn }

// Routes mounts negotiate and the WebSocket endpoint of every hub on r.
func (n *Node) Routes(r gin.IRoutes) {
	for _, h := range n.hubs {
		h := h
		r.POST(h.path+"/negotiate", func(c *gin.Context) { n.negotiate(h, c.Writer, withRequestID(c.Writer, c.Request)) })
		r.OPTIONS(h.path+"/negotiate", func(c *gin.Context) { n.preflight(c.Writer, c.Request) })
		r.GET(h.path, func(c *gin.Context) { n.serveWebSocket(h, c.Writer, withRequestID(c.Writer, c.Request)) })
	}
}

// Start runs the keep-alive scanner and the control worker.
func (n *Node) Start() error {
	if n.bp == nil {
		return errors.New("hubnode: start: no backplane attached")
	}
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("hubnode: start: already started")
	}
	n.loops.Add(2)
	go n.scanLoop()
	go n.controlLoop()
	return nil
}

// Draining reports whether the node stopped accepting connections.
func (n *Node) Draining() bool { return n.draining.Load() }

// Drain stops accepting new connections and closes the existing ones with
// Close{allowReconnect: true}, spread evenly over window so that their
// reconnects do not land on the other nodes all at once. It returns when all
// connections are gone or ctx ends.
func (n *Node) Drain(ctx context.Context, window time.Duration) error {
	n.admitMu.Lock()
	n.draining.Store(true)
	n.admitMu.Unlock()
	conns := n.Connections()
	var step time.Duration
	if len(conns) > 0 && window > 0 {
		step = window / time.Duration(len(conns))
	}
	for i, c := range conns {
		if i > 0 && step > 0 {
			select {
			case <-time.After(step):
			case <-ctx.Done():
			}
		}
		n.closeWhenIdle(c, ReasonShutdown)
	}
	done := make(chan struct{})
	go func() { n.connWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hubnode: drain: %w", ctx.Err())
	}
}

// Recycle asks every current connection to reconnect: each is closed with
// Close{allowReconnect: true}, spread evenly over window, while the node
// keeps accepting (a client may come straight back to this node). The farm
// calls it after the node's backplane subscription was lost and restored:
// frames the other nodes published meanwhile never reached this node's
// clients, and a client that reconnects catches up from the session history.
// It returns when every connection was asked or ctx ends.
func (n *Node) Recycle(ctx context.Context, window time.Duration) {
	conns := n.Connections()
	var step time.Duration
	if len(conns) > 0 && window > 0 {
		step = window / time.Duration(len(conns))
	}
	for i, c := range conns {
		if i > 0 && step > 0 {
			t := time.NewTimer(step)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		n.closeWhenIdle(c, ReasonServerRequest)
	}
}

// idleCloseWait bounds how long a drain or recycle waits for a connection's
// running invocations before closing it anyway.
const idleCloseWait = 2 * time.Second

// closeWhenIdle closes c with reason once none of its invocations is
// running, or after idleCloseWait. Closing cancels the connection's context,
// and with it an invocation wherever it is -- for SendSessionMessage,
// possibly after the event was recorded and before it was published to the
// other nodes, whose members would then never get it live. The check and
// the close happen under the connection's lock, so no invocation starts in
// between; invocations queued behind the close are dropped unstarted (the
// dispatcher checks the context first). It returns at once; a busy
// connection is waited for on its own goroutine.
func (n *Node) closeWhenIdle(c *Conn, reason DisconnectReason) {
	if c.closeIfIdle(reason, false) {
		return
	}
	go func() {
		deadline := time.Now().Add(idleCloseWait)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for range t.C {
			if c.closeIfIdle(reason, !time.Now().Before(deadline)) || c.ctx.Err() != nil {
				return
			}
		}
	}()
}

// closeIfIdle closes c if no invocation is running (or force is set) and
// reports whether it did.
func (c *Conn) closeIfIdle(reason DisconnectReason, force bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && (c.dispatching || c.concurrent > 0) {
		return false
	}
	c.closeWith(reason)
	return true
}

// Shutdown drains with no window (closing every connection at once) and stops
// the node's loops. The backplane is shut down by its owner afterwards, so
// the connections' deregistration still reaches Redis.
func (n *Node) Shutdown(ctx context.Context) error {
	err := n.Drain(ctx, 0)
	if n.started.CompareAndSwap(true, false) {
		close(n.stop)
		n.loops.Wait()
	}
	return err
}

// Abort drops every connection at once, without Close records, as a crashed
// process would (tests use it to simulate a killed node).
func (n *Node) Abort() {
	n.draining.Store(true)
	for _, c := range n.Connections() {
		c.cancel()
		_ = c.ws.NetConn().Close()
	}
	if n.started.CompareAndSwap(true, false) {
		close(n.stop)
		n.loops.Wait()
	}
}

// Connections returns a snapshot of the local connections.
func (n *Node) Connections() []*Conn {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		out = append(out, c)
	}
	return out
}

// ConnectionCount is the number of local connections.
func (n *Node) ConnectionCount() int {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return len(n.conns)
}

// LocalConnection returns the local connection id, if held here.
func (n *Node) LocalConnection(id string) (*Conn, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	c, ok := n.conns[id]
	return c, ok
}

// serveWebSocket upgrades GET {hub}?id=TOKEN (or with no id: skipNegotiation)
// and hands the connection to a fresh goroutine, so the HTTP handler returns
// and net/http releases its per-request buffers.
func (n *Node) serveWebSocket(h *Hub, w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "This endpoint accepts WebSocket connections only.", http.StatusBadRequest)
		return
	}
	if n.draining.Load() {
		n.metrics.handshakeFailed("draining")
		http.Error(w, "Server is shutting down.", http.StatusServiceUnavailable)
		return
	}
	// The upgrader would refuse a foreign origin too, but anonymously:
	// checked here, the refusal is counted by reason and audit-logged.
	if !n.originAllowed(r) {
		n.metrics.handshakeFailed("origin")
		n.log.Info("websocket refused: origin not allowed", "audit", true, "hub", h.name, "request_id", requestID(r),
			"origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "Origin not allowed", http.StatusForbidden)
		return
	}
	if !n.ipLimits.allow(clientIP(r), n.cfg.Now()) {
		n.metrics.handshakeFailed("rate_limited")
		n.log.Info("websocket refused: rate limited", "hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr)
		http.Error(w, "Too many connection attempts; retry later.", http.StatusTooManyRequests)
		return
	}
	if n.ConnectionCount() >= n.cfg.MaxConnections {
		n.metrics.handshakeFailed("node_full")
		http.Error(w, "This node is at its connection limit.", http.StatusServiceUnavailable)
		return
	}
	connID := ""
	var ident Identity
	var claim *connectionToken // a negotiated id, claimed farm-wide before the upgrade
	if token := r.URL.Query().Get("id"); token != "" {
		t, err := verifyToken(n.cfg.TokenSecret, token, n.cfg.Now())
		if err != nil {
			n.metrics.handshakeFailed("unknown_token")
			n.log.Info("websocket refused", "hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr, "err", err)
			http.Error(w, "No Connection with that ID", http.StatusNotFound)
			return
		}
		if _, dup := n.LocalConnection(t.ConnID); dup {
			n.metrics.handshakeFailed("duplicate")
			http.Error(w, "Connection ID already has an active connection.", http.StatusConflict)
			return
		}
		connID, ident.User, claim = t.ConnID, t.User, &t
		if n.cfg.Authenticator != nil {
			// The token was bound to the user who negotiated; the upgrade
			// must come from the same user.
			id, err := n.cfg.Authenticator(r)
			if err != nil || id.User != t.User {
				n.metrics.handshakeFailed("unauthorized")
				n.log.Info("websocket refused: token user mismatch or bad credentials", "audit", true,
					"hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr, "token_user", t.User, "err", err)
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			ident = id
		}
	} else {
		id, err := n.identify(r)
		if err != nil {
			n.metrics.handshakeFailed("unauthorized")
			n.log.Info("websocket refused: authentication failed", "audit", true, "hub", h.name, "request_id", requestID(r), "remote", r.RemoteAddr, "err", err)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		connID, ident = newID(), id
	}
	if ident.User == "" {
		ident.User, ident.Anonymous = connID, true
	} else if !n.userHasRoom(r.Context(), ident.User) {
		n.metrics.handshakeFailed("user_limit")
		n.log.Info("websocket refused: per-user connection limit", "audit", true, "request_id", requestID(r), "user", ident.User, "remote", r.RemoteAddr)
		http.Error(w, "Too many connections for this user.", http.StatusTooManyRequests)
		return
	}
	if claim != nil && !n.claimConnection(w, r, h, *claim) {
		return
	}
	ws, err := n.upgrader.Upgrade(w, r, nil)
	if err != nil {
		n.metrics.handshakeFailed("upgrade")
		return // the upgrader already answered with an HTTP error
	}
	// No gorilla read limit: over it, gorilla writes a close frame (1009)
	// at once, outside writeMu and ahead of the Close record that tells the
	// client why. readFrame applies MaxFrameSize instead, and the decoder
	// MaxMessageSize to each record.
	ctx, cancel := context.WithCancel(context.Background())
	c := &Conn{
		id: connID, hub: h, node: n, ident: ident, remote: r.RemoteAddr,
		limiter: rate.NewLimiter(rate.Limit(n.cfg.InvocationRate), n.cfg.InvocationBurst),
		ws:      ws, queue: newSendQueue(n.cfg.SendQueueFrames, n.cfg.SendQueueBytes),
		ctx: ctx, cancel: cancel, torn: make(chan struct{}),
	}
	if sc, ok := ws.NetConn().(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			c.raw, c.rw = raw, newRawWriter()
		}
	}
	c.installControlHandlers()
	n.admitMu.Lock()
	if n.draining.Load() {
		n.admitMu.Unlock()
		n.metrics.handshakeFailed("draining")
		cancel()
		_ = ws.Close()
		return
	}
	n.connWG.Add(1)
	n.admitMu.Unlock()
	n.log.Debug("websocket accepted", "conn", c.id, "hub", h.name, "user", ident.User, "request_id", requestID(r), "remote", r.RemoteAddr)
	go n.runConn(c)
}

// claimMargin is how long a connection id's farm-wide claim outlives its
// token's expiry: the nodes' clocks may disagree a little, and a node whose
// clock lags still takes the token for valid.
const claimMargin = 30 * time.Second

// claimConnection claims the connection id of a negotiated token farm-wide
// (one Redis round trip, shared with the node's concurrent registry
// writes) before the upgrade, so that a token opens one connection on the
// whole farm: a second WebSocket with the same token, on this node or any
// other, is answered 409 Conflict, as ASP.NET Core answers a second
// transport for a connection. The claim outlives the token and is never
// released, so a token cannot open a connection again after its first one
// closed either (the official clients negotiate anew for every connection).
//
// When Redis cannot answer, the upgrade is refused with 503: the node
// cannot tell whether another node holds the id, and a connection opened
// now could not be registered farm-wide anyway (the node is not ready; its
// existing connections keep being served). Connections without a token
// (skipNegotiation) get a fresh random id and need no claim. It reports
// whether the upgrade may go on; otherwise it has answered.
func (n *Node) claimConnection(w http.ResponseWriter, r *http.Request, h *Hub, t connectionToken) bool {
	ttl := time.Unix(t.Expires+1, 0).Sub(n.cfg.Now()) + claimMargin
	ctx, cancel := context.WithTimeout(r.Context(), n.cfg.RedisTimeout)
	defer cancel()
	ok, err := n.bp.ClaimConnection(ctx, t.ConnID, ttl)
	switch {
	case err != nil:
		n.metrics.handshakeFailed("unavailable")
		n.log.Warn("websocket refused: the connection id cannot be claimed farm-wide", "hub", h.name, "conn", t.ConnID,
			"request_id", requestID(r), "remote", r.RemoteAddr, "err", err)
		http.Error(w, "Service unavailable; retry later.", http.StatusServiceUnavailable)
		return false
	case !ok:
		n.metrics.handshakeFailed("duplicate")
		n.log.Info("websocket refused: connection token already used", "audit", true, "hub", h.name, "conn", t.ConnID,
			"request_id", requestID(r), "remote", r.RemoteAddr)
		http.Error(w, "Connection ID already has an active connection.", http.StatusConflict)
		return false
	}
	return true
}

// runConn performs the handshake, registers the connection and reads.
func (n *Node) runConn(c *Conn) {
	defer n.connWG.Done()
	leftover, ok := n.handshake(c)
	if !ok {
		c.cancel()
		_ = c.ws.Close()
		return
	}
	c.connectedAt = n.cfg.Now()
	c.lastWrite.Store(c.connectedAt.UnixNano())
	// The handshake reply is the first queued record, and the writer is held
	// until the connection is registered farm-wide and the OnConnected hooks
	// (which rejoin the user's sessions) ran: when the client sees the
	// handshake succeed, it is already in its groups. Frames queued
	// meanwhile (deliveries, the Connected callback) follow the reply.
	c.queue.hold(protocol.AppendHandshakeResponse(nil, ""))
	if !n.addConn(c) {
		c.cancel()
		_ = c.ws.Close()
		return
	}
	n.metrics.opened(c.hub.name)
	ctx, cancel := context.WithTimeout(c.ctx, n.cfg.RedisTimeout)
	err := n.bp.RegisterConnection(ctx, backplane.ConnInfo{
		ID: c.id, Hub: c.hub.name, User: c.ident.User, Remote: c.remote, ConnectedAt: c.connectedAt,
	})
	cancel()
	if err != nil {
		// Keep serving: local delivery works without Redis, and the
		// connection is re-registered by the client's next reconnect.
		n.log.Warn("connection registration failed; serving locally", "conn", c.id, "err", err)
	}
	for _, fn := range c.hub.onConnected {
		fn(c)
	}
	go c.writeLoop()
	// The set-up above (handshake decode, Redis registration, the hooks'
	// Redis calls) grew this goroutine's stack, and an idle connection
	// would keep that stack for its whole life: read on a fresh goroutine,
	// whose stack stays as small as reading needs.
	n.connWG.Add(1)
	go func() {
		defer n.connWG.Done()
		c.readLoop(leftover)
	}()
}

func (n *Node) handshake(c *Conn) ([]byte, bool) {
	_ = c.ws.SetReadDeadline(n.cfg.Now().Add(n.cfg.HandshakeTimeout))
	data, err := c.readFrame() // the handshake is JSON text whatever the frame type
	var tooBig *tooBigError
	if err != nil && !errors.As(err, &tooBig) {
		reason := "read_error"
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() {
			reason = "timeout"
		}
		n.metrics.handshakeFailed(reason)
		n.log.Info("handshake failed", "conn", c.id, "reason", reason, "err", err)
		return nil, false
	}
	if tooBig == nil {
		// The handshake is a record like any other: MaxMessageSize applies.
		tooBig = c.recordTooBig(data)
	}
	var rest []byte
	errText, reason := "", "invalid"
	if tooBig != nil {
		errText, reason = "Handshake was canceled: "+tooBig.Error(), "too_big"
	} else {
		var req protocol.HandshakeRequest
		req, rest, err = protocol.ParseHandshakeRequest(data)
		if err != nil {
			errText = "Handshake was canceled: " + err.Error()
		} else {
			errText = protocol.ValidateHandshake(req)
		}
	}
	_ = c.ws.SetWriteDeadline(n.cfg.Now().Add(n.cfg.WriteTimeout))
	if errText != "" {
		n.metrics.handshakeFailed(reason)
		n.log.Info("handshake refused", "conn", c.id, "hub", c.hub.name, "error", errText)
		_ = c.ws.WriteMessage(websocket.TextMessage, protocol.AppendHandshakeResponse(nil, errText))
		_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), n.cfg.Now().Add(time.Second))
		return nil, false
	}
	return rest, true
}

func (n *Node) addConn(c *Conn) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.draining.Load() {
		return false
	}
	if _, dup := n.conns[c.id]; dup {
		return false
	}
	n.conns[c.id] = c
	addMember(n.users, c.ident.User, c)
	return true
}

// removeConn takes a closed connection out of every local table and the
// farm registry, then runs the hub's OnDisconnected hooks.
func (n *Node) removeConn(c *Conn) {
	c.memberMu.Lock()
	defer c.memberMu.Unlock()
	n.mu.Lock()
	if n.conns[c.id] != c {
		n.mu.Unlock()
		return
	}
	delete(n.conns, c.id)
	removeMember(n.users, c.ident.User, c)
	c.mu.Lock()
	groups := make([]string, 0, len(c.groups))
	for g := range c.groups {
		groups = append(groups, g)
		removeMember(n.groups, g, c)
	}
	c.groups = nil
	c.mu.Unlock()
	groupCount := len(n.groups)
	n.mu.Unlock()
	n.metrics.localGroups(groupCount)
	n.metrics.closed(c)

	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RedisTimeout)
	defer cancel()
	if err := n.bp.UnregisterConnection(ctx, backplane.ConnInfo{
		ID: c.id, Hub: c.hub.name, User: c.ident.User, Remote: c.remote, ConnectedAt: c.connectedAt,
	}, groups); err != nil {
		// The dead-node reaper cannot help (this node lives on); the
		// entries are harmless: deliveries to them find no local member.
		n.log.Warn("connection deregistration failed", "conn", c.id, "err", err)
	}
	for _, fn := range c.hub.onDisconnected {
		fn(c)
	}
	n.log.Debug("connection closed", "conn", c.id, "hub", c.hub.name, "reason", c.closeReason())
}

func addMember(m map[string]map[*Conn]struct{}, key string, c *Conn) bool {
	set := m[key]
	if set == nil {
		set = map[*Conn]struct{}{}
		m[key] = set
	}
	if _, ok := set[c]; ok {
		return false
	}
	set[c] = struct{}{}
	return true
}

func removeMember(m map[string]map[*Conn]struct{}, key string, c *Conn) {
	if set := m[key]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// scanLoop sends keep-alive Pings to connections the node has not written to
// for KeepAliveInterval. (The client timeout is a read deadline per
// connection, so it needs no scanning.)
func (n *Node) scanLoop() {
	defer n.loops.Done()
	t := time.NewTicker(n.cfg.ScanInterval)
	defer t.Stop()
	ping := protocol.AppendPing(nil)
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		now := n.cfg.Now()
		cutoff := now.Add(-n.cfg.KeepAliveInterval).UnixNano()
		for _, c := range n.Connections() {
			if exp := c.ident.Expires; !exp.IsZero() && now.After(exp) {
				c.closeWith(ReasonAuthExpired)
				continue
			}
			if c.lastWrite.Load() <= cutoff {
				c.sendFrame(ping)
			}
		}
		if now.Second() == 0 {
			n.ipLimits.sweep(now)
		}
	}
}

// controlLoop runs membership changes and control messages from the
// backplane off its receive goroutine, in arrival order.
func (n *Node) controlLoop() {
	defer n.loops.Done()
	for {
		select {
		case <-n.stop:
			return
		case fn := <-n.control:
			fn()
		}
	}
}

func (n *Node) enqueueControl(fn func()) {
	select {
	case n.control <- fn:
	default:
		n.log.Error("control queue full; dropping a membership or control message")
	}
}

// HandleDelivery is the backplane.Handler of the node: it writes frames to
// local members and applies control messages. It never blocks.
func (n *Node) HandleDelivery(d backplane.Delivery) {
	switch d.Kind {
	case backplane.KindFrame:
		n.deliverLocal(d.Scope, d.Key, bytes.Clone(d.Frame), d.Exclude)
	case backplane.KindJoinGroup, backplane.KindLeaveGroup:
		user, group, join := d.Key, d.Arg, d.Kind == backplane.KindJoinGroup
		n.enqueueControl(func() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RedisTimeout)
			defer cancel()
			if err := n.userMembershipLocal(ctx, user, group, join); err != nil {
				n.log.Warn("applying remote membership change failed", "group", group, "join", join, "err", err)
			}
		})
	case backplane.KindClose:
		if c, ok := n.LocalConnection(d.Key); ok {
			c.closeWith(ReasonServerRequest)
		}
	case backplane.KindControl:
		if fn := n.controlHandlers[d.Arg]; fn != nil {
			body := bytes.Clone(d.Frame)
			n.enqueueControl(func() { fn(body) })
		}
	}
}

// deliverLocal queues frame to the local targets of scope/key.
func (n *Node) deliverLocal(scope backplane.Scope, key string, frame []byte, exclude string) int {
	// Collect the targets under the lock and send after releasing it: a
	// send may write to the socket (socketwrite.go), and joins and
	// connects must not wait behind a group's writes.
	var arr [64]*Conn
	targets := arr[:0]
	add := func(set map[*Conn]struct{}) {
		for c := range set {
			if c.id != exclude {
				targets = append(targets, c)
			}
		}
	}
	n.mu.RLock()
	switch scope {
	case backplane.ScopeGroup:
		add(n.groups[key])
	case backplane.ScopeUser:
		add(n.users[key])
	case backplane.ScopeAll:
		for _, c := range n.conns {
			if c.id != exclude {
				targets = append(targets, c)
			}
		}
	case backplane.ScopeConnection:
		if c, ok := n.conns[key]; ok {
			targets = append(targets, c)
		}
	}
	n.mu.RUnlock()
	for _, c := range targets {
		c.sendFrame(frame)
	}
	return len(targets)
}

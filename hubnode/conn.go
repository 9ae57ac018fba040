package hubnode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// Conn is one client connection held by this node.
//
// Goroutines: one read loop for the life of the connection; a decoder only
// while read messages wait to be decoded; a writer only while records are
// queued that the queuing goroutine could not write at once (a busy or
// slow connection, see socketwrite.go); a dispatcher only while
// invocations are queued;
// one per running stream and per running ConcurrentMethod invocation. All
// end when the connection closes.
type Conn struct {
	id          string
	hub         *Hub
	node        *Node
	ident       Identity
	remote      string
	connectedAt time.Time
	ws          *websocket.Conn
	raw         syscall.RawConn // the TCP socket, for non-blocking writes; nil if it offers none
	rw          *rawWriter      // set with raw
	writeMu     sync.Mutex      // one frame at a time on the socket (socketwrite.go)
	partial     []byte          // the unwritten rest of a frame; owned by whoever holds the drain
	queue       *sendQueue
	limiter     *rate.Limiter // invocations per second
	limitLogged atomic.Bool   // one log line per connection when throttled

	lastWrite atomic.Int64 // unix nanos of the last completed socket write
	ctx       context.Context
	cancel    context.CancelFunc

	closeOnce sync.Once
	reason    atomic.Value // DisconnectReason
	torn      chan struct{}

	// memberMu serialises this connection's group changes with its removal,
	// so a join racing a disconnect cannot leave a subscription behind.
	memberMu sync.Mutex

	mu          sync.Mutex
	groups      map[string]struct{} // guarded by node.mu and mu
	streams     map[string]context.CancelFunc
	inbound     [][]byte      // messages read, waiting for the decoder
	inboundLen  int           // bytes in inbound
	decoding    bool          // a decodeLoop goroutine owns inbound
	inboundRoom chan struct{} // made while the reader waits for room in inbound
	invocations []protocol.Message
	dispatching bool
	concurrent  int // running ConcurrentMethod invocations
	items       map[string]any
}

// ID is the connection id (public: groups and other clients use it).
func (c *Conn) ID() string { return c.id }

// User is the connection's user id.
func (c *Conn) User() string { return c.ident.User }

// Identity is who authenticated the connection.
func (c *Conn) Identity() Identity { return c.ident }

// Hub is the hub the connection is attached to.
func (c *Conn) Hub() *Hub { return c.hub }

// RemoteAddr is the client's address as the node saw it.
func (c *Conn) RemoteAddr() string { return c.remote }

// ConnectedAt is when the handshake completed.
func (c *Conn) ConnectedAt() time.Time { return c.connectedAt }

// Context is cancelled when the connection closes.
func (c *Conn) Context() context.Context { return c.ctx }

// Groups returns the groups the connection is in on this node.
func (c *Conn) Groups() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.groups))
	for g := range c.groups {
		out = append(out, g)
	}
	return out
}

// Set stores a per-connection value (e.g. rate limiter state).
func (c *Conn) Set(key string, v any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items == nil {
		c.items = map[string]any{}
	}
	c.items[key] = v
}

// Get returns a value stored with Set.
func (c *Conn) Get(key string) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.items[key]
	return v, ok
}

// Close ends the connection with a Close record carrying reason's message.
func (c *Conn) Close(reason DisconnectReason) { c.closeWith(reason) }

// sendFrame queues a complete frame (one or more records). The frame must not
// be modified afterwards: it may be shared with other connections' queues.
// A full queue closes the connection as a slow consumer.
func (c *Conn) sendFrame(frame []byte) bool {
	switch c.queue.push(frame) {
	case pushStartWriter:
		c.startWriting()
		return true
	case pushQueued:
		return true
	case pushFull:
		c.node.metrics.slowConsumer()
		c.node.metrics.dropped(1)
		c.closeWith(ReasonSlowConsumer)
	case pushClosed:
		c.node.metrics.dropped(1)
	}
	return false
}

// closeWith starts closing the connection once. For a slow consumer the queue
// is discarded and the socket closed at once (there is no room for a Close
// record and the client is not reading anyway); otherwise a Close record is
// queued behind what is already queued and the writer closes the socket
// after writing it.
func (c *Conn) closeWith(reason DisconnectReason) { c.closeWithText(reason, reason.Message()) }

// closeWithText is closeWith with the Close record's error text given
// (closeWith sends reason.Message()).
func (c *Conn) closeWithText(reason DisconnectReason, text string) {
	c.closeOnce.Do(func() {
		c.reason.Store(reason)
		c.cancel()
		if reason == ReasonSlowConsumer || reason == ReasonWriteError {
			c.node.metrics.dropped(c.queue.discard())
			_ = c.ws.NetConn().Close()
			return
		}
		var final []byte
		if reason != ReasonClientClosed {
			final = protocol.AppendClose(nil, text, reason.AllowReconnect())
		}
		if c.queue.pushFinal(final) == pushStartWriter {
			go c.writeLoop()
		}
	})
}

func (c *Conn) closeReason() DisconnectReason {
	if r, ok := c.reason.Load().(DisconnectReason); ok {
		return r
	}
	return ReasonClientClosed
}

// writeLoop drains the queue, batching queued records into one WebSocket
// message of at most MaxBatchBytes, and exits when the queue is empty.
// It is the blocking half of the write path (see socketwrite.go): it
// finishes a frame an inline write left partly written, then writes with a
// deadline, and owns the close sequence.
func (c *Conn) writeLoop() {
	if c.partial != nil {
		err := c.writeBlocking(c.partial)
		c.partial = nil
		if err != nil {
			c.writeFailed(err)
			return
		}
	}
	var batch [][]byte
	for {
		var closed, ok bool
		batch, closed, ok = c.queue.take(batch[:0], c.node.cfg.MaxBatchBytes)
		if !ok {
			if closed {
				c.finishClose()
				c.queue.writerExit()
			}
			return
		}
		bp := c.node.frames.Get().(*[]byte)
		frame := appendTextFrame((*bp)[:0], batch)
		size := len(frame) - frameHeaderLen(len(frame))
		err := c.writeBlocking(frame)
		c.node.putFrame(bp, frame)
		if err != nil {
			c.writeFailed(err)
			return
		}
		c.wrote(size, len(batch))
		clear(batch)
		if closed {
			c.finishClose()
			c.queue.writerExit()
			return
		}
	}
}

// finishClose sends the WebSocket close frame after the final record and
// closes the socket; the read loop then ends and tears the connection down.
func (c *Conn) finishClose() {
	_ = c.writeControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	_ = c.ws.NetConn().Close()
}

// Size limits of what a client sends.
//
// MaxMessageSize caps one hub message (a record: the JSON before its
// separator), the handshake included, like ASP.NET Core's
// MaximumReceiveMessageSize. It is not a cap on a WebSocket message: the
// JS client concatenates the sends it queued meanwhile into one WebSocket
// message, so several calls of a few tens of KiB started together arrive
// as one message of several times that. MaxFrameSize caps a WebSocket
// message, and with it what a connection's read path holds: the message
// being read, at most MaxFrameSize bytes of messages waiting for the
// decoder (pushInbound), and the one being decoded. Either limit exceeded
// closes the connection with a Close record saying which, and by how much
// (allowReconnect false: the same message would fail again).

// tooBigError is a record or WebSocket message over its limit.
type tooBigError struct {
	what  string // "message" (a hub message) or "WebSocket message"
	size  int64  // its size, or (over, for a WebSocket message) the bytes read when it was refused
	limit int64
	over  bool // size is a lower bound: the rest was not read
}

func (e *tooBigError) Error() string {
	if e.over {
		return fmt.Sprintf("%s too big: more than %d bytes, limit %d", e.what, e.limit, e.limit)
	}
	return fmt.Sprintf("%s too big: %d bytes, limit %d", e.what, e.size, e.limit)
}

// readFrame reads one whole WebSocket message, or fails with a
// *tooBigError once it grew past MaxFrameSize (without reading the rest).
func (c *Conn) readFrame() ([]byte, error) {
	_, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	limit := c.node.cfg.MaxFrameSize
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &tooBigError{what: "WebSocket message", size: int64(len(data)), limit: limit, over: true}
	}
	return data, nil
}

// recordTooBig checks the first record of data (up to its separator, or
// all of data without one) against MaxMessageSize.
func (c *Conn) recordTooBig(data []byte) *tooBigError {
	n := bytes.IndexByte(data, protocol.RecordSeparator)
	if n < 0 {
		n = len(data)
	}
	if limit := c.node.cfg.MaxMessageSize; int64(n) > limit {
		return &tooBigError{what: "message", size: int64(n), limit: limit}
	}
	return nil
}

// tooBig closes the connection for a record or message over its limit.
func (c *Conn) tooBig(e *tooBigError) {
	c.node.log.Info("message too big, closing connection", "conn", c.id, "hub", c.hub.name, "user", c.ident.User, "err", e)
	c.closeWithText(ReasonMessageTooBig, "Connection closed with an error: "+e.Error()+".")
}

// readLoop reads until the socket fails or closes, then tears down. leftover
// holds records that arrived in the same message as the handshake.
//
// It only reads: decoding and handling happen on the decoder goroutine
// (decodeLoop), so the goroutine every idle connection keeps parked here
// needs no more stack than a socket read.
func (c *Conn) readLoop(leftover []byte) {
	defer c.teardown()
	if len(leftover) > 0 && !c.pushInbound(leftover) {
		return
	}
	for {
		_ = c.ws.SetReadDeadline(c.node.cfg.Now().Add(c.node.cfg.ClientTimeout))
		data, err := c.readFrame()
		if err != nil {
			var tb *tooBigError
			if errors.As(err, &tb) {
				c.tooBig(tb)
			} else {
				c.closeWith(classifyReadError(err))
			}
			return
		}
		c.node.metrics.bytesIn(len(data))
		if !c.pushInbound(data) {
			return
		}
	}
}

// pushInbound queues a message read from the socket for the decoder,
// starting the decoder when the queue was idle. When MaxQueuedInvocations
// messages or MaxFrameSize bytes are waiting it blocks until the decoder
// makes room, so a client sending faster than the node decodes is slowed
// by TCP flow control rather than buffered without bound. It returns false
// once the connection is closing.
func (c *Conn) pushInbound(data []byte) bool {
	for {
		c.mu.Lock()
		if c.ctx.Err() != nil {
			c.mu.Unlock()
			return false
		}
		// An empty queue takes any message (readFrame bounds it).
		if len(c.inbound) == 0 || (len(c.inbound) < c.node.cfg.MaxQueuedInvocations &&
			int64(c.inboundLen+len(data)) <= c.node.cfg.MaxFrameSize) {
			c.inbound = append(c.inbound, data)
			c.inboundLen += len(data)
			start := !c.decoding
			c.decoding = true
			c.mu.Unlock()
			if start {
				go c.decodeLoop()
			}
			return true
		}
		if c.inboundRoom == nil {
			c.inboundRoom = make(chan struct{})
		}
		room := c.inboundRoom
		c.mu.Unlock()
		select {
		case <-room:
		case <-c.ctx.Done():
			return false
		}
	}
}

// decodeLoop decodes and handles queued messages in arrival order and exits
// when the queue is empty (or the connection closed).
func (c *Conn) decodeLoop() {
	for {
		c.mu.Lock()
		if c.inboundRoom != nil {
			close(c.inboundRoom)
			c.inboundRoom = nil
		}
		if len(c.inbound) == 0 || c.ctx.Err() != nil {
			c.inbound = nil
			c.inboundLen = 0
			c.decoding = false
			c.mu.Unlock()
			return
		}
		data := c.inbound[0]
		c.inbound[0] = nil
		c.inbound = c.inbound[1:]
		c.inboundLen -= len(data)
		c.mu.Unlock()
		c.handleMessage(data)
	}
}

// handleMessage handles the records of one WebSocket message in order. A
// record over MaxMessageSize, a malformed one, or bytes after the last
// separator close the connection (the records before it were handled); the
// decoder's next turn then exits.
func (c *Conn) handleMessage(data []byte) {
	limit := c.node.cfg.MaxMessageSize
	for len(data) > 0 && c.ctx.Err() == nil {
		i := bytes.IndexByte(data, protocol.RecordSeparator)
		n := i // the record's size
		if i < 0 {
			n = len(data)
		}
		if int64(n) > limit {
			c.tooBig(&tooBigError{what: "message", size: int64(n), limit: limit})
			return
		}
		if i < 0 {
			// A record is never split across WebSocket messages.
			c.protocolError(fmt.Errorf("%w: message is incomplete: missing record separator", protocol.ErrProtocol))
			return
		}
		if err := c.handleRecord(data[:i]); err != nil {
			c.protocolError(err)
			return
		}
		data = data[i+1:]
	}
}

func classifyReadError(err error) DisconnectReason {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return ReasonClientTimeout
	// 1006 (abnormal closure) is how gorilla reports a socket that ended
	// without a close frame: the client went away, it sent nothing invalid.
	case websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseGoingAway, websocket.CloseNoStatusReceived,
		websocket.CloseAbnormalClosure),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return ReasonClientClosed
	}
	if strings.Contains(err.Error(), "connection reset") {
		return ReasonClientClosed
	}
	return ReasonProtocolError
}

func (c *Conn) protocolError(err error) {
	c.node.log.Info("protocol error, closing connection", "conn", c.id, "hub", c.hub.name, "err", err)
	c.closeWith(ReasonProtocolError)
}

// handleRecord acts on one incoming record.
func (c *Conn) handleRecord(rec []byte) error {
	m, err := protocol.DecodeMessage(rec)
	if err != nil {
		return err
	}
	c.node.metrics.messageIn(m.Type)
	switch m.Type {
	case protocol.TypeInvocation:
		if c.throttled(m) {
			return nil
		}
		if c.hub.concurrent(m.Target) {
			c.startConcurrent(m)
			return nil
		}
		c.enqueueInvocation(m)
	case protocol.TypeStreamInvocation:
		if c.throttled(m) {
			return nil
		}
		c.startStream(m)
	case protocol.TypeCancelInvocation:
		c.mu.Lock()
		cancel := c.streams[m.InvocationID]
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	case protocol.TypeClose:
		c.closeWith(ReasonClientClosed)
	case protocol.TypePing, protocol.TypeAck, protocol.TypeSequence:
		// Any message resets the client timeout (the read deadline); Ack and
		// Sequence only matter with stateful reconnect, which is not offered.
	case protocol.TypeStreamItem, protocol.TypeCompletion:
		// Upload streams and client results are not offered by any hub
		// method; a stray item or completion is ignored like ASP.NET Core
		// ignores ids it does not know.
	}
	return nil
}

// throttled applies the connection's invocation rate limit. A throttled
// call is answered with a RATE_LIMITED error (non-blocking calls are
// dropped) and the connection stays open.
func (c *Conn) throttled(m protocol.Message) bool {
	if c.limiter.AllowN(c.node.cfg.Now(), 1) {
		return false
	}
	c.node.metrics.rateLimited(c.hub.name)
	if c.limitLogged.CompareAndSwap(false, true) {
		c.node.log.Warn("invocations rate limited", "conn", c.id, "user", c.ident.User, "hub", c.hub.name, "target", m.Target)
	}
	if m.InvocationID != "" {
		c.sendFrame(protocol.AppendCompletionError(nil, m.InvocationID, "RATE_LIMITED: too many invocations; slow down."))
	}
	return true
}

// enqueueInvocation runs invocations one at a time, in arrival order, on a
// dispatcher goroutine that exists only while there is work. The read loop
// stays free to see pings, cancellations and closes.
func (c *Conn) enqueueInvocation(m protocol.Message) {
	c.mu.Lock()
	if len(c.invocations) >= c.node.cfg.MaxQueuedInvocations {
		c.mu.Unlock()
		c.node.metrics.rateLimited(c.hub.name)
		if m.InvocationID != "" {
			c.sendFrame(protocol.AppendCompletionError(nil, m.InvocationID, "RATE_LIMITED: too many invocations waiting; slow down."))
		}
		return
	}
	c.invocations = append(c.invocations, m)
	start := !c.dispatching
	c.dispatching = true
	c.mu.Unlock()
	if start {
		go c.dispatchLoop()
	}
}

func (c *Conn) dispatchLoop() {
	for {
		c.mu.Lock()
		if len(c.invocations) == 0 || c.ctx.Err() != nil {
			c.invocations = nil
			c.dispatching = false
			c.mu.Unlock()
			return
		}
		m := c.invocations[0]
		c.invocations[0] = protocol.Message{}
		c.invocations = c.invocations[1:]
		c.mu.Unlock()
		if done := c.hub.invoke(c, m); done != nil {
			c.sendFrame(done)
		}
	}
}

// startConcurrent runs a ConcurrentMethod invocation on its own goroutine,
// bounded per connection like streams.
func (c *Conn) startConcurrent(m protocol.Message) {
	c.mu.Lock()
	if c.concurrent >= c.node.cfg.MaxStreamsPerConnection {
		c.mu.Unlock()
		c.node.metrics.rateLimited(c.hub.name)
		if m.InvocationID != "" {
			c.sendFrame(protocol.AppendCompletionError(nil, m.InvocationID, "RATE_LIMITED: too many concurrent invocations; slow down."))
		}
		return
	}
	c.concurrent++
	c.mu.Unlock()
	go func() {
		done := c.hub.invoke(c, m)
		c.mu.Lock()
		c.concurrent--
		c.mu.Unlock()
		if done != nil {
			c.sendFrame(done)
		}
	}()
}

func (c *Conn) startStream(m protocol.Message) {
	c.mu.Lock()
	if len(c.streams) >= c.node.cfg.MaxStreamsPerConnection {
		c.mu.Unlock()
		c.sendFrame(protocol.AppendCompletionError(nil, m.InvocationID, "Too many concurrent streams on this connection."))
		return
	}
	if _, dup := c.streams[m.InvocationID]; dup {
		c.mu.Unlock()
		c.sendFrame(protocol.AppendCompletionError(nil, m.InvocationID, "Invocation ID '"+m.InvocationID+"' is already in use."))
		return
	}
	ctx, cancel := context.WithCancel(c.ctx)
	if c.streams == nil {
		c.streams = map[string]context.CancelFunc{}
	}
	c.streams[m.InvocationID] = cancel
	c.mu.Unlock()
	go func() {
		done := c.hub.invokeStream(ctx, c, m)
		cancel()
		c.mu.Lock()
		delete(c.streams, m.InvocationID)
		c.mu.Unlock()
		c.sendFrame(done)
	}()
}

// teardown runs once, when the read loop ends: it makes sure the socket is
// closed and removes the connection from the node and the farm.
func (c *Conn) teardown() {
	c.closeWith(ReasonClientClosed)
	// Give the writer the chance to flush a final Close record; it closes
	// the socket itself, bounded by WriteTimeout.
	select {
	case <-c.queue.writerDone():
	case <-time.After(c.node.cfg.WriteTimeout):
	}
	_ = c.ws.NetConn().Close()
	c.node.removeConn(c)
	close(c.torn)
}

// InGroup reports whether the connection is in group on this node.
func (c *Conn) InGroup(group string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.groups[group]
	return ok
}

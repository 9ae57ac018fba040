package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// maxRetainedBuffer is the largest read or write buffer kept between
// messages; a rare large message should not pin its memory for the life of
// the connection.
const maxRetainedBuffer = 64 << 10

// closeGrace bounds how long a clean close waits for the server's side.
const closeGrace = time.Second

// transport is one WebSocket connection that completed the handshake. A Conn
// uses a new transport after every reconnect.
type transport struct {
	ws     *websocket.Conn
	connID string
	// initial holds hub messages that arrived with the handshake reply.
	initial []byte

	serverTimeout time.Duration
	keepAlive     time.Duration
	writeTimeout  time.Duration

	// wsem serialises writes. It is a channel rather than a mutex so that a
	// writer waiting for its turn can give up when its context is done.
	wsem chan struct{}
	// Guarded by wsem: the reused frame buffer and argument encoder.
	wbuf []byte
	args argWriter
	enc  *json.Encoder

	epoch     time.Time
	lastWrite atomic.Int64 // nanoseconds since epoch (monotonic)
	ended     atomic.Bool
	timerMu   sync.Mutex
	timer     *time.Timer
}

// argWriter collects the JSON of an argument list for the encoder.
type argWriter struct{ b []byte }

// Write appends p; it never fails.
func (w *argWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

func newTransport(ws *websocket.Conn, connID string, initial []byte, o *Options) *transport {
	t := &transport{
		ws:            ws,
		connID:        connID,
		initial:       initial,
		serverTimeout: o.ServerTimeout,
		keepAlive:     o.KeepAliveInterval,
		writeTimeout:  o.ServerTimeout,
		wsem:          make(chan struct{}, 1),
		epoch:         time.Now(),
	}
	if t.writeTimeout <= 0 {
		t.writeTimeout = defaultServerTimeout
	}
	t.enc = json.NewEncoder(&t.args)
	// JSON.stringify does not escape <, > and &; neither do we.
	t.enc.SetEscapeHTML(false)
	return t
}

func (t *transport) lock(ctx context.Context) error {
	select {
	case t.wsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *transport) unlock() { <-t.wsem }

// writeLocked writes one frame; the caller holds wsem.
func (t *transport) writeLocked(ctx context.Context, frame []byte) error {
	if t.ended.Load() {
		return ErrNotConnected
	}
	deadline := time.Now().Add(t.writeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = t.ws.SetWriteDeadline(deadline)
	if err := t.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		// A failed write may have left half a frame on the wire: the
		// connection is unusable. Closing it makes the reader notice.
		_ = t.ws.NetConn().Close()
		return fmt.Errorf("write: %w", err)
	}
	t.lastWrite.Store(int64(time.Since(t.epoch)))
	if cap(t.wbuf) > maxRetainedBuffer {
		t.wbuf = nil
	}
	return nil
}

// encodeArgs renders args as a JSON array into the reused argument buffer;
// the caller holds wsem. The result is valid until the next call.
func (t *transport) encodeArgs(args []any) ([]byte, error) {
	if len(args) == 0 {
		return []byte("[]"), nil
	}
	if cap(t.args.b) > maxRetainedBuffer {
		t.args.b = nil
	}
	// Encoding the elements one by one (rather than the slice) avoids
	// boxing the slice into an interface on every call. Encode ends each
	// value with a newline, which becomes the separator or the closing
	// bracket.
	t.args.b = append(t.args.b[:0], '[')
	for i, a := range args {
		if err := t.enc.Encode(a); err != nil {
			return nil, fmt.Errorf("encoding argument %d: %w", i, err)
		}
		t.args.b[len(t.args.b)-1] = ','
	}
	t.args.b[len(t.args.b)-1] = ']'
	return t.args.b, nil
}

// sendInvocation writes an Invocation (or a StreamInvocation when stream is
// set). An empty id makes a non-blocking invocation.
func (t *transport) sendInvocation(ctx context.Context, stream bool, id, target string, args []any) error {
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	a, err := t.encodeArgs(args)
	if err != nil {
		return err
	}
	if stream {
		t.wbuf = protocol.AppendStreamInvocation(t.wbuf[:0], id, target, a)
	} else {
		t.wbuf = protocol.AppendInvocation(t.wbuf[:0], id, target, a)
	}
	return t.writeLocked(ctx, t.wbuf)
}

// sendRecord writes a record built by appendFn into the reused buffer.
func (t *transport) sendRecord(ctx context.Context, appendFn func([]byte) []byte) error {
	if err := t.lock(ctx); err != nil {
		return err
	}
	defer t.unlock()
	t.wbuf = appendFn(t.wbuf[:0])
	return t.writeLocked(ctx, t.wbuf)
}

// sendResult answers a client-result request.
func (t *transport) sendResult(ctx context.Context, id string, result any, errText string, isErr bool) error {
	if isErr {
		return t.sendRecord(ctx, func(b []byte) []byte { return protocol.AppendCompletionError(b, id, errText) })
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return t.sendRecord(ctx, func(b []byte) []byte {
			return protocol.AppendCompletionError(b, id, "Client failed to serialize its result: "+err.Error())
		})
	}
	return t.sendRecord(ctx, func(b []byte) []byte { return protocol.AppendCompletion(b, id, raw) })
}

// startKeepAlive arms the ping timer. The timer is created stopped and armed
// afterwards so the callback never observes a nil t.timer.
func (t *transport) startKeepAlive() {
	if t.keepAlive <= 0 {
		return
	}
	t.timerMu.Lock()
	defer t.timerMu.Unlock()
	t.timer = time.AfterFunc(t.keepAlive, t.keepAliveTick)
}

// keepAliveTick sends a Ping when nothing was written for the keep-alive
// interval, then re-arms itself for the moment the connection next becomes
// idle that long. It runs on the timer's goroutine, so no goroutine sits
// parked per connection for keep-alive.
func (t *transport) keepAliveTick() {
	if t.ended.Load() {
		return
	}
	idle := time.Since(t.epoch) - time.Duration(t.lastWrite.Load())
	if idle >= t.keepAlive {
		select {
		case t.wsem <- struct{}{}:
			// Best effort: a failed ping closes the connection, which the
			// reader reports.
			t.wbuf = protocol.AppendPing(t.wbuf[:0])
			_ = t.writeLocked(context.Background(), t.wbuf)
			t.unlock()
		default:
			// Someone is writing right now; that resets idleness anyway.
		}
		idle = 0
	}
	t.timerMu.Lock()
	if !t.ended.Load() {
		t.timer.Reset(t.keepAlive - idle)
	}
	t.timerMu.Unlock()
}

// shutdown stops the keep-alive timer, sends a close frame when the
// connection ended cleanly, and closes the socket.
func (t *transport) shutdown(clean bool) {
	t.ended.Store(true)
	t.timerMu.Lock()
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timerMu.Unlock()
	if clean {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		_ = t.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(closeGrace))
	}
	_ = t.ws.Close()
}

// abort closes the socket without ceremony; the reader then fails.
func (t *transport) abort() { _ = t.ws.NetConn().Close() }

// readLoop reads frames until the transport fails or the server sends Close,
// handing every record to h. It returns why the transport ended.
func (t *transport) readLoop(h func(t *transport, m *protocol.Message) error) error {
	handle := func(rec []byte) error {
		m, err := protocol.DecodeMessage(rec)
		if err != nil {
			return err
		}
		return h(t, &m)
	}
	if len(t.initial) > 0 {
		if err := protocol.SplitRecords(t.initial, handle); err != nil {
			return err
		}
		t.initial = nil
	}
	// The frame buffer is reused: the decoder copies everything it keeps.
	var buf []byte
	for {
		if t.serverTimeout > 0 {
			// Any message resets the server timeout, not only Pings.
			_ = t.ws.SetReadDeadline(time.Now().Add(t.serverTimeout))
		}
		mt, r, err := t.ws.NextReader()
		if err != nil {
			return readError(err)
		}
		if mt != websocket.TextMessage {
			return fmt.Errorf("%w: binary WebSocket message on the JSON protocol", protocol.ErrProtocol)
		}
		buf, err = readAll(r, buf[:0])
		if err != nil {
			return readError(err)
		}
		if err := protocol.SplitRecords(buf, handle); err != nil {
			return err
		}
		if cap(buf) > maxRetainedBuffer {
			buf = nil
		}
	}
}

func readError(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrServerTimeout
	}
	return fmt.Errorf("read: %w", err)
}

// readAll is io.ReadAll into a caller-supplied buffer.
func readAll(r io.Reader, b []byte) ([]byte, error) {
	if cap(b) < 512 {
		b = make([]byte, 0, 512)
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

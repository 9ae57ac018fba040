package hubnode

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Writing to the socket.
//
// Data frames are framed here and written straight to the TCP socket rather
// than through gorilla/websocket's message writer. When a record is queued
// to an idle connection, the goroutine that queued it (a hub method, or the
// backplane receiver fanning a message out) makes one non-blocking write(2)
// attempt itself: at 20 messages a second per member the queue holds one
// record at a time, and starting a goroutine per record (the writer) cost
// a goroutine start, a scheduling hop and a few allocations per delivery.
// Only what that attempt could not write (a full socket buffer: a slow or
// stalled client), what was queued meanwhile, and every record for a
// connection written to within the last inlineIdle (a busy one, whose
// writer batches records into one frame) go to a writer goroutine, which
// writes with a deadline and may block. So a delivering goroutine never
// waits for a client, and an idle connection still has no writer.
//
// writeMu keeps frames whole on the wire: every data write, and the pong
// and close frames gorilla writes (WriteControl), hold it.

// newFramePool makes a node's pool of buffers for assembling one
// WebSocket frame (Node.frames).
func newFramePool() *sync.Pool {
	return &sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}
}

// inlineIdle: a connection not written to for this long gets its next
// record written inline (startWriting).
const inlineIdle = time.Millisecond

// maxPooledFrame: larger frames are not kept in the pool.
const maxPooledFrame = 64 << 10

// appendTextFrame appends a final, unmasked (server-to-client) text frame
// holding records.
func appendTextFrame(dst []byte, records [][]byte) []byte {
	n := 0
	for _, r := range records {
		n += len(r)
	}
	dst = append(dst, 0x81) // FIN, opcode 1 (text)
	switch {
	case n < 126:
		dst = append(dst, byte(n))
	case n <= 0xFFFF:
		dst = append(dst, 126, byte(n>>8), byte(n))
	default:
		dst = append(dst, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	for _, r := range records {
		dst = append(dst, r...)
	}
	return dst
}

// startWriting runs when a record was queued to an idle queue: the caller
// owns the drain. It writes what is queued with one non-blocking attempt
// and hands anything left over to a writer goroutine.
func (c *Conn) startWriting() {
	// A connection written to within the last inlineIdle is busy: its
	// writer goroutine batches what arrives in the meantime, which beats
	// a write per record.
	if c.raw == nil || c.node.cfg.Now().UnixNano()-c.lastWrite.Load() < int64(inlineIdle) {
		go c.writeLoop()
		return
	}
	var arr [8][]byte
	batch, st := c.queue.takeOpen(arr[:0], c.node.cfg.MaxBatchBytes)
	switch st {
	case takeEmpty:
		return
	case takeClosing:
		go c.writeLoop()
		return
	}
	bp := c.node.frames.Get().(*[]byte)
	frame := appendTextFrame((*bp)[:0], batch)
	n, err := c.tryWrite(frame)
	if err == nil && n < len(frame) {
		// The socket buffer is full: the writer finishes the frame.
		c.partial = append([]byte(nil), frame[n:]...)
	}
	size := len(frame) - frameHeaderLen(len(frame))
	c.node.putFrame(bp, frame)
	clear(batch)
	if err != nil {
		c.writeFailed(err)
		return
	}
	c.wrote(size, len(batch))
	if c.partial == nil && c.queue.releaseIfIdle() {
		return
	}
	go c.writeLoop()
}

// frameHeaderLen is the header length of an unmasked frame of frameLen
// bytes in all.
func frameHeaderLen(frameLen int) int {
	switch {
	case frameLen < 126+2:
		return 2
	case frameLen <= 0xFFFF+4:
		return 4
	}
	return 10
}

func (n *Node) putFrame(bp *[]byte, frame []byte) {
	if cap(frame) <= maxPooledFrame {
		*bp = frame[:0]
		n.frames.Put(bp)
	}
}

// tryWrite writes as much of b as the socket takes without waiting.
func (c *Conn) tryWrite(b []byte) (int, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	n, err := c.rawWrite(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// A deadline left by an earlier blocking write: clear it and retry.
		_ = c.ws.NetConn().SetWriteDeadline(time.Time{})
		n, err = c.rawWrite(b)
	}
	return n, err
}

func (c *Conn) rawWrite(b []byte) (int, error) {
	w := c.rw
	w.buf, w.n, w.err = b, 0, nil
	err := c.raw.Write(w.fn)
	n, werr := w.n, w.err
	w.buf = nil
	if werr != nil {
		return n, werr
	}
	return n, err
}

// rawWriter is a connection's non-blocking write, kept per connection so
// that a write allocates nothing (RawConn.Write takes a closure). Guarded
// by Conn.writeMu.
type rawWriter struct {
	buf []byte
	n   int
	err error
	fn  func(fd uintptr) bool // w.write, bound once
}

func newRawWriter() *rawWriter {
	w := &rawWriter{}
	w.fn = w.write
	return w
}

// write writes w.buf to fd until it is written or the socket is full;
// it never waits for the socket to become writable.
func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.buf) {
		m, e := syscall.Write(int(fd), w.buf[w.n:])
		if m > 0 {
			w.n += m
		}
		switch {
		case e == syscall.EINTR:
			continue
		case e == syscall.EAGAIN:
			return true // full: the writer goroutine takes over
		case e != nil:
			w.err = e
			return true
		case m <= 0:
			return true
		}
	}
	return true
}

// writeBlocking writes all of b, waiting at most WriteTimeout.
func (c *Conn) writeBlocking(b []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	nc := c.ws.NetConn()
	_ = nc.SetWriteDeadline(c.node.cfg.Now().Add(c.node.cfg.WriteTimeout))
	_, err := nc.Write(b)
	// Clear it: the next inline attempt must not meet an expired deadline.
	_ = nc.SetWriteDeadline(time.Time{})
	return err
}

// writeControl writes a control frame (pong, close) whole, between data
// frames.
func (c *Conn) writeControl(messageType int, data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	err := c.ws.WriteControl(messageType, data, c.node.cfg.Now().Add(time.Second))
	_ = c.ws.NetConn().SetWriteDeadline(time.Time{})
	return err
}

// installControlHandlers makes gorilla answer pings and close frames
// through writeControl (its defaults write outside writeMu).
func (c *Conn) installControlHandlers() {
	c.ws.SetPingHandler(func(data string) error {
		err := c.writeControl(websocket.PongMessage, []byte(data))
		var ne interface{ Temporary() bool }
		if err == nil || errors.Is(err, websocket.ErrCloseSent) || (errors.As(err, &ne) && ne.Temporary()) {
			return nil
		}
		return err
	})
	c.ws.SetCloseHandler(func(code int, _ string) error {
		msg := []byte{}
		if code != websocket.CloseNoStatusReceived {
			msg = websocket.FormatCloseMessage(code, "")
		}
		_ = c.writeControl(websocket.CloseMessage, msg)
		return nil
	})
}

// wrote records a completed write of size bytes holding records records.
func (c *Conn) wrote(size, records int) {
	c.lastWrite.Store(c.node.cfg.Now().UnixNano())
	c.node.metrics.bytesOut(size, records)
	c.node.metrics.batchWritten(records)
}

// writeFailed ends the connection after a failed write; the caller owns
// the drain, which is released here.
func (c *Conn) writeFailed(err error) {
	c.node.log.Debug("write failed", "conn", c.id, "err", err)
	c.node.metrics.dropped(c.queue.discard())
	c.partial = nil
	c.queue.writerExit()
	c.closeWith(ReasonWriteError)
	_ = c.ws.NetConn().Close()
}

package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

// Stream is the receiving end of a server-to-client stream started with
// Conn.Stream. Next may be called from one goroutine at a time; Cancel from
// any.
type Stream struct {
	c      *Conn
	id     uint64
	target string

	mu    sync.Mutex
	items []json.RawMessage
	head  int
	// err is set once the stream is over: io.EOF, *InvocationError, or an
	// error wrapping ErrConnectionClosed or ErrStreamCanceled.
	err  error
	wake chan struct{}
	// stopCtx detaches the context watcher installed by Conn.Stream.
	stopCtx func() bool
}

func newStream(c *Conn, id uint64, target string) *Stream {
	return &Stream{c: c, id: id, target: target, wake: make(chan struct{}, 1)}
}

// Next returns the next item. It returns io.EOF after the server completed
// the stream, an *InvocationError when the server ended it with an error, an
// error wrapping ErrStreamCanceled after Cancel, and one wrapping
// ErrConnectionClosed when the connection went away. ctx only bounds this
// wait; it does not cancel the stream.
func (s *Stream) Next(ctx context.Context) (json.RawMessage, error) {
	for {
		s.mu.Lock()
		if s.head < len(s.items) {
			it := s.items[s.head]
			s.items[s.head] = nil
			s.head++
			if s.head == len(s.items) {
				s.items, s.head = s.items[:0], 0
			}
			s.mu.Unlock()
			return it, nil
		}
		err := s.err
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
		select {
		case <-s.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Cancel stops the stream: it sends a CancelInvocation to the server and
// makes Next return ErrStreamCanceled. Items not yet consumed are dropped.
// Cancelling a finished stream does nothing. The returned error is that of
// writing the CancelInvocation.
func (s *Stream) Cancel() error { return s.cancel(ErrStreamCanceled) }

func (s *Stream) cancel(cause error) error {
	if !s.finish(cause, true) {
		return nil
	}
	c := s.c
	c.mu.Lock()
	var t *transport
	// Only a stream still registered belongs to the live transport; one that
	// was failed by a disconnect has nothing left to cancel.
	if c.streams[s.id] == s {
		delete(c.streams, s.id)
		t = c.t
	}
	c.mu.Unlock()
	if t == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.writeTimeout)
	defer cancel()
	id := strconv.FormatUint(s.id, 10)
	if err := t.sendRecord(ctx, func(b []byte) []byte { return protocol.AppendCancelInvocation(b, id) }); err != nil {
		return fmt.Errorf("cancel stream %s: %w", s.target, err)
	}
	return nil
}

// push queues an item from the server.
func (s *Stream) push(item json.RawMessage) {
	s.mu.Lock()
	if s.err == nil {
		s.items = append(s.items, item)
	}
	s.mu.Unlock()
	s.signal()
}

// finish ends the stream with err and reports whether this call ended it.
// discard drops the items not yet consumed.
func (s *Stream) finish(err error, discard bool) bool {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return false
	}
	s.err = err
	if discard {
		s.items, s.head = nil, 0
	}
	stop := s.stopCtx
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.signal()
	return true
}

func (s *Stream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// watch cancels the stream when ctx is done, without a parked goroutine.
func (s *Stream) watch(ctx context.Context) {
	if ctx.Done() == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	s.stopCtx = context.AfterFunc(ctx, func() {
		_ = s.cancel(fmt.Errorf("%w: %w", ErrStreamCanceled, context.Cause(ctx)))
	})
}

// completion turns a Completion for this stream into its end state.
func (s *Stream) complete(m *protocol.Message) {
	if m.HasError {
		s.finish(&InvocationError{Target: s.target, Message: m.Error}, false)
		return
	}
	s.finish(io.EOF, false)
}

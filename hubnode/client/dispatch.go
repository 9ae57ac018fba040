package client

import (
	"encoding/json"
	"sync"
)

// event is one unit of work for the dispatcher: either a server invocation
// (handlers, and for a client-result request the reply) or a lifecycle
// callback in fn.
type event struct {
	handlers []func([]json.RawMessage)
	args     []json.RawMessage

	// For a server invocation carrying an invocation id (a client-result
	// request): the transport it arrived on, the id and the result handler
	// (nil when none is registered).
	reply    *transport
	replyID  string
	resultFn func([]json.RawMessage) (any, error)

	fn func()
}

// dispatcher runs user callbacks in arrival order on one goroutine, so a
// callback may block or call Invoke without stalling the reader (which must
// keep reading to receive the Completion). The queue is unbounded for the
// same reason: bounding it would make a slow callback stall the reader.
type dispatcher struct {
	mu     sync.Mutex
	queue  []event
	closed bool
	wake   chan struct{}
}

func newDispatcher(run func(event)) *dispatcher {
	d := &dispatcher{wake: make(chan struct{}, 1)}
	go d.loop(run)
	return d
}

func (d *dispatcher) push(e event) {
	d.mu.Lock()
	d.queue = append(d.queue, e)
	d.mu.Unlock()
	d.signal()
}

// close makes the goroutine exit once the queued events have run.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.signal()
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) loop(run func(event)) {
	var batch []event
	for {
		d.mu.Lock()
		// Swap buffers so callbacks run without the lock held.
		batch, d.queue = d.queue, batch[:0]
		closed := d.closed
		d.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-d.wake
			continue
		}
		for i := range batch {
			run(batch[i])
			batch[i] = event{} // release arguments for the GC
		}
	}
}

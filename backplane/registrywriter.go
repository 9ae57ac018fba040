package backplane

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// registryWriter is the goroutine that writes this node's registry updates
// (connection registrations, group joins and leaves) to Redis: group
// commit. An update that arrives while no round trip is in flight goes out
// at once; updates that arrive meanwhile wait for it and then go out
// together, up to registryBatch in one round trip, each still atomic (its
// commands stay inside the batch's MULTI/EXEC; on Cluster every update is
// per-key pipelined commands already, as with Backplane.multi). A burst of
// connections arriving together so costs a few round trips instead of
// several each, which is what connection set-up spends its CPU on.
//
// Updates go out in the order they were queued, and a caller gets its
// update's own result (the errors of its commands). A caller waits for the
// result whatever its context does: an update either was written before
// its caller returns or (its context ended while it was queued) was not
// written at all, never later, so a connection's registration cannot land
// in Redis after its removal.
type registryWriter struct {
	b       *Backplane
	q       chan *regUpdate
	quit    chan struct{} // closed: write what is queued, then exit
	done    chan struct{} // closed when the goroutine exited
	started bool          // set by start, read by stop (Backplane.lifeMu ordering)
	stopped sync.Once
}

// regUpdate is one queued registry update.
type regUpdate struct {
	ctx    context.Context
	queue  func(redis.Pipeliner) // queues the update's commands
	lo, hi int                   // its commands in the batch
	done   chan error            // capacity 1: the writer never blocks on it
}

// registryBatch is the most updates written in one round trip, and
// registryQueue the most waiting (a caller blocks while it is full).
const (
	registryBatch = 128
	registryQueue = 4096
)

func newRegistryWriter(b *Backplane) *registryWriter {
	return &registryWriter{b: b, q: make(chan *regUpdate, registryQueue),
		quit: make(chan struct{}), done: make(chan struct{})}
}

func (w *registryWriter) start() {
	w.started = true
	go w.run()
}

// stop writes what is queued and waits for the goroutine to exit. Safe to
// call when never started, and more than once.
func (w *registryWriter) stop() {
	if !w.started {
		return
	}
	w.stopped.Do(func() { close(w.quit) })
	<-w.done
}

// write queues an update (queue adds its commands to a pipeline) and
// returns its result once written. Without a running writer (before Start,
// after Shutdown) it writes the update itself.
func (w *registryWriter) write(ctx context.Context, queue func(redis.Pipeliner)) error {
	direct := func() error {
		return w.b.multi(ctx, func(p redis.Pipeliner) error { queue(p); return nil })
	}
	if !w.started {
		return direct()
	}
	u := &regUpdate{ctx: ctx, queue: queue, done: make(chan error, 1)}
	select {
	case w.q <- u:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.done:
		return direct()
	}
	select {
	case err := <-u.done:
		return err
	case <-w.done:
		// The writer answers everything it took before it exits.
		select {
		case err := <-u.done:
			return err
		default:
			return direct()
		}
	}
}

func (w *registryWriter) run() {
	defer close(w.done)
	batch := make([]*regUpdate, 0, registryBatch)
	for {
		var u *regUpdate
		select {
		case u = <-w.q:
		case <-w.quit:
			select {
			case u = <-w.q:
			default:
				return
			}
		}
		batch = append(batch[:0], u)
	fill:
		for len(batch) < registryBatch {
			select {
			case u := <-w.q:
				batch = append(batch, u)
			default:
				break fill
			}
		}
		w.send(batch)
		clear(batch)
	}
}

// send writes one batch in one round trip and answers each update.
func (w *registryWriter) send(batch []*regUpdate) {
	live := batch[:0]
	var deadline time.Time
	allDeadlines := true
	for _, u := range batch {
		if err := u.ctx.Err(); err != nil {
			u.done <- err // not written: its caller gave up while it was queued
			continue
		}
		if d, ok := u.ctx.Deadline(); ok {
			if d.After(deadline) {
				deadline = d
			}
		} else {
			allDeadlines = false
		}
		live = append(live, u)
	}
	if len(live) == 0 {
		return
	}
	// The round trip outlives no caller's deadline (go-redis' own timeouts
	// bound it otherwise).
	ctx := context.Background()
	if allDeadlines {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	cmds, err := w.b.multiCmds(ctx, func(p redis.Pipeliner) error {
		for _, u := range live {
			u.lo = p.Len()
			u.queue(p)
			u.hi = p.Len()
		}
		return nil
	})
	for _, u := range live {
		u.done <- updateErr(cmds, u.lo, u.hi, err)
	}
}

// updateErr is the result of the update whose commands are cmds[lo:hi]:
// the first error among them, or the batch's error when the commands did
// not come back (the round trip failed as a whole).
func updateErr(cmds []redis.Cmder, lo, hi int, batchErr error) error {
	if hi > len(cmds) {
		return batchErr
	}
	for _, c := range cmds[lo:hi] {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	return nil
}

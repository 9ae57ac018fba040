package backplane

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// publisher is the single goroutine that writes every publication of this
// node to Redis. Publications wait in a bounded queue and go out in queue
// order, up to PublishBatch per pipelined round trip, one round trip at a
// time: that one ordered path is what makes frames from this node reach
// every subscriber in the order Publish was called. It also stamps each
// envelope's sequence number, so the order on the wire and the numbering
// agree.
type publisher struct {
	b     *Backplane
	q     chan *pubItem
	pool  sync.Pool // *pubItem, reused only after its caller got the result
	batch int

	ctx     context.Context // pipelines; cancelled when a drain runs out of time
	cancel  context.CancelFunc
	quit    chan struct{} // closed: drain the queue, then exit
	done    chan struct{} // closed when the goroutine exited
	started bool          // set by start, read by stop (both under Backplane.lifeMu ordering)
	seq     uint64        // publisher goroutine only
	// lastPostWarn: unix nanos of the last failed-post log line (publisher
	// goroutine only).
	lastPostWarn int64
}

// pubItem is one queued publication.
type pubItem struct {
	ch      string
	payload []byte
	inbox   bool // to a node inbox: zero receivers is ErrNoReceiver
	ctx     context.Context
	done    chan error // capacity 1: the publisher never blocks on it
	// posted: nobody waits for the result (post); the publisher counts
	// it and recycles the item itself. ctx is nil then.
	posted bool
	start  time.Time // posted, with Config.OnPublished set: when it was queued
}

func newPublisher(b *Backplane) *publisher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &publisher{
		b:      b,
		q:      make(chan *pubItem, b.cfg.PublishQueue),
		batch:  b.cfg.PublishBatch,
		ctx:    ctx,
		cancel: cancel,
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	p.pool.New = func() any { return &pubItem{done: make(chan error, 1)} }
	return p
}

func (p *publisher) start() {
	p.started = true
	go p.run()
}

// stop lets the publisher send what is queued and waits for it to exit. If
// ctx ends first, the pipeline in flight is cancelled and what is still
// queued fails with ErrClosed. Safe to call when never started.
func (p *publisher) stop(ctx context.Context) error {
	if !p.started {
		p.cancel()
		return nil
	}
	close(p.quit)
	select {
	case <-p.done:
		p.cancel()
		return nil
	case <-ctx.Done():
		p.cancel()
		<-p.done
		return ctx.Err()
	}
}

// publish queues the encoding of e (with frame) to channel ch and waits
// until the pipeline holding it ran, returning that publication's error.
// If ctx ends first it returns ctx's error; the publication may still go
// out if it already left the queue.
func (p *publisher) publish(ctx context.Context, ch string, e *envelope, frame []byte, inbox bool) error {
	if err := p.b.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var start time.Time
	if p.b.cfg.OnPublished != nil {
		start = time.Now()
	}
	it := p.item(ch, e, frame)
	it.inbox, it.ctx = inbox, ctx
	if err := p.enqueue(ctx, it); err != nil {
		return err
	}
	select {
	case err := <-it.done:
		p.put(it)
		if !start.IsZero() {
			p.b.cfg.OnPublished(time.Since(start))
		}
		return err
	case <-ctx.Done():
		// it is abandoned to the publisher and the GC.
		if down := p.b.rx.downErr(); down != nil {
			return fmt.Errorf("%w (Redis unreachable: %v)", ctx.Err(), down)
		}
		return ctx.Err()
	case <-p.done:
		select {
		case err := <-it.done:
			p.put(it)
			return err
		default:
			return ErrClosed
		}
	}
}

// post queues like publish but returns once the publication is queued,
// without waiting for its round trip; it waits only while the queue is
// full (until ctx ends). The result is counted in Stats, and a failure
// logged. Order with every other publication of this node is kept.
func (p *publisher) post(ctx context.Context, ch string, e *envelope, frame []byte) error {
	if err := p.b.usable(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	it := p.item(ch, e, frame)
	it.posted = true
	if p.b.cfg.OnPublished != nil {
		it.start = time.Now()
	}
	return p.enqueue(ctx, it)
}

// item is a pooled item holding e's encoding (with frame) for channel ch.
func (p *publisher) item(ch string, e *envelope, frame []byte) *pubItem {
	it := p.pool.Get().(*pubItem)
	e.instance = p.b.instance
	if n := e.encodedLen(frame); cap(it.payload) < n || cap(it.payload) > 4*n+1024 {
		it.payload = make([]byte, 0, n)
	}
	it.payload = appendEnvelope(it.payload[:0], e, frame)
	it.ch = ch
	return it
}

// enqueue queues it, waiting only while the queue is full; when it cannot
// (ctx ended, publisher stopped) it recycles it and returns why.
func (p *publisher) enqueue(ctx context.Context, it *pubItem) error {
	select {
	case p.q <- it:
		return nil
	case <-ctx.Done():
		p.put(it)
		return ctx.Err()
	case <-p.done:
		p.put(it)
		return ErrClosed
	}
}

// finish reports an item's result: to its waiting caller, or (posted)
// to the log, recycling the item.
func (p *publisher) finish(it *pubItem, err error) {
	if !it.posted {
		it.done <- err
		return
	}
	if !it.start.IsZero() {
		p.b.cfg.OnPublished(time.Since(it.start))
	}
	// At most one line a second: an outage fails a burst of them.
	if now := time.Now().UnixNano(); err != nil && now-p.lastPostWarn > int64(time.Second) {
		p.lastPostWarn = now
		p.b.log.Warn("posted publication failed", "channel", it.ch, "err", err)
	}
	p.put(it)
}

func (p *publisher) put(it *pubItem) {
	it.ctx, it.inbox = nil, false
	it.posted = false
	it.start = time.Time{}
	p.pool.Put(it)
}

func (p *publisher) run() {
	defer close(p.done)
	batch := make([]*pubItem, 0, p.batch)
	cmds := make([]*redis.IntCmd, 0, p.batch)
	for {
		var it *pubItem
		select {
		case it = <-p.q:
		case <-p.quit:
			select {
			case it = <-p.q:
			default:
				p.failQueued()
				return
			}
		}
		batch = append(batch[:0], it)
	fill:
		for len(batch) < p.batch {
			select {
			case it := <-p.q:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		cmds = p.send(batch, cmds[:0])
		clear(batch)
		clear(cmds)
	}
}

// failQueued fails whatever was queued after the drain ended.
func (p *publisher) failQueued() {
	for {
		select {
		case it := <-p.q:
			p.b.stats.publishErrors.Add(1)
			p.finish(it, ErrClosed)
		default:
			return
		}
	}
}

// send writes one batch in a pipeline and reports each item's result.
func (p *publisher) send(batch []*pubItem, cmds []*redis.IntCmd) []*redis.IntCmd {
	// Items whose caller gave up while queued are not sent: nobody waits
	// for them, and sending late would break the caller's expectations.
	live := batch[:0]
	var deadline time.Time
	allDeadlines := true
	for _, it := range batch {
		if it.posted {
			allDeadlines = false
			live = append(live, it)
			continue
		}
		if err := it.ctx.Err(); err != nil {
			it.done <- err
			p.b.stats.publishErrors.Add(1)
			continue
		}
		if d, ok := it.ctx.Deadline(); ok {
			if d.After(deadline) {
				deadline = d
			}
		} else {
			allDeadlines = false
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return cmds
	}
	for _, it := range live {
		p.seq++
		setSeq(it.payload, p.seq)
	}
	// The pipeline outlives no caller: it ends at the latest deadline of its
	// items (go-redis' own read/write timeouts bound it otherwise).
	ctx := p.ctx
	if allDeadlines {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	_, _ = p.b.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for _, it := range live {
			if p.b.sharded {
				// Redis Cluster: only the master owning the channel's slot
				// gets it, instead of every node of the cluster. The
				// pipeline sends each master its commands in order, so
				// per-channel order holds.
				cmds = append(cmds, pipe.SPublish(ctx, it.ch, it.payload))
			} else {
				cmds = append(cmds, pipe.Publish(ctx, it.ch, it.payload))
			}
		}
		return nil
	})
	for i, it := range live {
		err := cmds[i].Err()
		if err == nil && it.inbox && cmds[i].Val() == 0 {
			err = ErrNoReceiver
		}
		if err != nil && err != ErrNoReceiver {
			p.b.stats.publishErrors.Add(1)
		} else {
			p.b.stats.published.Add(1)
		}
		p.finish(it, err)
	}
	return cmds
}

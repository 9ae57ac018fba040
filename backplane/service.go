package backplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backplane is one node's view of the farm's shared Redis layer: it fans
// frames out to the other nodes over pub/sub, keeps the farm-wide registry
// of this node's connections, groups and users, heartbeats the node and
// cleans up after dead ones. The guarantees are in the package comment.
//
// Lifecycle: New, then Start, then any operation concurrently, then
// Shutdown. Background goroutines (one file each):
//
//   - publisher (publisher.go): drains the publish queue into pipelined
//     PUBLISH batches, one at a time, on one ordered path;
//   - registry writer (registrywriter.go): writes the registry updates of
//     connections and group memberships, those queued together in one
//     round trip (group commit);
//   - receiver and its health check (receiver.go): read the pub/sub
//     connection, confirm subscriptions, hand deliveries to the Handler,
//     detect a broken or silent subscription and restore it;
//   - heartbeat (heartbeat.go): refreshes the node's registry entry and
//     re-registers local state after Redis lost it;
//   - reaper (reaper.go): removes dead nodes' connections.
//
// Shutdown order: refuse new operations; stop the reaper and the heartbeat
// (nothing may re-register the node behind the cleanup); write the queued
// registry updates and stop the registry writer; drain the
// publisher (queued publications still go out, bounded by Shutdown's ctx);
// remove this node's connections and node keys from Redis; close the pub/sub
// connection and stop the receiver and its health check. Every goroutine has
// exited when Shutdown returns; the Handler is not called afterwards.
type Backplane struct {
	cfg      Config
	rdb      redis.UniversalClient
	h        Handler
	log      *slog.Logger
	k        keys
	sharded  bool // Redis Cluster: sharded pub/sub and per-key registry writes
	instance uint64
	started  time.Time

	pub  *publisher
	rw   *registryWriter
	rx   *receiver
	hb   *heartbeat
	rp   *reaper
	subs *subscriptions

	// mu guards the local registry: this node's connections, their groups,
	// and cleanup that still has to reach Redis.
	mu           sync.Mutex
	local        map[string]*localConn
	localVersion uint64               // bumped on every local registry change
	tombstones   map[string]tombstone // unregistered, Redis cleanup failed: retried by the heartbeat
	gone         map[string]time.Time // recently unregistered: late joins are refused
	dirty        atomic.Bool          // a registry write failed: the heartbeat re-syncs

	lifeMu   sync.Mutex
	state    atomic.Int32 // stateNew, stateRunning, stateClosed
	closing  chan struct{}
	stopOnce sync.Once
	stopErr  error

	stats struct {
		published, publishErrors, received, dropped, duplicates, reconnects, reaps atomic.Uint64
	}
}

const (
	stateNew int32 = iota
	stateRunning
	stateClosed
)

// New checks cfg and prepares a Backplane on rdb; nothing touches Redis
// until Start. h receives deliveries from other nodes (nil discards them);
// logger nil discards logs.
func New(rdb redis.UniversalClient, cfg Config, h Handler, logger *slog.Logger) (*Backplane, error) {
	if rdb == nil {
		return nil, errors.New("backplane: new: nil Redis client")
	}
	cfg = cfg.withDefaults()
	if cfg.NodeID == "" {
		return nil, errors.New("backplane: new: NodeID is required")
	}
	if strings.ContainsRune(cfg.NodeID, ':') {
		return nil, fmt.Errorf("backplane: new: NodeID %q must not contain ':'", cfg.NodeID)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	_, sharded := rdb.(*redis.ClusterClient)
	k := newKeys(cfg.Prefix, 0)
	if sharded {
		if strings.ContainsAny(cfg.Prefix, "{}") {
			return nil, fmt.Errorf("backplane: new: Prefix %q must not contain '{' or '}' on Redis Cluster (channel hash tags)", cfg.Prefix)
		}
		k = newKeys(cfg.Prefix, cfg.ShardBuckets)
	}
	b := &Backplane{
		cfg:        cfg,
		rdb:        rdb,
		h:          h,
		log:        logger.With("component", "backplane", "node", cfg.NodeID),
		k:          k,
		sharded:    sharded,
		instance:   rand.Uint64() | 1, // never 0
		local:      map[string]*localConn{},
		tombstones: map[string]tombstone{},
		gone:       map[string]time.Time{},
		closing:    make(chan struct{}),
	}
	b.pub = newPublisher(b)
	b.rw = newRegistryWriter(b)
	b.rx = newReceiver(b)
	b.subs = newSubscriptions(b.rx)
	b.hb = newHeartbeat(b)
	b.rp = newReaper(b)
	return b, nil
}

// NodeID is the node id this backplane registers under.
func (b *Backplane) NodeID() string { return b.cfg.NodeID }

// Start connects the node to the farm. It returns once the node's inbox and
// the all channel are subscribed (confirmed by Redis), leftovers of an
// earlier process with the same node id are removed, the node has
// heartbeated once, and every loop runs. It fails if Redis is unreachable
// within ctx; the Backplane is then unusable (Shutdown is still safe).
func (b *Backplane) Start(ctx context.Context) error {
	b.lifeMu.Lock()
	switch b.state.Load() {
	case stateRunning:
		b.lifeMu.Unlock()
		return errors.New("backplane: start: already started")
	case stateClosed:
		b.lifeMu.Unlock()
		return fmt.Errorf("backplane: start: %w", ErrClosed)
	}
	b.started = b.cfg.Now()
	b.pub.start()
	b.rw.start()
	b.rx.start()
	if err := b.start(ctx); err != nil {
		b.state.Store(stateRunning) // so that halt stops what runs
		// halt takes lifeMu itself.
		b.lifeMu.Unlock()
		b.halt(context.Background(), false)
		return fmt.Errorf("backplane: start: %w", err)
	}
	defer b.lifeMu.Unlock()
	b.hb.start()
	b.rp.start()
	b.state.Store(stateRunning)
	b.log.Info("backplane started", "prefix", b.cfg.Prefix, "heartbeat", b.cfg.HeartbeatInterval,
		"sharded_pubsub", b.sharded, "pubsub_connections", len(b.rx.shards))
	return nil
}

func (b *Backplane) start(ctx context.Context) error {
	for _, sh := range b.rx.shards {
		if sh.probe == "" {
			continue
		}
		if err := b.rx.subscribe(ctx, sh.probe); err != nil {
			return fmt.Errorf("subscribe %s: %w", sh.probe, err)
		}
	}
	for _, ch := range []string{b.k.chNode(b.cfg.NodeID), b.k.chAll()} {
		if err := b.rx.subscribe(ctx, ch); err != nil {
			return fmt.Errorf("subscribe %s: %w", ch, err)
		}
	}
	if err := b.purgeLeftovers(ctx); err != nil {
		return err
	}
	if _, err := b.hb.beat(ctx, true); err != nil {
		return fmt.Errorf("first heartbeat: %w", err)
	}
	return nil
}

// Shutdown stops the node's part in the farm in the order documented on
// Backplane, and removes its connections and node entry from the registry.
// Cleanup in Redis is bounded by ctx; the goroutines stop regardless.
// Calling it again returns the first call's result.
func (b *Backplane) Shutdown(ctx context.Context) error {
	return b.halt(ctx, true)
}

// kill stops every goroutine and closes the subscription like a crash
// would: nothing is removed from Redis, so the node's connections, groups
// and heartbeat entry stay behind for the survivors' reaper. For tests of
// dead-node cleanup only; Shutdown afterwards does nothing.
func (b *Backplane) kill() {
	_ = b.halt(context.Background(), false)
}

func (b *Backplane) halt(ctx context.Context, cleanup bool) error {
	b.stopOnce.Do(func() {
		b.lifeMu.Lock()
		wasRunning := b.state.Swap(stateClosed) == stateRunning
		close(b.closing)
		b.lifeMu.Unlock()
		if !wasRunning {
			b.rx.closePubSub()
			return
		}
		var errs []error
		b.rp.stop()
		b.hb.stop()
		b.rw.stop()
		if err := b.pub.stop(ctx); err != nil {
			errs = append(errs, err)
		}
		if cleanup {
			if err := b.deregister(ctx); err != nil {
				errs = append(errs, err)
			}
		}
		b.rx.stop()
		if err := errors.Join(errs...); err != nil {
			b.stopErr = fmt.Errorf("backplane: shutdown: %w", err)
		}
		b.log.Info("backplane stopped", "cleanup", cleanup, "err", b.stopErr)
	})
	return b.stopErr
}

// usable reports ErrClosed after Shutdown began and ErrNotStarted before
// Start.
func (b *Backplane) usable() error {
	switch b.state.Load() {
	case stateRunning:
		return nil
	case stateClosed:
		return ErrClosed
	default:
		return ErrNotStarted
	}
}

// Ready checks the node end to end: the subscription connection is up, a
// probe published to this node's own inbox through the publisher comes back
// through the subscription within ctx, and no wanted channel has stayed
// unconfirmed across a health check. A subscriber that went silent without
// an error (a half-open connection, a stuck receive loop, a subscription
// Redis refused) fails the probe. Use it for /readyz.
func (b *Backplane) Ready(ctx context.Context) error {
	if err := b.usable(); err != nil {
		return fmt.Errorf("backplane: ready: %w", err)
	}
	if err := b.rx.ready(ctx); err != nil {
		return fmt.Errorf("backplane: ready: %w", err)
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (b *Backplane) Stats() Stats {
	return Stats{
		Published:     b.stats.published.Load(),
		PublishErrors: b.stats.publishErrors.Load(),
		Received:      b.stats.received.Load(),
		Dropped:       b.stats.dropped.Load(),
		Duplicates:    b.stats.duplicates.Load(),
		Reconnects:    b.stats.reconnects.Load(),
		Subscriptions: b.rx.count(),
		NodeReaps:     b.stats.reaps.Load(),
		QueueLen:      len(b.pub.q),
	}
}

// ms formats t as unix milliseconds, the time format of every registry field.
func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// parseMs reads a unix-milliseconds field; "" or garbage is the zero time.
func parseMs(s string) time.Time {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n == 0 {
		return time.Time{}
	}
	return time.UnixMilli(n)
}

// sleepCtx waits d unless stop or ctx end first; it reports whether the
// full wait passed.
func sleepCtx(ctx context.Context, stop <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	case <-ctx.Done():
		return false
	}
}

// nextBackoff doubles d within [min, max].
func nextBackoff(d, lo, hi time.Duration) time.Duration {
	d *= 2
	if d < lo {
		d = lo
	}
	if d > hi {
		d = hi
	}
	return d
}

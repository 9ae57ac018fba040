package backplane

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// heartbeat keeps the node alive in the registry: every HeartbeatInterval
// one transaction writes the node hash (address, started, heartbeat,
// connection count, instance), gives it a TTL of DeadAfterMissed intervals
// and scores the node in the node zset with the heartbeat time.
//
// It also repairs the registry: if the node was missing from the zset (a
// survivor reaped it during a partition, or Redis restarted empty) or a
// registry write failed, it re-writes every local connection and its groups;
// and it retries the removal of connections whose UnregisterConnection
// failed.
type heartbeat struct {
	b       *Backplane
	started bool
	quit    chan struct{}
	done    chan struct{}
}

func newHeartbeat(b *Backplane) *heartbeat {
	return &heartbeat{b: b, quit: make(chan struct{}), done: make(chan struct{})}
}

func (h *heartbeat) start() {
	h.started = true
	go h.run()
}

func (h *heartbeat) stop() {
	if !h.started {
		return
	}
	close(h.quit)
	<-h.done
}

func (h *heartbeat) run() {
	defer close(h.done)
	interval := h.b.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-h.quit:
			return
		case <-t.C:
		}
		// A beat may take at most the time the node has before it counts
		// as dead; a hung Redis must not stall the loop longer.
		ctx, cancel := context.WithTimeout(context.Background(), h.b.cfg.deadAfter())
		err := h.repair(ctx)
		cancel()
		switch {
		case err != nil && !failing:
			failing = true
			h.b.log.Warn("heartbeat failed; retrying every interval", "err", err)
		case err != nil:
			h.b.log.Debug("heartbeat still failing", "err", err)
		case failing:
			failing = false
			h.b.log.Info("heartbeat restored")
		}
	}
}

// repair beats and then does whatever re-registration is due.
func (h *heartbeat) repair(ctx context.Context) error {
	added, err := h.beat(ctx, false)
	if err != nil {
		return err
	}
	if added {
		h.b.log.Warn("node was missing from the registry (reaped, or Redis lost its data): re-registering local connections")
		h.b.dirty.Store(true)
	}
	if h.b.dirty.Swap(false) {
		if err := h.b.resync(ctx); err != nil {
			return err
		}
	}
	return h.b.retryTombstones(ctx)
}

// beat writes one heartbeat. added reports that the node was not in the
// node zset before (expected only for the first beat).
func (h *heartbeat) beat(ctx context.Context, first bool) (added bool, err error) {
	b := h.b
	now := b.cfg.Now()
	b.mu.Lock()
	conns := len(b.local)
	b.mu.Unlock()
	var stats NodeStats
	if b.cfg.NodeStats != nil {
		stats = b.cfg.NodeStats()
	}
	var zadd *redis.IntCmd
	err = b.multi(ctx, func(p redis.Pipeliner) error {
		key := b.k.node(b.cfg.NodeID)
		p.HSet(ctx, key, "address", b.cfg.Address, "started", ms(b.started), "heartbeat", ms(now),
			"conns", conns, "instance", strconv.FormatUint(b.instance, 16),
			"msgs_in", stats.MessagesIn, "msgs_out", stats.MessagesOut)
		p.PExpire(ctx, key, b.cfg.deadAfter())
		zadd = p.ZAdd(ctx, b.k.nodes(), redis.Z{Score: float64(now.UnixMilli()), Member: b.cfg.NodeID})
		return nil
	})
	if err != nil {
		return false, err
	}
	return !first && zadd.Val() == 1, nil
}

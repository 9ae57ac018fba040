package backplane

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// reaper removes dead nodes from the registry. Every HeartbeatInterval it
// lists the nodes whose last heartbeat is older than DeadAfterMissed
// intervals. For each, one survivor wins a lock (SET NX PX) and removes the
// node's connections one atomic script call per connection (pipelined):
// out of every group set and the user set, hash and groups set deleted. A
// final script deletes the node's keys and zset entry if it is still dead;
// only the survivor whose script did that calls OnNodeDead, so the hook
// runs once per death farm-wide. A node that heartbeats again mid-cleanup
// stops the cleanup (the scripts check its score) and re-registers what was
// already removed (see heartbeat).
type reaper struct {
	b       *Backplane
	started bool
	ctx     context.Context // cancelled by stop: a pass in flight ends early
	cancel  context.CancelFunc
	quit    chan struct{}
	done    chan struct{}
	rounds  atomic.Uint64 // completed passes (tests wait on it)
}

func newReaper(b *Backplane) *reaper {
	ctx, cancel := context.WithCancel(context.Background())
	return &reaper{b: b, ctx: ctx, cancel: cancel, quit: make(chan struct{}), done: make(chan struct{})}
}

func (r *reaper) start() {
	r.started = true
	go r.run()
}

func (r *reaper) stop() {
	r.cancel()
	if !r.started {
		return
	}
	close(r.quit)
	<-r.done
}

func (r *reaper) run() {
	defer close(r.done)
	interval := r.b.cfg.HeartbeatInterval
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-r.quit:
			return
		case <-t.C:
		}
		err := r.pass(r.ctx)
		r.rounds.Add(1)
		switch {
		case err != nil && !failing:
			failing = true
			r.b.log.Warn("reaper pass failed", "err", err)
		case err != nil:
			r.b.log.Debug("reaper pass still failing", "err", err)
		case failing:
			failing = false
		}
	}
}

// pass reaps every node that is dead now.
func (r *reaper) pass(ctx context.Context) error {
	b := r.b
	cutoff := b.cfg.Now().Add(-b.cfg.deadAfter()).UnixMilli()
	dead, err := b.rdb.ZRangeByScore(ctx, b.k.nodes(), &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(cutoff, 10),
	}).Result()
	if err != nil {
		return fmt.Errorf("list dead nodes: %w", err)
	}
	var errs []error
	for _, node := range dead {
		if node == b.cfg.NodeID {
			continue // our own heartbeat is late; it will catch up
		}
		if err := r.reap(ctx, node, cutoff); err != nil {
			errs = append(errs, fmt.Errorf("reap %s: %w", node, err))
		}
	}
	return errors.Join(errs...)
}

// reap cleans up one dead node if this survivor wins its lock.
func (r *reaper) reap(ctx context.Context, node string, cutoff int64) error {
	b := r.b
	lock := b.k.reapLock(node)
	lockTTL := max(10*b.cfg.HeartbeatInterval, 5*time.Second)
	won, err := b.rdb.SetNX(ctx, lock, b.cfg.NodeID, lockTTL).Result()
	if err != nil || !won {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = scriptReleaseLock.Run(ctx, b.rdb, []string{lock}, b.cfg.NodeID).Err()
	}()
	removed := 0
	for attempt := 0; ; attempt++ {
		ids, err := b.rdb.SRandMemberN(ctx, b.k.nodeConns(node), int64(b.cfg.PublishBatch)).Result()
		if err != nil {
			return err
		}
		if len(ids) > 0 {
			rs := make([]removal, len(ids))
			for i, id := range ids {
				rs[i] = removal{conn: id}
			}
			done, err := b.removeConns(ctx, node, cutoff, false, rs)
			if err != nil {
				return err
			}
			for _, ok := range done {
				if !ok {
					b.log.Info("node heartbeated again; cleanup stopped", "dead", node)
					return nil
				}
			}
			removed += len(ids)
			continue
		}
		res, err := b.finishNode(ctx, node, cutoff)
		if err != nil {
			return err
		}
		switch res {
		case 1:
			b.stats.reaps.Add(1)
			b.log.Warn("removed a dead node from the farm", "dead", node, "connections", removed)
			if b.cfg.OnNodeDead != nil {
				b.cfg.OnNodeDead(node)
			}
			return nil
		case -1:
			if attempt > 100 {
				return errors.New("connections keep appearing")
			}
			continue
		default:
			return nil // alive again, or another survivor finished
		}
	}
}

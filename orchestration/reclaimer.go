package orchestration

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// reclaimLoop takes over jobs whose consumer stopped refreshing its claim
// for Config.VisibilityTimeout (a dead or stuck node) with XAUTOCLAIM, on
// every partition in turn, and hands them to this node's workers. It claims
// no more than workers are free to start (it holds a worker slot for each),
// so claimed jobs do not age in a local queue.
func (e *Engine) reclaimLoop() {
	t := time.NewTicker(e.cfg.ReclaimInterval)
	defer t.Stop()
	cursors := make([]string, len(e.keys.parts))
	for {
		select {
		case <-e.takeCtx.Done():
			return
		case <-t.C:
		}
		for p := range e.keys.parts {
			if e.crashed.Load() || !e.reclaim(p, &cursors[p]) {
				break
			}
		}
	}
}

// reclaim runs one XAUTOCLAIM pass on partition p; false when the engine is
// stopping.
func (e *Engine) reclaim(p int, cursor *string) bool {
	if *cursor == "" {
		*cursor = "0-0"
	}
	n, ok := e.takeSlots(e.cfg.Workers)
	if !ok {
		return false
	}
	ctx, cancel := e.op()
	msgs, next, err := e.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
		Stream: e.keys.parts[p].jobs, Group: groupName, Consumer: e.cfg.NodeID,
		MinIdle: e.cfg.VisibilityTimeout, Start: *cursor, Count: int64(n),
	}).Result()
	cancel()
	if err != nil {
		e.log.Warn("reclaim jobs", "stream", e.keys.parts[p].jobs, "err", err)
		*cursor = "0-0"
		e.giveSlots(n)
		return true
	}
	*cursor = next
	got := 0
	for _, m := range msgs {
		if e.crashed.Load() {
			break
		}
		e.stats.reclaimed.Add(1)
		e.observeJobs(jobKindOf(m.Values), JobReclaimed, 1)
		e.log.Info("job reclaimed", "id", m.ID, "plan", m.Values["plan"], "step", m.Values["step"])
		e.work <- delivery{part: p, m: m} // never blocks: every entry holds a slot
		got++
	}
	e.giveSlots(n - got)
	return true
}

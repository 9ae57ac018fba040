package orchestration

import (
	"time"

	"github.com/redis/go-redis/v9"
)

// reclaimLoop takes over jobs whose consumer stopped refreshing its claim
// for Config.VisibilityTimeout (a dead or stuck node) with XAUTOCLAIM and
// hands them to this node's workers. It claims no more than the workers
// can take at once, so claimed jobs do not age in a local queue.
func (e *Engine) reclaimLoop() {
	t := time.NewTicker(e.cfg.ReclaimInterval)
	defer t.Stop()
	cursor := "0-0"
	for {
		select {
		case <-e.takeCtx.Done():
			return
		case <-t.C:
		}
		free := cap(e.reclaimed) - len(e.reclaimed)
		if free == 0 || e.crashed.Load() {
			continue
		}
		ctx, cancel := e.op()
		msgs, next, err := e.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: e.keys.jobs, Group: groupName, Consumer: e.cfg.NodeID,
			MinIdle: e.cfg.VisibilityTimeout, Start: cursor, Count: int64(free),
		}).Result()
		cancel()
		if err != nil {
			e.log.Warn("reclaim jobs", "err", err)
			cursor = "0-0"
			continue
		}
		cursor = next
		if cursor == "" {
			cursor = "0-0"
		}
		for _, m := range msgs {
			e.stats.reclaimed.Add(1)
			e.observeJobs(jobKindOf(m.Values), JobReclaimed, 1)
			e.log.Info("job reclaimed", "id", m.ID, "plan", m.Values["plan"], "step", m.Values["step"])
			e.reclaimed <- m // never blocks: only this goroutine sends and free was measured
		}
	}
}

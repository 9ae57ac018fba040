package orchestration

import (
	"fmt"
	"strconv"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// schedulerBatch bounds the work of one scheduler tick.
const schedulerBatch = 100

// scheduleLoop moves due retries from the delayed set to the job stream and
// enforces plan deadlines. Every node with workers runs it; the Lua
// scripts make concurrent runs harmless (a retry is moved once, a plan is
// timed out once).
func (e *Engine) scheduleLoop() {
	t := time.NewTicker(e.cfg.SchedulerInterval)
	defer t.Stop()
	for {
		select {
		case <-e.takeCtx.Done():
			return
		case <-t.C:
		}
		if e.crashed.Load() {
			continue
		}
		for p := range e.keys.parts {
			e.promoteRetries(p)
			e.expirePlans(p)
		}
	}
}

func (e *Engine) promoteRetries(p int) {
	ctx, cancel := e.op()
	defer cancel()
	n, err := e.sc.promote.Run(ctx, e.rdb, []string{e.keys.parts[p].delayed, e.keys.parts[p].jobs}, e.nowMs(), schedulerBatch).Int64Slice()
	if err != nil {
		e.log.Warn("promote retries", "err", err)
		return
	}
	if len(n) == 2 {
		e.observeJobs(JobKindStep, JobEnqueued, int(n[0]))
		e.observeJobs(JobKindAgentMessage, JobEnqueued, int(n[1]))
	}
}

func (e *Engine) expirePlans(p int) {
	ctx, cancel := e.op()
	ids, err := e.rdb.ZRangeByScore(ctx, e.keys.parts[p].deadlines, &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(e.nowMs(), 10), Count: schedulerBatch}).Result()
	cancel()
	if err != nil {
		e.log.Warn("read plan deadlines", "err", err)
		return
	}
	for _, id := range ids {
		if e.takeCtx.Err() != nil {
			return
		}
		e.expirePlan(id)
	}
}

// expirePlan times out one plan whose deadline passed.
func (e *Engine) expirePlan(id string) {
	ctx, cancel := e.op()
	defer cancel()
	info, err := e.planInfo(ctx, id)
	if CodeOf(err) == contract.CodePlanNotFound {
		e.rdb.ZRem(ctx, e.keys.part(id).deadlines, id) // expired or deleted: drop its deadline
		return
	}
	if err != nil {
		e.log.Warn("time out plan", "plan", id, "err", err)
		return
	}
	reason := fmt.Sprintf("Orchestration timed out after %v", info.timeout)
	res, err := e.abort(ctx, id, planTimedOut, reason, true)
	if err != nil {
		e.log.Warn("time out plan", "plan", id, "err", err)
		return
	}
	switch res {
	case "ok":
		e.log.Info("plan timed out", "plan", id, "timeout", info.timeout)
	case "gone", "terminal":
		e.rdb.ZRem(ctx, e.keys.part(id).deadlines, id)
	}
}

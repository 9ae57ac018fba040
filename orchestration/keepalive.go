package orchestration

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// keepalive watches one running job: every Config.PollInterval it checks
// (one Lua call) that the plan and step still run and that this delivery
// still owns the step, and every Config.ClaimRefresh it also refreshes the
// job's claim (XCLAIM JUSTID) so the reclaimer leaves it alone. When the
// plan stops (cancel, timeout, failure elsewhere) or the step was taken
// over, it cancels the agent. After the agent returned (afterRun) it only
// keeps the claim alive while the callbacks are sent.
type keepalive struct {
	e           *Engine
	j           job
	owner       string
	cancelAgent context.CancelFunc
	post        atomic.Bool
	result      atomic.Value // string: "", "stop", "lost" or "gone"
	done        chan struct{}
	exited      chan struct{}
	once        sync.Once
}

func (e *Engine) startKeepalive(j job, owner string, cancelAgent context.CancelFunc) *keepalive {
	k := &keepalive{e: e, j: j, owner: owner, cancelAgent: cancelAgent,
		done: make(chan struct{}), exited: make(chan struct{})}
	e.wg.Go(k.loop)
	return k
}

// verdict is why the agent was cancelled, or "".
func (k *keepalive) verdict() string {
	v, _ := k.result.Load().(string)
	return v
}

// afterRun switches to claim-only mode.
func (k *keepalive) afterRun() { k.post.Store(true) }

// stop ends the loop and waits for it.
func (k *keepalive) stop() {
	k.once.Do(func() { close(k.done) })
	<-k.exited
}

func (k *keepalive) loop() {
	defer close(k.exited)
	e := k.e
	tick := time.NewTicker(min(e.cfg.PollInterval, e.cfg.ClaimRefresh))
	defer tick.Stop()
	lastClaim := time.Now()
	for {
		select {
		case <-k.done:
			return
		case <-tick.C:
		}
		if e.crashed.Load() {
			return
		}
		claim, post := "0", "0"
		if time.Since(lastClaim) >= e.cfg.ClaimRefresh {
			claim = "1"
		}
		if k.post.Load() {
			post = "1"
		}
		ctx, cancel := e.op()
		res, err := e.sc.keepalive.Run(ctx, e.rdb, []string{e.keys.plan(k.j.planID), e.keys.jobs},
			k.j.step, k.owner, groupName, e.cfg.NodeID, k.j.msgID, claim, post).Text()
		cancel()
		if err != nil {
			e.log.Warn("keepalive", "plan", k.j.planID, "step", k.j.step, "err", err)
			continue
		}
		if claim == "1" {
			lastClaim = time.Now()
		}
		if res == "ok" {
			continue
		}
		if !k.post.Load() || res == "lost" {
			k.result.Store(res)
			k.cancelAgent()
		}
		return
	}
}

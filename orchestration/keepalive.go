package orchestration

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// keepalive watches one running job: every Config.PollInterval it checks
// (one Lua call) that the job's work should go on and that this delivery
// still owns it, and every Config.ClaimRefresh it also refreshes the job's
// claim (XCLAIM JUSTID) so the reclaimer leaves it alone. When the work
// should stop (a plan cancelled, timed out or failed elsewhere) or was
// taken over by another delivery, it cancels the agent. After the agent
// returned (afterRun) it only keeps the claim alive while the callbacks are
// sent.
type keepalive struct {
	e *Engine
	// check runs the job kind's keepalive script; claim and post are "0"
	// or "1" (refresh the claim; claim-only mode). It answers "ok", "stop",
	// "lost" or "gone".
	check       func(ctx context.Context, claim, post string) (string, error)
	logAttrs    []any
	cancelAgent context.CancelFunc
	post        atomic.Bool
	result      atomic.Value // string: "", "stop", "lost" or "gone"
	done        chan struct{}
	exited      chan struct{}
	once        sync.Once
}

// startKeepalive watches a plan step's job.
func (e *Engine) startKeepalive(j job, owner string, cancelAgent context.CancelFunc) *keepalive {
	check := func(ctx context.Context, claim, post string) (string, error) {
		return e.sc.keepalive.Run(ctx, e.rdb, []string{e.keys.plan(j.planID), e.keys.parts[j.part].jobs},
			j.step, owner, groupName, e.cfg.NodeID, j.msgID, claim, post).Text()
	}
	return e.watch(check, cancelAgent, "plan", j.planID, "step", j.step)
}

// watch starts a keepalive loop around check.
func (e *Engine) watch(check func(ctx context.Context, claim, post string) (string, error), cancelAgent context.CancelFunc, logAttrs ...any) *keepalive {
	k := &keepalive{e: e, check: check, logAttrs: logAttrs, cancelAgent: cancelAgent,
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
		res, err := k.check(ctx, claim, post)
		cancel()
		if err != nil {
			e.log.Warn("keepalive", append(k.logAttrs, "err", err)...)
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

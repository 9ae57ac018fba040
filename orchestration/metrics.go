package orchestration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Observer receives the engine's job, plan and agent events as they happen,
// so that package metrics can count them without the engine knowing about
// Prometheus. Methods are called from the engine's goroutines, concurrently,
// and must return quickly. Kinds, events and outcomes are the bounded sets
// below (JobKinds, JobEvents, PlanOutcomes, AgentOutcomes): they become
// metric labels, never an id.
type Observer interface {
	// JobEvent counts n jobs of kind reaching event (one of JobEvents).
	JobEvent(kind, event string, n int)
	// JobQueueWait observes how long a job waited in the stream before a
	// worker of this node started it (from its stream entry's enqueue time).
	JobQueueWait(kind string, d time.Duration)
	// JobRunTime observes how long a started job ran (the agent call of a
	// step, timeouts and failures included).
	JobRunTime(kind string, d time.Duration)
	// PlanFinished counts a plan reaching a final status (one of
	// PlanOutcomes). Exactly one node reports each plan: the one that
	// claims sending its completion.
	PlanFinished(outcome string)
	// AgentCall observes one call of an agent: its kind (scripted, command,
	// openai; "other" when the agent does not say), outcome (one of
	// AgentOutcomes) and duration.
	AgentCall(kind, outcome string, d time.Duration)
}

// Job kinds: the kind label of job metrics.
const (
	JobKindStep         = "step"          // one attempt of one plan step
	JobKindAgentMessage = "agent-message" // one attempt at answering a message sent to an agent
)

// JobKinds returns every job kind, so that metrics can create their series
// before the first job.
func JobKinds() []string { return []string{JobKindStep, JobKindAgentMessage} }

// Job events reported through Observer.JobEvent. Every started job ends in
// exactly one of succeeded, failed, retried, dead_lettered or released
// (unless another delivery took it over); dead_lettered also counts jobs
// whose workers kept dying, which are not started again.
const (
	JobEnqueued     = "enqueued"      // added to the job stream by this node: a first attempt, a due retry, a released job
	JobStarted      = "started"       // a worker of this node began an attempt
	JobSucceeded    = "succeeded"     // the attempt's success was recorded
	JobFailed       = "failed"        // the attempt's failure was recorded and no retry follows (permanent error, timeout)
	JobRetried      = "retried"       // the attempt failed; its retry waits for the back-off
	JobDeadLettered = "dead_lettered" // attempts exhausted: the job went to the dead-letter stream
	JobReclaimed    = "reclaimed"     // taken over from a consumer that stopped refreshing its claim
	JobReleased     = "released"      // given back to the stream at shutdown
)

// JobEvents returns every job event.
func JobEvents() []string {
	return []string{JobEnqueued, JobStarted, JobSucceeded, JobFailed, JobRetried, JobDeadLettered, JobReclaimed, JobReleased}
}

// Plan outcomes reported through Observer.PlanFinished.
const (
	PlanCompleted = "completed"
	PlanFailed    = "failed"
	PlanCancelled = "cancelled"
	PlanTimedOut  = "timed_out"
)

// PlanOutcomes returns every plan outcome.
func PlanOutcomes() []string {
	return []string{PlanCompleted, PlanFailed, PlanCancelled, PlanTimedOut}
}

// Agent call outcomes reported through Observer.AgentCall.
const (
	AgentOK        = "ok"
	AgentError     = "error"
	AgentTimeout   = "timeout"   // the step timeout cut the call short
	AgentCancelled = "cancelled" // the plan was cancelled or the node shut down
)

// AgentOutcomes returns every agent call outcome.
func AgentOutcomes() []string { return []string{AgentOK, AgentError, AgentTimeout, AgentCancelled} }

// planOutcome maps a plan hash status onto its metric outcome.
func planOutcome(status string) string {
	switch status {
	case planCompleted:
		return PlanCompleted
	case planFailed:
		return PlanFailed
	case planCancelled:
		return PlanCancelled
	case planTimedOut:
		return PlanTimedOut
	}
	return ""
}

func (e *Engine) observeJobs(kind, event string, n int) {
	if e.cfg.Observer != nil && n > 0 {
		e.cfg.Observer.JobEvent(kind, event, n)
	}
}

// observeStart reports a job start and its queue wait, read from the id of
// its stream entry (the enqueue time in milliseconds, set by XADD '*'); an
// empty msgID is a step a delivery went on with at once: no wait.
func (e *Engine) observeStart(kind, msgID string) {
	if e.cfg.Observer == nil {
		return
	}
	e.cfg.Observer.JobEvent(kind, JobStarted, 1)
	if msgID == "" {
		e.cfg.Observer.JobQueueWait(kind, 0)
		return
	}
	ms, _, ok := strings.Cut(msgID, "-")
	if !ok {
		return
	}
	if at, err := strconv.ParseInt(ms, 10, 64); err == nil && at > 0 {
		e.cfg.Observer.JobQueueWait(kind, max(e.cfg.Now().Sub(time.UnixMilli(at)), 0))
	}
}

func (e *Engine) observeRun(kind string, d time.Duration) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.JobRunTime(kind, d)
	}
}

func (e *Engine) observePlan(status string) {
	if o := planOutcome(status); e.cfg.Observer != nil && o != "" {
		e.cfg.Observer.PlanFinished(o)
	}
}

// observeAgent reports an agent call that began at start, ran under ctx and
// returned err.
func (e *Engine) observeAgent(ctx context.Context, a Agent, start time.Time, err error) {
	if e.cfg.Observer == nil {
		return
	}
	outcome := AgentOK
	switch {
	case err == nil:
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		outcome = AgentTimeout
	case ctx.Err() != nil:
		outcome = AgentCancelled
	default:
		outcome = AgentError
	}
	e.cfg.Observer.AgentCall(agentKind(a), outcome, time.Since(start))
}

// agentKind is the agent's kind label: what its Kind method says (the
// catalogue's agents have one), "scripted" for the engine's own Scripted.
func agentKind(a Agent) string {
	switch a := a.(type) {
	case interface{ Kind() string }:
		if k := a.Kind(); k != "" {
			return k
		}
	case *Scripted:
		return "scripted"
	}
	return "other"
}

// jobKindOf is the kind of a job stream entry: its "kind" field when it
// names a known kind, else a step (step jobs carry no kind field).
func jobKindOf(values map[string]any) string {
	if k, _ := values["kind"].(string); k != "" {
		for _, known := range JobKinds() {
			if k == known {
				return k
			}
		}
	}
	return JobKindStep
}

// atoi reads res[i] as a count; missing or malformed is 0.
func atoi(res []string, i int) int {
	if i >= len(res) {
		return 0
	}
	n, _ := strconv.Atoi(res[i])
	return n
}

// Backlog is the farm-wide state of the job stream, read from Redis. Every
// node reads the same figures.
type Backlog struct {
	// Queued jobs are in the stream and not yet delivered to any worker.
	Queued int64
	// Pending jobs were delivered to a worker and not yet acknowledged
	// (running, or held by a worker that died, until they are reclaimed).
	Pending int64
	// Delayed jobs are retries waiting for their back-off.
	Delayed int64
	// DeadLetters is the length of the dead-letter stream (capped near
	// 10,000 entries).
	DeadLetters int64
}

// Backlog reads the job streams' backlog from Redis (four commands per
// partition in one pipeline); it is meant for metrics, at scrape time.
func (e *Engine) Backlog(ctx context.Context) (Backlog, error) {
	type reads struct {
		length, delayed, dead *redis.IntCmd
		pending               *redis.XPendingCmd
	}
	rs := make([]reads, len(e.keys.parts))
	_, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pk := range e.keys.parts {
			rs[i] = reads{length: p.XLen(ctx, pk.jobs), pending: p.XPending(ctx, pk.jobs, groupName),
				delayed: p.ZCard(ctx, pk.delayed), dead: p.XLen(ctx, pk.dead)}
		}
		return nil
	})
	// A missing stream or group (no job yet) is an empty backlog.
	if err != nil && !errors.Is(err, redis.Nil) && !strings.Contains(err.Error(), "NOGROUP") {
		return Backlog{}, fmt.Errorf("orchestration: backlog: %w", err)
	}
	var b Backlog
	for _, r := range rs {
		var pending int64
		if pv := r.pending.Val(); pv != nil {
			pending = pv.Count
		}
		b.Pending += pending
		b.Queued += max(r.length.Val()-pending, 0)
		b.Delayed += r.delayed.Val()
		b.DeadLetters += r.dead.Val()
	}
	return b, nil
}

package orchestration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// groupName is the consumer group every node's workers join.
const groupName = "workers"

// Stats are counters of this node's engine since New.
type Stats struct {
	StepsStarted   int64 // step attempts this node's workers started
	StepsSucceeded int64 // step results recorded as success
	StepsFailed    int64 // step results recorded as failure
	Retries        int64 // attempts scheduled after a failure
	Reclaimed      int64 // jobs taken over from another consumer
	DeadLettered   int64 // jobs moved to the dead-letter stream
	Released       int64 // jobs given back at shutdown
	Duplicates     int64 // deliveries dropped because the step was already recorded or taken over

	MessagesAnswered int64 // agent messages this node's workers answered
	MessagesFailed   int64 // agent messages whose answer failed for good (error, timeout, attempts exhausted)
}

type counters struct {
	started, succeeded, failed, retries, reclaimed, dead, released, dups atomic.Int64
	answered, unanswered                                                 atomic.Int64
}

// Engine builds and runs orchestration plans and answers agent messages.
// Create it with New; call Start to run workers on this node and Shutdown
// to stop them. The hub-facing methods (CreatePlan, ExecutePlan,
// SendOrchestrationMessage, CancelExecution, GetPlan, SendAgentMessage,
// StreamAgentMessage, Agents, AgentStatus) work without Start. All methods
// are safe for concurrent use.
type Engine struct {
	cfg      Config
	rdb      redis.UniversalClient
	sessions Sessions
	authz    SessionAuthorizer
	dirs     SessionDirectories // nil: agents get no working directory
	router   Router             // nil: agent messages are refused
	agents   AgentCatalog
	log      *slog.Logger
	keys     keys
	sc       scripts
	msc      messageScripts
	stats    counters
	load     agentLoad // this node's calls in flight per agent (status)
	catalog  catalogWatch

	mu         sync.Mutex
	started    bool
	stopped    bool
	base       context.Context    // Start's context without its cancellation: for Redis operations
	takeCtx    context.Context    // done when workers must stop taking jobs
	stopTaking context.CancelFunc //
	runCtx     context.Context    // done when running jobs must be abandoned (released)
	stopRun    context.CancelFunc //
	wg         sync.WaitGroup     // every background goroutine
	// slots holds one token per job handed to a worker and not yet
	// finished: readers and the reclaimer take a token for every entry
	// they hand over, so no more jobs are read than workers are free to
	// start at once (a job waiting in a local queue would age towards its
	// visibility timeout).
	slots   chan struct{}
	work    chan delivery // entries read or reclaimed, for the workers
	crashed atomic.Bool   // test hook: behave as if the process died
	// stopSweeper stops the idle sweeper of the agent status (see
	// agentstatus.go), which removes the members still waiting; nil
	// before Start.
	stopSweeper func()

	// afterRecord, when set (tests), runs after a step's result was
	// recorded and before its callbacks are sent.
	afterRecord func(planID string, step int)
}

// New returns an engine. cfg's zero fields take their defaults (see
// Config); rdb, sessions and agents are required; a nil logger discards.
// When sessions also implements Router (and SessionAuthorizer), the engine
// uses it for agent messages (and authorisation).
func New(cfg Config, rdb redis.UniversalClient, sessions Sessions, agents AgentCatalog, logger *slog.Logger) (*Engine, error) {
	if rdb == nil || sessions == nil || agents == nil {
		return nil, errors.New("orchestration: New needs a Redis client, a Sessions and an AgentCatalog")
	}
	cfg.fill()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		cfg: cfg, rdb: rdb, sessions: sessions, agents: agents,
		log:  logger.With("component", "orchestration", "node", cfg.NodeID),
		keys: newKeys(cfg.Prefix, cfg.Partitions), sc: newScripts(), msc: newMessageScripts(),
	}
	e.authz, _ = sessions.(SessionAuthorizer)
	e.dirs, _ = sessions.(SessionDirectories)
	e.router, _ = sessions.(Router)
	return e, nil
}

// Config returns the effective configuration (defaults filled in).
func (e *Engine) Config() Config { return e.cfg }

// Stats returns this node's counters.
func (e *Engine) Stats() Stats {
	s := &e.stats
	return Stats{StepsStarted: s.started.Load(), StepsSucceeded: s.succeeded.Load(), StepsFailed: s.failed.Load(),
		Retries: s.retries.Load(), Reclaimed: s.reclaimed.Load(), DeadLettered: s.dead.Load(),
		Released: s.released.Load(), Duplicates: s.dups.Load(),
		MessagesAnswered: s.answered.Load(), MessagesFailed: s.unanswered.Load()}
}

// Start creates the job streams' consumer groups if needed and starts
// cfg.Workers workers, the readers of every partition's stream, the
// reclaimer and the scheduler (none of them when Workers is 0). ctx's
// values are kept for Redis calls; its cancellation is ignored: stop the
// engine with Shutdown. Start may be called once.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.started {
		return errors.New("orchestration: Start called twice")
	}
	if err := e.ensureGroup(ctx, -1); err != nil {
		return err
	}
	e.started = true
	e.base = context.WithoutCancel(ctx)
	e.takeCtx, e.stopTaking = context.WithCancel(e.base)
	e.runCtx, e.stopRun = context.WithCancel(e.base)
	e.startIdleSweeper() // even without workers: StreamAgentMessage calls agents here
	e.wg.Go(func() { e.catalogLoop(e.takeCtx.Done()) })
	if e.cfg.Workers == 0 {
		return nil
	}
	e.slots = make(chan struct{}, e.cfg.Workers)
	e.work = make(chan delivery, e.cfg.Workers)
	for range e.cfg.Workers {
		e.wg.Go(e.workerLoop)
	}
	// The producers (a reader per partition and the reclaimer) close the
	// work channel when they have all stopped, so the workers start every
	// entry already read before they exit.
	var producers sync.WaitGroup
	// Readers per partition: a partition's share of the workers, so
	// arrivals are taken by parallel blocked reads (as if every worker
	// read for itself) while a backlog is read in batches.
	for p := range e.keys.parts {
		for range max(1, e.cfg.Workers/len(e.keys.parts)) {
			producers.Go(func() { e.readLoop(p) })
		}
	}
	producers.Go(e.reclaimLoop)
	e.wg.Go(func() { producers.Wait(); close(e.work) })
	e.wg.Go(e.scheduleLoop)
	e.log.Info("orchestration engine started", "workers", e.cfg.Workers, "partitions", len(e.keys.parts))
	return nil
}

// ensureGroup creates the job streams and their consumer groups (p < 0:
// every partition's). A group starts at its stream's beginning so jobs
// added before any worker existed are not missed.
func (e *Engine) ensureGroup(ctx context.Context, p int) error {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	for i, pk := range e.keys.parts {
		if p >= 0 && i != p {
			continue
		}
		err := e.rdb.XGroupCreateMkStream(ctx, pk.jobs, groupName, "0").Err()
		if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
			return fmt.Errorf("orchestration: create consumer group of %s: %w", pk.jobs, err)
		}
	}
	return nil
}

// Shutdown stops the engine in this order: (1) the readers stop reading
// the job streams (a reader blocked on one notices within
// Config.BlockTimeout), the reclaimer and the scheduler stop, and the
// workers start the entries already read, then take no more; (2) running
// steps may finish and
// send their callbacks until ctx is done; (3) if ctx ends first, the steps
// still running are cancelled and their jobs released — put back on the
// stream, attempt not counted — so another node takes them at once;
// (4) this node's agents it no longer serves leave the agents' running
// sets (see AgentIdleAfter); (5) Shutdown returns once every goroutine has
// exited: ctx.Err() if jobs had to be released, else nil.
func (e *Engine) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	if !e.started || e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	e.mu.Unlock()
	e.stopTaking()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		e.stopRun()
		e.stopSweeper()
		e.log.Info("orchestration engine stopped")
		return nil
	case <-ctx.Done():
		e.stopRun()
		<-done
		e.stopSweeper()
		e.log.Warn("orchestration engine stopped; running jobs were released", "cause", ctx.Err())
		return ctx.Err()
	}
}

// crash makes the engine behave as if its process died: loops exit, running
// steps stop without writing anything (no record, no ack, no release). It
// is a test hook for crash recovery.
func (e *Engine) crash() {
	e.crashed.Store(true)
	e.mu.Lock()
	e.stopped = true
	e.mu.Unlock()
	e.stopTaking()
	e.stopRun()
	e.wg.Wait()
	if e.stopSweeper != nil {
		e.stopSweeper()
	}
}

// op returns a context for one Redis operation made on the engine's own
// behalf (not bound to a hub call).
func (e *Engine) op() (context.Context, context.CancelFunc) {
	base := e.base
	if base == nil {
		base = context.Background()
	}
	return context.WithTimeout(base, e.cfg.OpTimeout)
}

// nowMs is the clock in Unix milliseconds, the unit of every time kept in
// Redis.
func (e *Engine) nowMs() int64 { return e.cfg.Now().UnixMilli() }

// sleep waits d or until ctx is done; it reports whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// job is one entry of the job stream: run one step of one plan. (Agent
// message jobs carry kind "agent-message" and go to handleMessage.)
type job struct {
	part    int // the partition whose stream holds the entry
	msgID   string
	planID  string
	step    int
	attempt int // as enqueued; the plan hash keeps the authoritative count
	// chained: the delivery went on to this step from one it finished (see
	// notify); the entry is the first step's, so its age is no queue wait.
	chained bool
}

func parseJob(d delivery) (job, error) {
	m := d.m
	j := job{part: d.part, msgID: m.ID}
	j.planID, _ = m.Values["plan"].(string)
	s, _ := m.Values["step"].(string)
	a, _ := m.Values["attempt"].(string)
	var err error
	if j.step, err = strconv.Atoi(s); err != nil || j.planID == "" {
		return j, fmt.Errorf("malformed job %s: %v", m.ID, m.Values)
	}
	j.attempt, _ = strconv.Atoi(a)
	return j, nil
}

// delivery is one job stream entry handed to a worker, with the partition
// it was read from.
type delivery struct {
	part int
	m    redis.XMessage
}

// readBatch bounds the entries one read takes.
const readBatch = 64

// workerLoop starts the jobs the readers and the reclaimer hand over until
// they have all stopped.
func (e *Engine) workerLoop() {
	for d := range e.work {
		e.handle(d)
		<-e.slots
	}
}

// takeSlots takes one worker slot, waiting for it (false: the engine is
// stopping), then up to max-1 more that are free now; it returns how many
// it took.
func (e *Engine) takeSlots(max int) (int, bool) {
	if e.takeCtx.Err() != nil { // a select would pick a free slot half the time
		return 0, false
	}
	select {
	case e.slots <- struct{}{}:
	case <-e.takeCtx.Done():
		return 0, false
	}
	n := 1
	for n < max {
		select {
		case e.slots <- struct{}{}:
			n++
		default:
			return n, true
		}
	}
	return n, true
}

// giveSlots returns n unused slots.
func (e *Engine) giveSlots(n int) {
	for range n {
		<-e.slots
	}
}

// readLoop reads partition p's job stream for this node's workers until
// Shutdown; each partition has several (see Start), so a read in flight
// never holds up the next. A read blocks until the stream has an entry and
// takes as many as it holds worker slots for: one while reads come back
// short (an idle or lightly loaded stream: blocked readers keep no more
// slots than they can use, so the other partitions' readers and the
// reclaimer get the rest), doubling while they come back full (a backlog:
// one round trip reads a batch), up to the partition's share of the
// workers.
func (e *Engine) readLoop(p int) {
	stream := e.keys.parts[p].jobs
	share := min(readBatch, max(1, e.cfg.Workers/len(e.keys.parts)))
	want := 1
	for {
		n, ok := e.takeSlots(want)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(e.base, e.cfg.BlockTimeout+e.cfg.OpTimeout)
		streams, err := e.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: groupName, Consumer: e.cfg.NodeID,
			Streams: []string{stream, ">"}, Count: int64(n), Block: e.cfg.BlockTimeout}).Result()
		cancel()
		got := 0
		if err == nil && !e.crashed.Load() {
			for _, s := range streams {
				for _, m := range s.Messages {
					e.work <- delivery{part: p, m: m} // never blocks: every entry holds a slot
					got++
				}
			}
		}
		e.giveSlots(n - got)
		if got == n {
			want = min(2*n, share)
		} else {
			want = 1
		}
		switch {
		case err == nil, errors.Is(err, redis.Nil):
		case e.takeCtx.Err() != nil:
			return
		default:
			e.log.Warn("read job stream", "stream", stream, "err", err)
			if strings.Contains(err.Error(), "NOGROUP") {
				if err := e.ensureGroup(e.base, p); err != nil {
					e.log.Warn("recreate consumer group", "err", err)
				}
			}
			sleep(e.takeCtx, 200*time.Millisecond)
		}
	}
}

// handle processes one delivery.
func (e *Engine) handle(d delivery) {
	if e.crashed.Load() {
		return
	}
	if jobKindOf(d.m.Values) == JobKindAgentMessage {
		e.handleMessage(d)
		return
	}
	j, err := parseJob(d)
	if err != nil {
		e.log.Error("dropping job", "err", err)
		e.ack(j)
		return
	}
	owner := e.newOwner()
	ctx, cancel := e.op()
	res, err := e.sc.start.Run(ctx, e.rdb, []string{e.keys.plan(j.planID)},
		j.step, owner, e.nowMs(), e.cfg.MaxAttempts).StringSlice()
	cancel()
	if err != nil {
		// Left pending: the reclaimer retries it after the visibility timeout.
		e.log.Warn("start step", "plan", j.planID, "step", j.step, "err", err)
		return
	}
	for next := (&startResult{j: j, owner: owner, res: res}); next != nil && !e.crashed.Load(); {
		next = e.follow(*next)
	}
}

// startResult is what the start of a step answered (the start script, or
// a notify that went on with a released step) for a delivery.
type startResult struct {
	j     job
	owner string // this delivery's ownership token
	res   []string
}

// follow does what a start answered; it returns the next step the same
// delivery goes on with, if any.
func (e *Engine) follow(s startResult) *startResult {
	j, res := s.j, s.res
	if len(res) == 0 {
		return nil
	}
	switch res[0] {
	case "run":
		j.step = atoi(res, 1) // the start followed the job's chain to this step
		return e.run(j, s.owner, res)
	case "renotify":
		j.step = atoi(res, 1)
		return e.renotify(j)
	case "exhausted":
		j.step = atoi(res, 3)
		return e.exhausted(j, s.owner, res)
	default: // gone, dup, stale: nothing left to do for this delivery
		e.stats.dups.Add(1)
		e.ack(j)
		return nil
	}
}

// newOwner is a fresh ownership token for one delivery of a step.
func (e *Engine) newOwner() string { return e.cfg.NodeID + "/" + uuid.NewString() }

// ack acknowledges and deletes a job's stream entry.
func (e *Engine) ack(j job) {
	if j.msgID == "" || e.crashed.Load() {
		return
	}
	ctx, cancel := e.op()
	defer cancel()
	_, err := e.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.XAck(ctx, e.keys.parts[j.part].jobs, groupName, j.msgID)
		p.XDel(ctx, e.keys.parts[j.part].jobs, j.msgID)
		return nil
	})
	if err != nil {
		e.log.Warn("ack job", "plan", j.planID, "step", j.step, "err", err)
	}
}

// runInfo is what the start script returned for a step to run.
type runInfo struct {
	attempts      int
	first         bool
	def           contract.OrchestrationStep
	startedAtMs   int64
	planStartedMs int64
	terminal      int64
	total         int64
	session       string
	caller        Caller
	strategy      contract.OrchestrationStrategy
	goal          string
	agents        []string // the plan's available agents
	maxSteps      int
	plan          *contract.OrchestrationPlan // only for Adaptive's analysis step
	previous      map[string]string
	workDir       string          // the session's working directory
	startSent     <-chan struct{} // closed once the start progress was sent (nil: none to send)
}

func parseRun(res []string) (runInfo, error) {
	const fixed = 18
	if len(res) < fixed {
		return runInfo{}, fmt.Errorf("start script returned %d values", len(res))
	}
	res = res[1:] // the step's order, read by follow
	var r runInfo
	r.attempts, _ = strconv.Atoi(res[1])
	r.first = res[2] == "1"
	if err := json.Unmarshal([]byte(res[3]), &r.def); err != nil {
		return r, fmt.Errorf("decode step: %w", err)
	}
	r.startedAtMs, _ = strconv.ParseInt(res[4], 10, 64)
	r.planStartedMs, _ = strconv.ParseInt(res[5], 10, 64)
	r.terminal, _ = strconv.ParseInt(res[6], 10, 64)
	r.total, _ = strconv.ParseInt(res[7], 10, 64)
	r.session = res[8]
	r.caller = Caller{ConnectionID: res[9], User: res[10]}
	s, _ := strconv.Atoi(res[11])
	r.strategy = contract.OrchestrationStrategy(s)
	r.goal = res[12]
	if err := json.Unmarshal([]byte(res[13]), &r.agents); err != nil {
		return r, fmt.Errorf("decode agents: %w", err)
	}
	r.maxSteps, _ = strconv.Atoi(res[14])
	if res[15] != "" {
		r.plan = new(contract.OrchestrationPlan)
		if err := json.Unmarshal([]byte(res[15]), r.plan); err != nil {
			return r, fmt.Errorf("decode plan: %w", err)
		}
	}
	r.workDir = res[16]
	r.previous = make(map[string]string, (len(res)-fixed+1)/2)
	for i := fixed - 1; i+1 < len(res); i += 2 {
		r.previous[res[i]] = res[i+1]
	}
	return r, nil
}

// outcome is how a step attempt ended.
type outcome struct {
	ok        bool
	output    string
	data      contract.Map
	err       string // for failures: the step's error text
	retryable bool
	dead      bool // the job exhausted its attempts: dead-letter it
}

// run runs one attempt of a step this delivery now owns.
func (e *Engine) run(j job, owner string, res []string) *startResult {
	r, err := parseRun(res)
	if err != nil {
		e.log.Error("bad step", "plan", j.planID, "step", j.step, "err", err)
		return e.record(j, owner, r, outcome{err: "Step could not be decoded"}, nil)
	}
	e.stats.started.Add(1)
	if j.chained {
		e.observeStart(JobKindStep, "")
	} else {
		e.observeStart(JobKindStep, j.msgID)
	}
	if r.first {
		// The start progress goes out while the agent runs (an Emit is a
		// Redis round trip or more); the step's other callbacks wait for it,
		// so they still follow it.
		started := make(chan struct{})
		prog := e.progress(j.planID, r.def, r.total, percent(r.terminal, r.total), r.planStartedMs)
		go func() {
			defer close(started)
			ctx, cancel := e.op()
			defer cancel()
			e.emit(ctx, r.session, r.caller, contract.TargetOrchestrationProgress, prog)
		}()
		defer func() { <-started }() // a step that ends without callbacks still owns it
		r.startSent = started
	}

	agentCtx, cancelAgent := context.WithCancel(e.runCtx)
	defer cancelAgent()
	ka := e.startKeepalive(j, owner, cancelAgent)
	defer ka.stop()

	timeout := time.Duration(r.def.Timeout)
	if timeout <= 0 {
		timeout = timingFor(r.strategy, r.def.Order).timeout
	}
	// The step is a call of its agent like an answer to a message: it
	// counts for the agent's status (Busy while it runs). It ends with
	// the step's outcome below, or without one (retry, release, lost,
	// cancelled) by this deferred end.
	call := e.beginCall(r.def.AgentID, timeout+e.cfg.VisibilityTimeout)
	defer call.end(callNone)
	stepCtx, cancelStep := context.WithTimeout(agentCtx, timeout)
	t0 := time.Now()
	out, chunks, runErr := e.callAgent(stepCtx, j, r)
	elapsed := time.Since(t0)
	e.observeRun(JobKindStep, elapsed)
	timedOut := errors.Is(stepCtx.Err(), context.DeadlineExceeded) && agentCtx.Err() == nil
	cancelStep()
	ka.afterRun()

	if e.crashed.Load() {
		return nil
	}
	switch ka.verdict() {
	case "lost": // another delivery took the step over; it is theirs to finish
		e.stats.dups.Add(1)
		return nil
	case "stop", "gone": // cancelled, timed out or finished meanwhile: already recorded
		e.ack(j)
		return nil
	}
	if e.runCtx.Err() != nil && (runErr != nil || timedOut) { // forced shutdown cut the step short
		e.release(j, owner)
		return nil
	}

	o := outcome{ok: runErr == nil && !timedOut, output: out.Output, data: contract.Map{}}
	switch {
	case timedOut:
		o.err = fmt.Sprintf("Step %d timed out after %v", r.def.Order, timeout)
	case runErr != nil:
		o.err = fmt.Sprintf("Step %d failed: %v", r.def.Order, runErr)
		o.retryable = !IsPermanent(runErr)
		o.output = ""
	}
	if !o.ok && o.retryable {
		if r.attempts < e.cfg.MaxAttempts {
			e.retry(j, owner, r, o.err)
			return nil
		}
		o.dead = true
		o.err = fmt.Sprintf("Step %d failed after %d attempts: %v", r.def.Order, r.attempts, runErr)
	}
	if o.ok {
		call.end(callReady)
	} else {
		call.end(callError)
	}
	for k, v := range out.OutputData {
		o.data[k] = v
	}
	o.data["stepOrder"] = r.def.Order
	o.data["agentId"] = r.def.AgentID
	o.data["task"] = r.def.Task
	o.data["timestamp"] = contract.DateTime(e.cfg.Now())
	o.data["attempt"] = r.attempts
	o.data["chunks"] = chunks
	result := contract.StepResult{
		StepOrder: r.def.Order, StepName: stepName(r.def), AgentID: r.def.AgentID, Success: o.ok,
		Output: o.output, Error: o.err, ExecutionTime: contract.TimeSpan(elapsed),
		StartTime: contract.DateTime(time.UnixMilli(r.startedAtMs).UTC()), OutputData: o.data,
	}
	var repl *contract.OrchestrationPlan
	if o.ok && r.strategy == contract.StrategyAdaptive && r.def.Order == 1 && r.plan != nil {
		repl = e.adapt(j, r, &result)
	}
	return e.record(j, owner, r, o, &recordArgs{result: result, replaced: repl})
}

// callAgent runs the step's agent; chunks counts what it streamed.
func (e *Engine) callAgent(ctx context.Context, j job, r runInfo) (res AgentResult, chunks int, err error) {
	agent, _, ok := e.agents.Lookup(r.def.AgentID)
	if !ok {
		return res, 0, Permanent(fmt.Errorf("agent %s not found", r.def.AgentID))
	}
	defer func(start time.Time) { e.observeAgent(ctx, agent, start, err) }(time.Now())
	input := contract.Map{}
	for k, v := range r.def.Input {
		input[k] = v
	}
	prev := map[string]any{}
	for k, v := range r.previous {
		prev[k] = v
	}
	input["goal"] = r.goal
	input["previousOutputs"] = prev
	req := AgentRequest{
		AgentID: r.def.AgentID, SessionID: r.session, PlanID: j.planID, Strategy: r.strategy,
		StepOrder: r.def.Order, Attempt: r.attempts, Task: r.def.Task, Goal: r.goal,
		PreviousOutputs: r.previous, Input: input, AvailableAgents: r.agents, WorkingDirectory: r.workDir,
	}
	// A panicking agent fails its step instead of taking the node down.
	defer func() {
		if p := recover(); p != nil {
			e.log.Error("agent panicked", "agent", r.def.AgentID, "plan", j.planID, "step", j.step, "panic", p)
			err = Permanent(fmt.Errorf("agent %s crashed", r.def.AgentID))
		}
	}()
	// Streaming chunks to the session is the agents' layer's job; here they
	// are counted so results show what an agent streamed.
	res, err = agent.Run(ctx, req, func(string) { chunks++ })
	return res, chunks, err
}

// adapt applies Adaptive's rule after a successful analysis step: a JSON
// plan in its output replaces the template's remaining steps. It returns
// the new plan, or nil when the template stays; the choice is noted in
// the result's outputData.
func (e *Engine) adapt(j job, r runInfo, result *contract.StepResult) *contract.OrchestrationPlan {
	if r.maxSteps < 2 {
		result.OutputData["adaptivePlan"] = "template"
		result.OutputData["adaptiveReason"] = "maxSteps leaves no room for more steps"
		return nil
	}
	var stepTimeout time.Duration
	if len(r.plan.Steps) > 1 && r.plan.Steps[1].Timeout != contract.TimeSpan(timingFor(contract.StrategyAdaptive, 2).timeout) {
		stepTimeout = time.Duration(r.plan.Steps[1].Timeout) // keep an override the template carried
	}
	steps, reason := adaptiveReplacement(result.Output, *r.plan, r.agents, r.maxSteps, stepTimeout)
	if steps == nil {
		e.log.Info("adaptive plan kept its template", "plan", j.planID, "reason", reason)
		result.OutputData["adaptivePlan"] = "template"
		result.OutputData["adaptiveReason"] = reason
		return nil
	}
	plan := *r.plan
	plan.Steps = steps
	plan.RequiredAgents = requiredAgents(steps)
	result.OutputData["adaptivePlan"] = "replaced"
	result.OutputData["adaptiveSteps"] = len(steps)
	return &plan
}

// recordArgs are the optional parts of a record.
type recordArgs struct {
	result   contract.StepResult
	replaced *contract.OrchestrationPlan
}

// record stores a step's outcome (once) and, when this delivery recorded
// it, sends the step's callbacks, marks them sent and acknowledges the job.
func (e *Engine) record(j job, owner string, r runInfo, o outcome, a *recordArgs) *startResult {
	if a == nil {
		a = &recordArgs{result: contract.StepResult{StepOrder: j.step, StepName: stepName(r.def),
			AgentID: r.def.AgentID, Error: o.err, OutputData: contract.Map{}}}
	}
	resultJSON, err := jsonString(a.result)
	if err != nil {
		e.log.Error("encode step result", "plan", j.planID, "step", j.step, "err", err)
		return nil
	}
	var repl []any
	if a.replaced != nil {
		if repl, err = replacementFields(*a.replaced); err != nil {
			e.log.Error("adaptive replacement", "plan", j.planID, "err", err)
			a.replaced, repl = nil, nil
		}
	}
	okFlag, deadFlag := "0", "0"
	if o.ok {
		okFlag = "1"
	}
	if o.dead {
		deadFlag = "1"
	}
	reason := fmt.Sprintf("Step %d (%s): %s", j.step, r.def.AgentID, o.err)
	args := append([]any{j.step, owner, e.nowMs(), okFlag, resultJSON, o.output, deadFlag, o.err,
		j.planID, e.cfg.PlanRetention.Milliseconds(), reason, r.attempts, len(repl) / 2}, repl...)
	ctx, cancel := e.op()
	res, err := e.sc.record.Run(ctx, e.rdb, []string{e.keys.plan(j.planID), e.keys.parts[j.part].dead, e.keys.parts[j.part].deadlines}, args...).StringSlice()
	cancel()
	if err != nil {
		e.log.Warn("record step", "plan", j.planID, "step", j.step, "err", err)
		return nil // left pending: redelivered after the visibility timeout
	}
	switch res[0] {
	case "recorded":
	case "lost":
		e.stats.dups.Add(1)
		return nil
	default: // gone, dup, stale
		e.stats.dups.Add(1)
		e.ack(j)
		return nil
	}
	if o.ok {
		e.stats.succeeded.Add(1)
	} else {
		e.stats.failed.Add(1)
	}
	switch {
	case o.ok:
		e.observeJobs(JobKindStep, JobSucceeded, 1)
	case o.dead:
		e.observeJobs(JobKindStep, JobDeadLettered, 1)
	default:
		e.observeJobs(JobKindStep, JobFailed, 1)
	}
	if o.dead {
		e.stats.dead.Add(1)
		e.log.Warn("job dead-lettered", "plan", j.planID, "step", j.step, "error", o.err)
	}
	terminal, _ := strconv.ParseInt(res[1], 10, 64)
	total, _ := strconv.ParseInt(res[2], 10, 64)
	def := r.def
	if a.replaced != nil {
		def.DependsOn = a.replaced.Steps[0].DependsOn
	}
	if e.afterRecord != nil {
		e.afterRecord(j.planID, j.step)
	}
	if r.startSent != nil {
		<-r.startSent
	}
	if e.crashed.Load() {
		return nil
	}
	// The callbacks and the notification get their own deadlines: a slow
	// Emit must not leave the notification without time (the job would be
	// redelivered and its callbacks sent twice).
	ctx, cancel = e.op()
	e.emitStepEnd(ctx, stepEnd{planID: j.planID, session: r.session, caller: r.caller, step: def,
		result: a.result, terminal: terminal, total: total, finishedPlan: res[3] != "",
		planStartedMs: r.planStartedMs, replaced: a.replaced})
	cancel()
	if e.crashed.Load() {
		return nil
	}
	ctx, cancel = e.op()
	defer cancel()
	next, err := e.notify(ctx, j, true)
	if err != nil {
		e.log.Warn("notify", "err", err)
	}
	return next
}

// replacementFields are the plan hash fields that install an Adaptive
// replacement (steps 2.. and the step graph, plan JSON, total).
func replacementFields(plan contract.OrchestrationPlan) ([]any, error) {
	g, err := graphOf(plan.Steps)
	if err != nil {
		return nil, err
	}
	fields, err := stepFields(plan.Steps[1:], g)
	if err != nil {
		return nil, err
	}
	planJSON, err := jsonString(plan)
	if err != nil {
		return nil, err
	}
	fields = append(fields, stepPrefix(1)+"next", joinInts(g.next[1]), "plan", planJSON, "total", len(plan.Steps))
	for i, f := range fields { // the script takes strings
		switch v := f.(type) {
		case []byte:
			fields[i] = string(v)
		case int:
			fields[i] = strconv.Itoa(v)
		}
	}
	return fields, nil
}

// exhausted fails a step whose starts exceeded MaxAttempts (its workers
// kept dying): the job is dead-lettered.
func (e *Engine) exhausted(j job, owner string, res []string) *startResult {
	ctx, cancel := e.op()
	h, err := e.rdb.HGetAll(ctx, e.keys.plan(j.planID)).Result()
	cancel()
	if err != nil {
		e.log.Warn("load plan", "plan", j.planID, "err", err)
		return nil
	}
	p, err := decodePlanHash(j.planID, h)
	if err != nil {
		e.log.Error("decode plan", "err", err)
		return nil
	}
	s, _ := p.step(j.step)
	n, _ := strconv.Atoi(res[1])
	msg := fmt.Sprintf("Step %d abandoned after %d attempts (its worker stopped responding)", j.step, n)
	if len(res) > 2 && res[2] != "" {
		msg = fmt.Sprintf("Step %d failed after %d attempts: %s", j.step, n, res[2])
	}
	r := runInfo{attempts: n, def: s, session: p.session, caller: p.caller,
		planStartedMs: p.int("started"), startedAtMs: p.int(stepPrefix(j.step) + "startedAt")}
	result := contract.StepResult{StepOrder: j.step, StepName: stepName(s), AgentID: s.AgentID, Error: msg,
		StartTime: contract.DateTime(time.UnixMilli(r.startedAtMs).UTC()), OutputData: contract.Map{}}
	e.noteOutcome(s.AgentID, callError)
	return e.record(j, owner, r, outcome{err: msg, dead: true}, &recordArgs{result: result})
}

// retry parks the step's next attempt in the delayed set for its back-off.
func (e *Engine) retry(j job, owner string, r runInfo, errText string) {
	ctx, cancel := e.op()
	defer cancel()
	due := e.cfg.Now().Add(e.cfg.backoff(r.attempts)).UnixMilli()
	member := fmt.Sprintf("%s|%d|%d", j.planID, j.step, r.attempts+1)
	res, err := e.sc.retry.Run(ctx, e.rdb, []string{e.keys.plan(j.planID), e.keys.parts[j.part].jobs, e.keys.parts[j.part].delayed},
		j.step, owner, j.msgID, groupName, due, member, errText).Text()
	if err != nil {
		e.log.Warn("schedule retry", "plan", j.planID, "step", j.step, "err", err)
		return
	}
	if res == "ok" {
		e.stats.retries.Add(1)
		e.observeJobs(JobKindStep, JobRetried, 1)
		e.log.Info("step retry scheduled", "plan", j.planID, "step", j.step, "attempt", r.attempts+1, "error", errText)
	}
}

// release gives a running job back at shutdown.
func (e *Engine) release(j job, owner string) {
	ctx, cancel := e.op()
	defer cancel()
	res, err := e.sc.release.Run(ctx, e.rdb, []string{e.keys.plan(j.planID), e.keys.parts[j.part].jobs},
		j.step, owner, j.msgID, groupName, j.planID, j.attempt).Text()
	if err != nil {
		e.log.Warn("release job", "plan", j.planID, "step", j.step, "err", err)
		return
	}
	if res == "ok" {
		e.stats.released.Add(1)
		e.observeJobs(JobKindStep, JobReleased, 1)
		e.observeJobs(JobKindStep, JobEnqueued, 1) // the release script re-adds it
	}
}

// renotify sends the callbacks of a step whose recording delivery died
// before marking them sent.
func (e *Engine) renotify(j job) *startResult {
	ctx, cancel := e.op()
	defer cancel()
	h, err := e.rdb.HGetAll(ctx, e.keys.plan(j.planID)).Result()
	if err != nil || len(h) == 0 {
		e.ack(j)
		return nil
	}
	p, err := decodePlanHash(j.planID, h)
	if err != nil {
		e.log.Error("decode plan", "err", err)
		e.ack(j)
		return nil
	}
	s, _ := p.step(j.step)
	res, _ := p.result(j.step)
	e.emitStepEnd(ctx, stepEnd{planID: j.planID, session: p.session, caller: p.caller, step: s, result: res,
		terminal: p.int("terminal"), total: p.int("total"), finishedPlan: p.int("finishedBy") == int64(j.step),
		planStartedMs: p.int("started")})
	next, err := e.notify(ctx, j, true)
	if err != nil {
		e.log.Warn("notify", "err", err)
	}
	return next
}

func jsonString(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode %T: %w", v, err)
	}
	return string(b), nil
}

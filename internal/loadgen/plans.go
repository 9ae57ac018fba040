package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

const (
	methodCreatePlan             = "CreateOrchestrationPlan"
	methodExecutePlan            = "ExecutePlan"
	targetOrchestrationProgress  = "OrchestrationProgress"
	targetStepCompleted          = "StepCompleted"
	targetOrchestrationCompleted = "OrchestrationCompleted"
)

// createPlanRequest mirrors the hub's CreatePlanRequest.
type createPlanRequest struct {
	SessionID         string   `json:"sessionId"`
	Goal              string   `json:"goal"`
	Strategy          int      `json:"strategy"`
	AvailableAgentIDs []string `json:"availableAgentIds"`
	MaxSteps          int      `json:"maxSteps"`
}

// planWait is a plan between ExecutePlan and OrchestrationCompleted.
type planWait struct {
	steps atomic.Int64
	done  chan bool // success; buffered
}

// planDriver is one connection with its own session, driving any number
// of plans; their events are told apart by planId.
type planDriver struct {
	idx int
	job *connectJob
	sid string

	mu    sync.Mutex
	plans map[string]*planWait
}

func (d *planDriver) lookup(id string, remove bool) *planWait {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.plans[id]
	if remove {
		delete(d.plans, id)
	}
	return p
}

type plansRun struct {
	r                           *runner
	agents                      []string
	create, plan                *Histogram
	started, skipped, completed atomic.Int64
	succeeded, failed, timedOut atomic.Int64
	steps, progress, inFlight   atomic.Int64
	drivers                     []*planDriver
	nextGoal                    atomic.Uint64
}

var planIDKey = []byte(`"planId":"`)

// planID finds the planId of an event record. It is the event's last
// top-level field, so the last occurrence is the right one even when a
// step's input or output happens to mention a planId.
func planID(rec []byte) string {
	i := bytes.LastIndex(rec, planIDKey)
	if i < 0 {
		return ""
	}
	rest := rec[i+len(planIDKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

// onEvent handles plan callbacks on the driver's read goroutine.
func (pr *plansRun) onEvent(d *planDriver) invocationHandler {
	return func(c *conn, target, rec []byte) {
		switch string(target) {
		case targetOrchestrationProgress:
			pr.progress.Add(1)
		case targetStepCompleted:
			pr.steps.Add(1)
			if p := d.lookup(planID(rec), false); p != nil {
				p.steps.Add(1)
			}
		case targetOrchestrationCompleted:
			// Once per plan: a full decode is affordable here.
			var res struct {
				Success bool   `json:"success"`
				PlanID  string `json:"planId"`
			}
			m, err := protocol.DecodeMessage(rec)
			if err != nil || len(m.Arguments) == 0 || json.Unmarshal(m.Arguments[0], &res) != nil {
				pr.r.env.errs.add("plans: bad OrchestrationCompleted", err)
				return
			}
			if p := d.lookup(res.PlanID, true); p != nil {
				p.done <- res.Success
			}
		case targetReceiveError:
			pr.r.env.errs.add("plans: ReceiveError", fmt.Errorf("%.200s", rec))
		}
	}
}

// runPlan creates and executes one plan on d and waits for its end.
func (pr *plansRun) runPlan(ctx context.Context, d *planDriver) {
	cfg := &pr.r.cfg
	env := pr.r.env
	pr.started.Add(1)
	pr.r.sent.Add(1)
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	t0 := env.now()
	var plan struct {
		ID    string            `json:"id"`
		Steps []json.RawMessage `json:"steps"`
	}
	req := createPlanRequest{SessionID: d.sid, Goal: fmt.Sprintf("hubfarm load: plan %d", pr.nextGoal.Add(1)),
		AvailableAgentIDs: pr.agents, MaxSteps: 5}
	if err := d.job.conn.invokeJSON(ctx, &plan, methodCreatePlan, req); err != nil {
		pr.failed.Add(1)
		env.errs.add(classify("create plan", err), err)
		return
	}
	pr.create.Record(d.idx, time.Duration(env.now()-t0))
	p := &planWait{done: make(chan bool, 1)}
	d.mu.Lock()
	d.plans[plan.ID] = p
	d.mu.Unlock()
	t1 := env.now()
	if err := d.job.conn.invokeJSON(ctx, nil, methodExecutePlan, plan.ID); err != nil {
		d.lookup(plan.ID, true)
		pr.failed.Add(1)
		env.errs.add(classify("execute plan", err), err)
		return
	}
	select {
	case ok := <-p.done:
		pr.plan.Record(d.idx, time.Duration(env.now()-t1))
		pr.completed.Add(1)
		pr.r.recv.Add(1)
		if ok {
			pr.succeeded.Add(1)
		} else {
			pr.failed.Add(1)
			env.errs.add("plans: completed unsuccessfully", fmt.Errorf("plan %s reported success=false", plan.ID))
		}
	case <-ctx.Done():
		d.lookup(plan.ID, true)
		pr.timedOut.Add(1)
		env.errs.add("plans: timeout", fmt.Errorf("plan %s: no OrchestrationCompleted within %s", plan.ID, cfg.Timeout))
	case <-d.job.conn.done:
		pr.timedOut.Add(1)
		env.errs.add("plans: unfinished at close", fmt.Errorf("plan %s: connection closed before OrchestrationCompleted", plan.ID))
	}
}

// runPlans: plans at a rate (open loop) or at a fixed concurrency.
func (r *runner) runPlans(ctx context.Context, rep *Report) error {
	cfg := &r.cfg
	r.labels = [2]string{"started", "completed"}
	pr := &plansRun{r: r, create: NewHistogram(), plan: NewHistogram()}
	for _, a := range strings.Split(cfg.Agent, ",") {
		if a = strings.TrimSpace(a); a != "" {
			pr.agents = append(pr.agents, a)
		}
	}
	var jobs []*connectJob
	for i := 0; i < cfg.Sessions; i++ {
		d := &planDriver{idx: i, plans: map[string]*planWait{}}
		d.job = &connectJob{idx: i, url: cfg.URLs[i%len(cfg.URLs)], user: r.user(i), h: handlers{inv: pr.onEvent(d)},
			setup: func(ctx context.Context, c *conn) error {
				sid, err := createSession(ctx, c, fmt.Sprintf("%s-plans%d", cfg.UserPrefix, i), pr.agents)
				d.sid = sid
				return err
			}}
		pr.drivers = append(pr.drivers, d)
		jobs = append(jobs, d.job)
	}
	r.connectAll(ctx, jobs, &rep.Connect)
	if pr.drivers = connected(pr.drivers, func(d *planDriver) *connectJob { return d.job }); len(pr.drivers) == 0 {
		return fmt.Errorf("no connection succeeded: %s", firstError(r))
	}

	r.setPhase("measure")
	r.progressHist.Store(pr.plan)
	sc := r.startScrape(ctx)
	w := startWindow()
	end := time.Now().Add(cfg.Duration)
	var wg sync.WaitGroup
	if cfg.Rate > 0 {
		period := time.Duration(float64(time.Second) / cfg.Rate)
		start := time.Now()
		for k := 0; ; k++ {
			due := start.Add(time.Duration(k) * period)
			if !due.Before(end) || !sleepUntil(ctx, due) {
				break
			}
			if pr.inFlight.Load() >= int64(cfg.Concurrency) {
				pr.skipped.Add(1)
				continue
			}
			d := pr.drivers[k%len(pr.drivers)]
			pr.inFlight.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer pr.inFlight.Add(-1)
				pr.runPlan(ctx, d)
			}()
		}
	} else {
		for i := 0; i < cfg.Concurrency; i++ {
			d := pr.drivers[i%len(pr.drivers)]
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && ctx.Err() == nil {
					pr.runPlan(ctx, d)
				}
			}()
		}
	}
	// The window spans the whole duration, not just up to the last start.
	sleepUntil(ctx, end)
	// Plans in flight at the end finish within their own timeout, which
	// the drain bound shortens.
	r.setPhase("drain")
	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Until(end)+cfg.Drain)
	select {
	case <-drained:
	case <-dctx.Done():
	}
	cancel()
	win := w.finish(&rep.Generator)
	r.finishScrape(ctx, sc, rep)
	r.env.closeAll() // fails what still waits
	wg.Wait()
	rep.WindowSeconds = win.Seconds()
	ps := &PlansStats{Agents: pr.agents, Sessions: len(pr.drivers), TargetRate: cfg.Rate, Concurrency: cfg.Concurrency,
		Started: pr.started.Load(), Skipped: pr.skipped.Load(), Completed: pr.completed.Load(),
		Succeeded: pr.succeeded.Load(), Failed: pr.failed.Load(), TimedOut: pr.timedOut.Load(),
		Steps: pr.steps.Load(), Progress: pr.progress.Load(),
		Create: pr.create.Snapshot().Summary(), Plan: pr.plan.Snapshot().Summary()}
	if win > 0 {
		ps.PlansPerSec = float64(ps.Completed) / win.Seconds()
		ps.StepsPerSec = float64(ps.Steps) / win.Seconds()
	}
	if ps.Completed > 0 {
		ps.StepsPerPlan = float64(ps.Steps) / float64(ps.Completed)
	}
	rep.Plans = ps
	return nil
}

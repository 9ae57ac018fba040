package orchestration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// planTrack is what the load harness sees of one plan's callbacks.
type planTrack struct {
	executed  time.Time // ExecutePlan returned
	plan      contract.OrchestrationPlan
	starts    map[int]time.Time // start progress per step
	completed map[int]time.Time // StepCompleted per step
	dupStarts int
	dupSteps  int
	results   []contract.OrchestrationResult
}

// loadTracker records callbacks of many plans cheaply.
type loadTracker struct {
	mu      sync.Mutex
	plans   map[string]*planTrack
	stray   int
	done    chan struct{}
	pending int
}

func (lt *loadTracker) track(planID string) *planTrack {
	p := lt.plans[planID]
	if p == nil {
		p = &planTrack{starts: map[int]time.Time{}, completed: map[int]time.Time{}}
		lt.plans[planID] = p
	}
	return p
}

func (lt *loadTracker) onEmit(ev event) {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	switch x := ev.Payload.(type) {
	case contract.OrchestrationProgress:
		p := lt.track(x.PlanID)
		if x.PercentComplete == 100 {
			return
		}
		if _, ok := p.starts[x.CurrentStep]; !ok {
			p.starts[x.CurrentStep] = ev.At
		} else if _, ok := p.completed[x.CurrentStep]; !ok {
			p.dupStarts++ // a second start before the step completed
		}
	case contract.StepCompletedEvent:
		p := lt.track(x.PlanID)
		if _, ok := p.completed[x.Order]; ok {
			p.dupSteps++
		}
		p.completed[x.Order] = ev.At
	case contract.OrchestrationResult:
		p := lt.track(x.PlanID)
		p.results = append(p.results, x)
		if len(p.results) == 1 {
			lt.pending--
			if lt.pending == 0 {
				close(lt.done)
			}
		}
	}
}

// loadReport is the outcome of one load run.
type loadReport struct {
	plans, steps int
	wall         time.Duration
	stepLatency  []time.Duration // runnable → StepCompleted
	runLatency   []time.Duration // start progress → StepCompleted
	problems     []string
}

func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// loadRequests cycles through the four strategies, each shaped to exactly
// five steps.
func loadRequests(session string, i int) contract.CreatePlanRequest {
	five := []string{"a1", "a2", "a3", "a4", "a5"}
	switch i % 4 {
	case 0:
		return contract.NewCreatePlanRequest(session, fmt.Sprintf("goal %d", i), contract.StrategySequential, five)
	case 1:
		return contract.NewCreatePlanRequest(session, fmt.Sprintf("goal %d", i), contract.StrategyParallel, five)
	case 2:
		return contract.NewCreatePlanRequest(session, fmt.Sprintf("goal %d", i), contract.StrategyAdaptive, five[:4])
	default:
		r := contract.NewCreatePlanRequest(session, fmt.Sprintf("goal %d", i), contract.StrategyRoundRobin, five[:2])
		r.MaxSteps = 5
		return r
	}
}

// runLoad submits n five-step plans at once from 32 submitters to the
// given nodes (round robin) and waits for all of them.
func runLoad(tb testing.TB, nodes []*Engine, sessions *fakeSessions, n int, timeout time.Duration) loadReport {
	lt := &loadTracker{plans: map[string]*planTrack{}, done: make(chan struct{}), pending: n}
	sessions.mu.Lock()
	sessions.onEmit = lt.onEmit
	sessions.noJSON = true
	sessions.events = nil
	sessions.mu.Unlock()

	ctx := context.Background()
	start := time.Now()
	work := make(chan int)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for w := 0; w < 32; w++ {
		wg.Go(func() {
			for i := range work {
				e := nodes[i%len(nodes)]
				plan, err := e.CreatePlan(ctx, testCaller, loadRequests(testSession, i))
				if err != nil {
					errs <- err
					continue
				}
				lt.mu.Lock()
				lt.track(plan.ID).plan = plan
				lt.mu.Unlock()
				t := time.Now()
				if err := e.ExecutePlan(ctx, testCaller, plan.ID); err != nil {
					errs <- err
					continue
				}
				lt.mu.Lock()
				lt.track(plan.ID).executed = t
				lt.mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatalf("submit: %v", err)
	}
	select {
	case <-lt.done:
	case <-time.After(timeout):
		lt.mu.Lock()
		tb.Fatalf("%d of %d plans did not complete within %v", lt.pending, n, timeout)
	}
	rep := loadReport{plans: n, wall: time.Since(start)}
	// Late duplicates would arrive after the completion: give them a moment.
	time.Sleep(50 * time.Millisecond)
	lt.mu.Lock()
	defer lt.mu.Unlock()
	for id, p := range lt.plans {
		if len(p.plan.Steps) == 0 {
			rep.problems = append(rep.problems, "events for an unknown plan "+id)
			continue
		}
		switch {
		case len(p.results) != 1:
			rep.problems = append(rep.problems, fmt.Sprintf("plan %s: %d completions", id, len(p.results)))
			continue
		case !p.results[0].Success:
			rep.problems = append(rep.problems, fmt.Sprintf("plan %s failed: %s", id, p.results[0].FinalOutput))
		case len(p.results[0].StepResults) != 5 || len(p.completed) != 5 || len(p.starts) != 5:
			rep.problems = append(rep.problems, fmt.Sprintf("plan %s: %d results, %d StepCompleted, %d starts",
				id, len(p.results[0].StepResults), len(p.completed), len(p.starts)))
		case p.dupStarts+p.dupSteps > 0:
			rep.problems = append(rep.problems, fmt.Sprintf("plan %s: %d duplicate starts, %d duplicate StepCompleted", id, p.dupStarts, p.dupSteps))
		}
		for _, s := range p.plan.Steps {
			done, ok := p.completed[s.Order]
			if !ok {
				continue
			}
			rep.steps++
			runnable := p.executed
			for _, d := range s.DependsOn {
				var o int
				fmt.Sscan(d, &o)
				if t := p.completed[o]; t.After(runnable) {
					runnable = t
				}
			}
			rep.stepLatency = append(rep.stepLatency, done.Sub(runnable))
			rep.runLatency = append(rep.runLatency, done.Sub(p.starts[s.Order]))
		}
	}
	if rep.steps != 5*n {
		rep.problems = append(rep.problems, fmt.Sprintf("%d steps completed, want %d", rep.steps, 5*n))
	}
	return rep
}

// loadFarm starts nodes engines of workers each, each with its own client.
func loadFarm(tb testing.TB, addr string, nodes, workers int) ([]*Engine, *fakeSessions) {
	sessions := newFakeSessions(testSession)
	cat := NewMemoryCatalog()
	for _, id := range []string{"a1", "a2", "a3", "a4", "a5"} {
		cat.Add(contract.AgentInfo{ID: id}, &Scripted{})
	}
	var engines []*Engine
	for i := range nodes {
		rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 4*workers + 16})
		cfg := DefaultConfig(fmt.Sprintf("node-%d", i))
		cfg.Workers = workers
		cfg.BlockTimeout = 200 * time.Millisecond
		e, err := New(cfg, rdb, sessions, cat, nil)
		if err != nil {
			tb.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			tb.Fatal(err)
		}
		engines = append(engines, e)
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			e.Shutdown(ctx)
			rdb.Close()
		})
	}
	return engines, sessions
}

func backendAddr(b backend) string {
	if b.Server != nil {
		return b.Server.Addr()
	}
	return b.Mini.Addr()
}

// Acceptance 5 (correctness half): many concurrent five-step plans of all
// strategies complete with no loss and no duplicates. The figures come
// from BenchmarkConcurrentPlans.
func TestConcurrentPlans(t *testing.T) {
	n := 1000
	if testing.Short() || raceEnabled { // keeps `go test -race` quick on small machines
		n = 250
	}
	backends(t, func(t *testing.T, b backend) {
		nodes, sessions := loadFarm(t, backendAddr(b), 2, 8)
		rep := runLoad(t, nodes, sessions, n, 2*time.Minute)
		for _, p := range rep.problems {
			t.Error(p)
		}
		t.Logf("%s: %d plans, %d steps in %v (%.0f steps/s), step latency p50 %v p99 %v",
			b.Name, rep.plans, rep.steps, rep.wall.Round(time.Millisecond), float64(rep.steps)/rep.wall.Seconds(),
			pct(rep.stepLatency, 0.5), pct(rep.stepLatency, 0.99))
	})
}

// BenchmarkConcurrentPlans measures the engine under acceptance 5's load:
// each iteration submits 1,000 five-step plans (the four strategies in
// turn, scripted agents without delay) at once to two nodes of 8 workers
// and waits for every OrchestrationCompleted, checking there is no loss and
// no duplicate. Reported: steps/s, and step latency percentiles, where a
// step's latency runs from the moment it became runnable (its plan was
// executed, or its last dependency completed) to its StepCompleted — queue
// wait included — and run-p99 from its start progress to StepCompleted.
//
//	go test -run '^$' -bench BenchmarkConcurrentPlans -benchtime 3x ./orchestration/
func BenchmarkConcurrentPlans(b *testing.B) {
	for _, name := range []string{"redis-server", "miniredis"} {
		b.Run(name, func(b *testing.B) {
			var addr string
			if name == "redis-server" {
				addr = testredis.Start(b).Addr()
			} else {
				m := miniredisFor(b)
				addr = m
			}
			nodes, sessions := loadFarm(b, addr, 2, 8)
			var all, run []time.Duration
			var steps int
			var wall time.Duration
			b.ResetTimer()
			for range b.N {
				rep := runLoad(b, nodes, sessions, 1000, 5*time.Minute)
				for _, p := range rep.problems {
					b.Error(p)
				}
				all = append(all, rep.stepLatency...)
				run = append(run, rep.runLatency...)
				steps += rep.steps
				wall += rep.wall
			}
			b.StopTimer()
			b.ReportMetric(float64(steps)/wall.Seconds(), "steps/s")
			b.ReportMetric(float64(pct(all, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(pct(all, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(pct(run, 0.99).Microseconds())/1000, "run-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func miniredisFor(b *testing.B) string {
	return miniredis.RunT(b).Addr()
}

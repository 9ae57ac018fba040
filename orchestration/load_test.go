package orchestration

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
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

// roundTrips counts the Redis round trips of clients it is hooked into:
// commands sent alone, and pipelines (one round trip each, however many
// commands they carry), with the commands by name.
type roundTrips struct {
	mu        sync.Mutex
	single    int
	pipelines int
	byName    map[string]int
}

func newRoundTrips() *roundTrips { return &roundTrips{byName: map[string]int{}} }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.mu.Lock()
		r.single++
		r.byName[cmdName(cmd)]++
		r.mu.Unlock()
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.mu.Lock()
		r.pipelines++
		for _, c := range cmds {
			r.byName["pipelined "+cmdName(c)]++
		}
		r.mu.Unlock()
		return next(ctx, cmds)
	}
}

// cmdName names a command; scripts are told apart by their first key's
// kind and their argument count.
func cmdName(c redis.Cmder) string {
	name := c.Name()
	if name == "evalsha" || name == "eval" {
		return fmt.Sprintf("%s/%d args", name, len(c.Args()))
	}
	return name
}

// snapshot returns the totals and resets them.
func (r *roundTrips) snapshot() (total int, byName map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	total, byName = r.single+r.pipelines, r.byName
	r.single, r.pipelines, r.byName = 0, 0, map[string]int{}
	return total, byName
}

// loadTarget is the Redis a load farm's engines use.
type loadTarget struct {
	dial       func(poolSize int) redis.UniversalClient
	partitions int
}

// addrTarget is one Redis server (one partition).
func addrTarget(addr string) loadTarget {
	return loadTarget{partitions: 1, dial: func(poolSize int) redis.UniversalClient {
		return redis.NewClient(&redis.Options{Addr: addr, PoolSize: poolSize})
	}}
}

// backendTarget is a test backend; on Redis Cluster the engines run with
// clusterPartitions partitions.
func backendTarget(b backend) loadTarget {
	switch {
	case b.Clustered():
		return loadTarget{partitions: clusterPartitions, dial: func(poolSize int) redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: b.Cluster.Addrs(), PoolSize: poolSize})
		}}
	case b.Server != nil:
		return addrTarget(b.Server.Addr())
	default:
		return addrTarget(b.Mini.Addr())
	}
}

// loadFarm starts nodes engines of workers each, each with its own client
// counting its round trips in rt (nil: none).
func loadFarm(tb testing.TB, target loadTarget, nodes, workers int, rt *roundTrips) ([]*Engine, *fakeSessions) {
	sessions := newFakeSessions(testSession)
	cat := NewMemoryCatalog()
	for _, id := range []string{"a1", "a2", "a3", "a4", "a5"} {
		cat.Add(contract.AgentInfo{ID: id}, &Scripted{})
	}
	var engines []*Engine
	for i := range nodes {
		rdb := target.dial(4*workers + 16)
		if rt != nil {
			rdb.AddHook(rt)
		}
		cfg := DefaultConfig(fmt.Sprintf("node-%d", i))
		cfg.Workers = workers
		cfg.Partitions = target.partitions
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

// Acceptance 5 (correctness half): many concurrent five-step plans of all
// strategies complete with no loss and no duplicates. The figures come
// from BenchmarkConcurrentPlans.
func TestConcurrentPlans(t *testing.T) {
	n := 1000
	if testing.Short() || raceEnabled { // keeps `go test -race` quick on small machines
		n = 250
	}
	backends(t, func(t *testing.T, b backend) {
		nodes, sessions := loadFarm(t, backendTarget(b), 2, 8, nil)
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
// wait included — and run-p99 from its start progress to StepCompleted;
// round-trips/step counts the Redis round trips of both nodes (plan
// creation and execution included) per step; go-cpu-µs/step is the CPU
// time of the test process (engines, Redis clients and the harness) per
// step and redis-cpu-µs/step redis-server's (from INFO cpu): together they
// bound the steps/s a machine can reach.
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
			rt := newRoundTrips()
			nodes, sessions := loadFarm(b, addrTarget(addr), 2, 8, rt)
			info := redis.NewClient(&redis.Options{Addr: addr})
			defer info.Close()
			var all, run []time.Duration
			var steps, trips int
			var wall, goCPU, redisCPU time.Duration
			b.ResetTimer()
			for range b.N {
				rt.snapshot()
				g0, r0 := processCPU(), serverCPU(info, name)
				rep := runLoad(b, nodes, sessions, 1000, 5*time.Minute)
				goCPU += processCPU() - g0
				redisCPU += serverCPU(info, name) - r0
				n, byName := rt.snapshot()
				trips += n
				if testing.Verbose() {
					b.Logf("%d round trips for %d steps: %v", n, rep.steps, byName)
				}
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
			b.ReportMetric(float64(trips)/float64(steps), "round-trips/step")
			b.ReportMetric(float64(goCPU.Microseconds())/float64(steps), "go-cpu-µs/step")
			if name == "redis-server" {
				b.ReportMetric(float64(redisCPU.Microseconds())/float64(steps), "redis-cpu-µs/step")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

func miniredisFor(b *testing.B) string {
	return miniredis.RunT(b).Addr()
}

// BenchmarkQueueWait measures queue wait at a fixed rate: 500 and 2,000
// single-step plans per second (scripted agent, no delay) executed for 3 s
// on two nodes of 8 workers. The plans are created first; the wait of each runs from the
// moment ExecutePlan is called (its job is enqueued within that call) to its
// step's start progress, sent by the worker that took the job once it owns
// the step. Reported: the rate achieved, the wait's p50, p99 and max, and
// the CPU time per plan of the test process and of redis-server.
//
//	go test -run '^$' -bench BenchmarkQueueWait -benchtime 1x ./orchestration/
func BenchmarkQueueWait(b *testing.B) {
	for _, rate := range []int{500, 2000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			const seconds = 3
			addr := testredis.Start(b).Addr()
			nodes, sessions := loadFarm(b, addrTarget(addr), 2, 8, nil)
			info := redis.NewClient(&redis.Options{Addr: addr})
			defer info.Close()
			var waits []time.Duration
			var achieved float64
			var goCPU, redisCPU time.Duration
			for range b.N {
				w, r, g, rc := queueWait(b, nodes, sessions, rate, rate*seconds, info)
				waits = append(waits, w...)
				achieved = r
				goCPU += g
				redisCPU += rc
			}
			b.ReportMetric(achieved, "plans/s")
			b.ReportMetric(float64(goCPU.Microseconds())/float64(len(waits)), "go-cpu-µs/plan")
			b.ReportMetric(float64(redisCPU.Microseconds())/float64(len(waits)), "redis-cpu-µs/plan")
			b.ReportMetric(float64(pct(waits, 0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(pct(waits, 0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(pct(waits, 1).Microseconds())/1000, "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// queueWait creates n single-step plans, executes them at rate per second
// and returns each one's wait from ExecutePlan to its start progress, the
// execution rate achieved, and the CPU time this process and redis-server
// (through info) used from the first execution to the last completion.
func queueWait(tb testing.TB, nodes []*Engine, sessions *fakeSessions, rate, n int, info *redis.Client) ([]time.Duration, float64, time.Duration, time.Duration) {
	ctx := context.Background()
	plans := make([]string, n)
	for i := range plans {
		p, err := nodes[i%len(nodes)].CreatePlan(ctx, testCaller,
			contract.NewCreatePlanRequest(testSession, fmt.Sprintf("goal %d", i), contract.StrategySequential, []string{"a1"}))
		if err != nil {
			tb.Fatal(err)
		}
		if len(p.Steps) != 1 {
			tb.Fatalf("plan has %d steps, want 1", len(p.Steps))
		}
		plans[i] = p.ID
	}
	var mu sync.Mutex
	submitted := make(map[string]time.Time, n)
	started := make(map[string]time.Time, n)
	done := make(chan struct{})
	completed := 0
	sessions.mu.Lock()
	sessions.noJSON = true
	sessions.events = nil
	sessions.onEmit = func(ev event) {
		mu.Lock()
		defer mu.Unlock()
		switch x := ev.Payload.(type) {
		case contract.OrchestrationProgress:
			if _, ok := started[x.PlanID]; !ok && x.PercentComplete < 100 {
				started[x.PlanID] = ev.At
			}
		case contract.OrchestrationResult:
			if completed++; completed == n {
				close(done)
			}
		}
	}
	sessions.mu.Unlock()

	work := make(chan int, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				t := time.Now()
				mu.Lock()
				submitted[plans[i]] = t
				mu.Unlock()
				if err := nodes[i%len(nodes)].ExecutePlan(ctx, testCaller, plans[i]); err != nil {
					errs <- err
				}
			}
		})
	}
	g0, r0 := processCPU(), serverCPU(info, "redis-server")
	begin := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		if d := time.Until(begin.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d) // pacing the submissions, not waiting for a result
		}
		work <- i
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(begin)
	close(errs)
	for err := range errs {
		tb.Fatalf("execute: %v", err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		tb.Fatalf("plans did not complete within a minute")
	}
	goCPU, redisCPU := processCPU()-g0, serverCPU(info, "redis-server")-r0
	mu.Lock()
	defer mu.Unlock()
	waits := make([]time.Duration, 0, n)
	for id, t := range submitted {
		s, ok := started[id]
		if !ok {
			tb.Fatalf("plan %s completed without a start progress", id)
		}
		waits = append(waits, s.Sub(t))
	}
	return waits, float64(n) / elapsed.Seconds(), goCPU, redisCPU
}

// processCPU is the CPU time (user + system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU is the CPU time redis-server used so far (0 for miniredis,
// which runs in this process).
func serverCPU(c *redis.Client, backend string) time.Duration {
	if backend != "redis-server" {
		return 0
	}
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		return 0
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if ok && (k == "used_cpu_sys" || k == "used_cpu_user") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return time.Duration(total * float64(time.Second))
}

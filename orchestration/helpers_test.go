package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/redis/go-redis/v9"
)

// backend is one Redis implementation the tests run against.
type backend = testredis.Backend

// backends runs fn against a real redis-server, miniredis and a
// three-master Redis Cluster (where the engines run with three partitions:
// see env.forBackend).
func backends(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Helper()
	testredis.Backends(t, fn, testredis.WithCluster())
}

// clusterPartitions is the partition count of engines on Redis Cluster.
const clusterPartitions = 3

// forBackend adapts a test's config to the backend: on Redis Cluster the
// engine runs with clusterPartitions partitions, each under its own hash
// tag (with one partition every key would need the prefix's tag), and at
// least as many workers.
func (v *env) forBackend(cfg Config) Config {
	if v.b.Clustered() && cfg.Partitions <= 1 {
		cfg.Partitions = clusterPartitions
		if cfg.Workers > 0 {
			cfg.Workers = max(cfg.Workers, cfg.Partitions)
		}
	}
	return cfg
}

// event is one recorded Emit call.
type event struct {
	Session string
	Caller  Caller
	Target  string
	Payload any
	JSON    string
	At      time.Time
}

// fakeSessions is the test double of the session store boundary.
type fakeSessions struct {
	mu      sync.Mutex
	known   map[string]bool
	dirs    map[string]string // working directories (SessionDirectories)
	forbid  map[string]bool   // users that may not use any session
	events  []event
	noJSON  bool // skip encoding (benchmarks)
	onEmit  func(event)
	failing int // fail this many Emit calls
}

func newFakeSessions(ids ...string) *fakeSessions {
	f := &fakeSessions{known: map[string]bool{}, dirs: map[string]string{}, forbid: map[string]bool{}}
	for _, id := range ids {
		f.known[id] = true
	}
	return f
}

func (f *fakeSessions) Exists(_ context.Context, id string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.known[id], nil
}

func (f *fakeSessions) WorkingDirectory(_ context.Context, id string) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dirs[id], f.known[id], nil
}

func (f *fakeSessions) CanUse(_ context.Context, _ string, c Caller) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.forbid[c.User], nil
}

func (f *fakeSessions) Emit(_ context.Context, session string, caller Caller, target string, payload any) error {
	ev := event{Session: session, Caller: caller, Target: target, Payload: payload, At: time.Now()}
	if !f.noJSON {
		b, err := json.Marshal(payload)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), "null") {
			return fmt.Errorf("payload of %s contains null: %s", target, b)
		}
		ev.JSON = string(b)
	}
	f.mu.Lock()
	if f.failing > 0 {
		f.failing--
		f.mu.Unlock()
		return fmt.Errorf("emit failed (test)")
	}
	f.events = append(f.events, ev)
	hook := f.onEmit
	f.mu.Unlock()
	if hook != nil {
		hook(ev)
	}
	return nil
}

// planEvents returns the events of one plan, in emit order.
func (f *fakeSessions) planEvents(planID string) []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []event
	for _, ev := range f.events {
		if eventPlan(ev) == planID {
			out = append(out, ev)
		}
	}
	return out
}

func (f *fakeSessions) sessionEvents(session, target string) []event {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []event
	for _, ev := range f.events {
		if ev.Session == session && (target == "" || ev.Target == target) {
			out = append(out, ev)
		}
	}
	return out
}

func eventPlan(ev event) string {
	switch p := ev.Payload.(type) {
	case contract.OrchestrationPlan:
		return p.ID
	case contract.OrchestrationProgress:
		return p.PlanID
	case contract.StepCompletedEvent:
		return p.PlanID
	case contract.OrchestrationResult:
		return p.PlanID
	}
	return ""
}

// describe renders a plan's events compactly for sequence assertions:
// "created", "start:2", "step:2", "end:2", "done:3@100", "completed", "updated".
func describe(evs []event) []string {
	var out []string
	started := map[int]bool{}
	for _, ev := range evs {
		switch p := ev.Payload.(type) {
		case contract.OrchestrationPlan:
			if ev.Target == contract.TargetOrchestrationPlanUpdated {
				out = append(out, "updated")
			} else {
				out = append(out, "created")
			}
		case contract.OrchestrationProgress:
			switch {
			case p.PercentComplete == 100:
				out = append(out, fmt.Sprintf("final:%d", p.CurrentStep))
			case !started[p.CurrentStep]:
				started[p.CurrentStep] = true
				out = append(out, fmt.Sprintf("start:%d", p.CurrentStep))
			default:
				out = append(out, fmt.Sprintf("end:%d", p.CurrentStep))
			}
		case contract.StepCompletedEvent:
			out = append(out, fmt.Sprintf("step:%d", p.Order))
		case contract.OrchestrationResult:
			out = append(out, "completed")
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// partitionsEnv names the environment variable that runs the package's
// tests with that many job stream partitions (default 1), every script's
// keys checked to share one Cluster slot; workers are raised to at least
// the partitions.
const partitionsEnv = "HUBFARM_TEST_PARTITIONS"

// testPartitions is the partition count the tests run with.
func testPartitions() int {
	n, err := strconv.Atoi(os.Getenv(partitionsEnv))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// testConfig is a Config with short intervals, for fast tests.
func testConfig(node string, workers int) Config {
	parts := testPartitions()
	if workers > 0 {
		workers = max(workers, parts)
	}
	return Config{
		Prefix: "t", NodeID: node, Workers: workers, Partitions: parts,
		VisibilityTimeout: time.Second, ClaimRefresh: 200 * time.Millisecond,
		PollInterval: 50 * time.Millisecond, ReclaimInterval: 100 * time.Millisecond,
		BlockTimeout: 100 * time.Millisecond, SchedulerInterval: 20 * time.Millisecond,
		RetryBackoff: 20 * time.Millisecond, RetryBackoffMax: 100 * time.Millisecond,
	}
}

// env is one farm under test: a Redis, a session store double, an agent
// catalog and one or more engines (nodes).
type env struct {
	t        *testing.T
	b        backend
	rdb      redis.UniversalClient
	sessions *fakeSessions
	catalog  *MemoryCatalog
	engines  []*Engine
}

const testSession = "s1"

var testCaller = Caller{ConnectionID: "c1", User: "u1"}

func newEnv(t *testing.T, b backend, agents map[string]Agent) *env {
	v := &env{t: t, b: b, rdb: b.NewClient(), sessions: newFakeSessions(testSession), catalog: NewMemoryCatalog()}
	if testPartitions() > 1 {
		checkSlots(t, v.rdb)
	}
	for id, a := range agents {
		v.catalog.Add(contract.AgentInfo{ID: id, Name: id}, a)
	}
	// Registered first, so it runs after every node's Shutdown: no engine
	// goroutine may survive them.
	t.Cleanup(func() {
		waitFor(t, 2*time.Second, "engine goroutines to exit", func() bool { return engineGoroutines() == 0 })
	})
	return v
}

// node starts an engine on the env's Redis; catalog nil = the env's.
// setup functions run before Start.
func (v *env) node(cfg Config, catalog AgentCatalog, setup ...func(*Engine)) *Engine {
	v.t.Helper()
	if catalog == nil {
		catalog = v.catalog
	}
	e, err := New(v.forBackend(cfg), v.rdb, v.sessions, catalog, nil)
	if err != nil {
		v.t.Fatal(err)
	}
	for _, f := range setup {
		f(e)
	}
	if err := e.Start(context.Background()); err != nil {
		v.t.Fatal(err)
	}
	v.engines = append(v.engines, e)
	v.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

// engineGoroutines counts goroutines running engine code.
func engineGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "orchestration.(*Engine).") || strings.Contains(g, "orchestration.(*keepalive).") {
			n++
		}
	}
	return n
}

// run creates and executes a plan and waits for its OrchestrationCompleted.
func (v *env) run(e *Engine, req contract.CreatePlanRequest) (contract.OrchestrationPlan, contract.OrchestrationResult) {
	v.t.Helper()
	plan, err := e.CreatePlan(context.Background(), testCaller, req)
	if err != nil {
		v.t.Fatalf("CreatePlan: %v", err)
	}
	if err := e.ExecutePlan(context.Background(), testCaller, plan.ID); err != nil {
		v.t.Fatalf("ExecutePlan: %v", err)
	}
	return plan, v.await(plan.ID, 20*time.Second)
}

// await waits for the plan's OrchestrationCompleted and returns it.
func (v *env) await(planID string, timeout time.Duration) contract.OrchestrationResult {
	v.t.Helper()
	var res contract.OrchestrationResult
	waitFor(v.t, timeout, "OrchestrationCompleted of "+planID, func() bool {
		for _, ev := range v.sessions.planEvents(planID) {
			if r, ok := ev.Payload.(contract.OrchestrationResult); ok {
				res = r
				return true
			}
		}
		return false
	})
	return res
}

func request(strategy contract.OrchestrationStrategy, maxSteps int, agents ...string) contract.CreatePlanRequest {
	r := contract.NewCreatePlanRequest(testSession, "write a haiku", strategy, agents)
	r.MaxSteps = maxSteps
	return r
}

// receive waits for one value on ch, failing the test after timeout rather
// than hanging the run.
func receive[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
		var zero T
		return zero
	}
}

// slotChecker records every Lua script call and MULTI block whose keys do
// not all hash to one Redis Cluster slot (such a call fails on a cluster
// with CROSSSLOT).
type slotChecker struct {
	mu      sync.Mutex
	scripts int
	multis  int
	bad     []string
}

// checkSlots hooks a slot checker into rdb; the test fails at its end if a
// script call or MULTI block crossed slots. It returns the checker.
func checkSlots(t testing.TB, rdb redis.UniversalClient) *slotChecker {
	c := &slotChecker{}
	rdb.AddHook(c)
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, b := range c.bad {
			t.Errorf("keys of more than one slot: %s", b)
		}
	})
	return c
}

func (c *slotChecker) counts() (scripts, multis int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scripts, c.multis
}

func (c *slotChecker) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *slotChecker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.check(cmd)
		return next(ctx, cmd)
	}
}

func (c *slotChecker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var tx []string
		multi := false
		for _, cmd := range cmds {
			c.check(cmd)
			switch cmd.Name() {
			case "multi":
				multi = true
			case "exec":
			default:
				if a := cmd.Args(); len(a) > 1 {
					tx = append(tx, fmt.Sprint(a[1]))
				}
			}
		}
		if multi {
			c.record(&c.multis, "MULTI", tx)
		}
		return next(ctx, cmds)
	}
}

// check looks at a script call's keys.
func (c *slotChecker) check(cmd redis.Cmder) {
	if n := cmd.Name(); n != "evalsha" && n != "eval" && n != "evalsha_ro" && n != "eval_ro" {
		return
	}
	a := cmd.Args()
	if len(a) < 3 {
		return
	}
	n, _ := strconv.Atoi(fmt.Sprint(a[2]))
	var ks []string
	for i := 3; i < 3+n && i < len(a); i++ {
		ks = append(ks, fmt.Sprint(a[i]))
	}
	c.record(&c.scripts, "script", ks)
}

func (c *slotChecker) record(counter *int, what string, ks []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	*counter++
	for _, k := range ks[min(1, len(ks)):] {
		if redisconn.Slot(k) != redisconn.Slot(ks[0]) {
			c.bad = append(c.bad, fmt.Sprintf("%s %v", what, ks))
			return
		}
	}
}

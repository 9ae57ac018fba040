// Package loadgen is hubfarm's load generator, behind `hubfarm load`. It
// drives a farm through its public hubs the way SignalR clients do and
// measures what a user of the farm would see:
//
//   - fanout: R sessions of M members spread over the given URLs, one
//     publisher per session (its first member) sending SendSessionMessage
//     at a fixed total rate; every member's ReceiveSessionMessage is timed
//     and checked against per-session sequence numbers (loss, duplicates,
//     reordering).
//   - connections: N connections opened at a ramp rate, each joined to a
//     session, held idle, then probed with one message per session to show
//     that every connection is still alive.
//   - chat: SendAgentMessage to an agent at a rate; time to the first
//     streamed chunk and to the complete response.
//   - plans: orchestration plans (create, execute) at a rate or a fixed
//     concurrency; plan latency and steps per second.
//
// Measurement follows the peer benchmark's method: the send time travels in
// the payload on the generator's monotonic clock, latencies go into a
// log-linear histogram, and the generator reports its own CPU time so that
// a user can tell whether the generator was the bottleneck.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names.
const (
	ScenarioFanout      = "fanout"
	ScenarioConnections = "connections"
	ScenarioChat        = "chat"
	ScenarioPlans       = "plans"
)

// Hub paths.
const (
	HubOrchestrator = "/hubs/orchestrator"
	HubAgent        = "/hubs/agent"
)

// Config is one run. Zero values take the scenario's defaults (see
// normalize).
type Config struct {
	Scenario string
	// URLs are node or proxy base URLs (http://host:port); connections are
	// spread over them round-robin.
	URLs []string
	// Hub is the hub path; default /hubs/agent for chat, else
	// /hubs/orchestrator.
	Hub string
	// Rate: fanout publishes/s (all sessions together), chat messages/s,
	// plans started/s (0: closed loop at Concurrency).
	Rate float64
	// Duration of the measured window (connections: how long to hold).
	Duration time.Duration
	// Warmup runs the workload unmeasured first (fanout); 0 means none.
	Warmup time.Duration
	// Ramp is connections opened per second; 0 opens as fast as
	// DialConcurrency allows.
	Ramp float64
	// Sessions: fanout and chat sessions, connections' sessions (default
	// Connections/10), plans driver connections.
	Sessions int
	// Members per fanout session, the publisher included.
	Members int
	// Payload is the fanout message size in bytes.
	Payload int
	// Connections for the connections scenario.
	Connections int
	// Concurrency is the number of plans in flight in closed-loop mode, and
	// the cap on plans (or chat messages) in flight otherwise.
	Concurrency int
	// Agent is the agent chat and plans address.
	Agent string
	// UserPrefix names users <prefix>-<n> (sent as ?user=); default a
	// random prefix, so that a run never inherits an earlier run's session
	// memberships.
	UserPrefix string
	// Token is sent as a bearer token on negotiate and upgrade.
	Token string
	// Ack makes fanout publishes blocking invocations, so that refused
	// publishes are counted by error kind (the server then writes one
	// Completion per publish too).
	Ack bool
	// SourceAddrs are local addresses to dial from, round-robin. Nodes
	// limit negotiate and connect requests per client IP; 127.0.0.0/8 gives
	// a loopback test as many client IPs as it needs.
	SourceAddrs []netip.Addr
	// ServerMetrics scrapes <url>/metrics of every URL before and after the
	// measured window (use node URLs, not a proxy's).
	ServerMetrics bool
	// Progress is the interval of the progress line; 0 disables it.
	Progress    time.Duration
	ProgressOut io.Writer
	// Drain bounds the wait for outstanding deliveries after publishing
	// stopped (chat and plans: for in-flight requests).
	Drain time.Duration
	// ConnectTimeout bounds the whole connect phase, retries included.
	ConnectTimeout time.Duration
	// DialConcurrency bounds connections being opened at once.
	DialConcurrency int
	// Timeout bounds one chat message or plan.
	Timeout time.Duration
}

// normalize applies defaults and checks the configuration.
func (c *Config) normalize() error {
	def := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	defD := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	if len(c.URLs) == 0 {
		return errors.New("no URL")
	}
	for i, u := range c.URLs {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		c.URLs[i] = u
	}
	switch c.Scenario {
	case ScenarioFanout:
		def(&c.Sessions, 100)
		def(&c.Members, 20)
		def(&c.Payload, 100)
		if c.Rate == 0 {
			c.Rate = 1000
		}
		if c.Members < 1 {
			return errors.New("--members must be at least 1")
		}
	case ScenarioConnections:
		def(&c.Connections, 1000)
		def(&c.Sessions, max(1, c.Connections/10))
		c.Sessions = min(c.Sessions, c.Connections)
	case ScenarioChat:
		def(&c.Sessions, 10)
		if c.Rate == 0 {
			c.Rate = 5
		}
		if c.Hub == "" {
			c.Hub = HubAgent
		}
		if c.Agent == "" {
			c.Agent = "scripted-writer"
		}
	case ScenarioPlans:
		if c.Rate > 0 {
			// Open loop: the cap only guards against a farm that stopped
			// finishing plans. Two invocations per plan; keep each driver
			// connection well under the node's per-connection invocation
			// rate (50/s by default).
			def(&c.Concurrency, 1000)
			def(&c.Sessions, max(1, int(math.Ceil(c.Rate/10))))
		} else {
			def(&c.Concurrency, 4)
			def(&c.Sessions, c.Concurrency)
		}
		if c.Agent == "" {
			c.Agent = "scripted-writer,scripted-reviewer"
		}
	case "":
		return errors.New("no scenario (fanout, connections, chat, plans)")
	default:
		return fmt.Errorf("unknown scenario %q (fanout, connections, chat, plans)", c.Scenario)
	}
	if c.Hub == "" {
		c.Hub = HubOrchestrator
	}
	if !strings.HasPrefix(c.Hub, "/") {
		c.Hub = "/" + c.Hub
	}
	if c.Sessions < 1 || c.Rate < 0 || c.Payload < 0 || c.Ramp < 0 || c.Concurrency < 0 {
		return errors.New("--sessions must be positive; --rate, --payload, --ramp and --concurrency must not be negative")
	}
	defD(&c.Duration, 30*time.Second)
	defD(&c.Drain, 10*time.Second)
	defD(&c.ConnectTimeout, 5*time.Minute)
	defD(&c.Timeout, 60*time.Second)
	def(&c.DialConcurrency, 32)
	if c.UserPrefix == "" {
		c.UserPrefix = fmt.Sprintf("load%04x", rand.IntN(1<<16))
	}
	if c.ProgressOut == nil {
		c.ProgressOut = io.Discard
	}
	return nil
}

// runner holds one run's shared state.
type runner struct {
	cfg    Config
	env    *env
	dialer *dialer

	// Progress counters; each scenario says what they mean (labels).
	sent, recv    atomic.Int64
	labels        [2]string
	phase         atomic.Pointer[string]
	progressHist  atomic.Pointer[Histogram]
	connectHist   *Histogram
	connectRetry  atomic.Int64
	interruptedBy error
}

func newRunner(cfg Config) *runner {
	r := &runner{cfg: cfg, env: newEnv(), connectHist: NewHistogram(),
		dialer: newDialer(cfg.Hub, cfg.Token, cfg.SourceAddrs), labels: [2]string{"sent", "recv"}}
	r.setPhase("connect")
	return r
}

func (r *runner) setPhase(p string) { r.phase.Store(&p) }

// Run executes one scenario and returns its report. Cancelling ctx stops
// the run early; the report then covers what was done and says so.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	r := newRunner(cfg)
	rep := &Report{Scenario: cfg.Scenario, Started: time.Now().UTC(), URLs: cfg.URLs, Hub: cfg.Hub,
		UserPrefix: cfg.UserPrefix, Cores: runtime.NumCPU()}
	cpu0, _ := selfCPU()

	bg, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); r.env.keepAliveLoop(bg) }()
	if cfg.Progress > 0 {
		wg.Add(1)
		go func() { defer wg.Done(); r.progressLoop(bg) }()
	}
	defer func() {
		stop()
		wg.Wait()
		r.dialer.closeIdle()
	}()

	var err error
	switch cfg.Scenario {
	case ScenarioFanout:
		err = r.runFanout(ctx, rep)
	case ScenarioConnections:
		err = r.runConnections(ctx, rep)
	case ScenarioChat:
		err = r.runChat(ctx, rep)
	case ScenarioPlans:
		err = r.runPlans(ctx, rep)
	}
	// Whatever happened, no connection outlives the run.
	r.env.closeAll()
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		rep.Interrupted = true
	}
	rep.Connect.Latency = r.connectHist.Snapshot().Summary()
	rep.Connect.Retries = r.connectRetry.Load()
	rep.Errors = r.env.errs.list()
	rep.ErrorsTotal = r.env.errs.count()
	rep.Disconnects = r.env.dropped.Load()
	cpu1, _ := selfCPU()
	rep.Generator.CPUSecondsTotal = cpu1 - cpu0
	rep.Generator.RSSKiB, rep.Generator.PeakRSSKiB = selfMemory()

	return rep, nil
}

// window measures the generator's CPU over the measured window.
type window struct {
	start         time.Time
	cpu0          float64
	busy0, total0 uint64
}

func startWindow() window {
	c, _ := selfCPU()
	b, t := machineCPU()
	return window{start: time.Now(), cpu0: c, busy0: b, total0: t}
}

func (w window) finish(g *GeneratorStats) time.Duration {
	d := time.Since(w.start)
	c, _ := selfCPU()
	g.CPUSeconds = c - w.cpu0
	if d > 0 {
		g.CPUPercent = 100 * g.CPUSeconds / d.Seconds()
	}
	if b, t := machineCPU(); t > w.total0 {
		g.MachineBusyPct = 100 * float64(b-w.busy0) / float64(t-w.total0)
	}
	g.Goroutines = runtime.NumGoroutine()
	return d
}

// connectJob opens one connection and runs its setup (create or join a
// session) on it.
type connectJob struct {
	idx   int
	url   string
	user  string
	h     handlers
	setup func(ctx context.Context, c *conn) error
	conn  *conn // set on success
}

// retryable reports whether a connect failure is the server asking to come
// back later (rate limit, node full or draining).
func retryable(err error) bool {
	var he *errHTTPStatus
	if errors.As(err, &he) {
		return he.status == 429 || he.status == 503
	}
	if k := classify("", err); strings.Contains(k, "HTTP 429") || strings.Contains(k, "HTTP 503") {
		return true
	}
	return false
}

// connectAll runs the jobs with at most DialConcurrency in flight, paced at
// Ramp per second, retrying refusals with backoff until ConnectTimeout. It
// adds to rep.Connect and returns the jobs that succeeded.
func (r *runner) connectAll(ctx context.Context, jobs []*connectJob, cs *ConnectStats) {
	cfg := &r.cfg
	start := time.Now()
	deadline := start.Add(cfg.ConnectTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var next atomic.Int64
	var failed, ok atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < min(cfg.DialConcurrency, len(jobs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) || ctx.Err() != nil {
					return
				}
				if cfg.Ramp > 0 {
					due := start.Add(time.Duration(float64(i) / cfg.Ramp * float64(time.Second)))
					if !sleepUntil(ctx, due) {
						return
					}
				}
				if r.connectOne(ctx, jobs[i]) {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	// Kept-alive negotiate connections cost two goroutines each on every
	// source address; nothing needs them until the next connect phase.
	r.dialer.closeIdle()
	cs.Attempted += len(jobs)
	cs.Connected += int(ok.Load())
	cs.Failed += len(jobs) - int(ok.Load())
	cs.Seconds += time.Since(start).Seconds()
}

func (r *runner) connectOne(ctx context.Context, j *connectJob) bool {
	backoff := 200 * time.Millisecond
	for {
		t0 := time.Now()
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		c, err := r.dialer.dial(actx, r.env, j.idx, j.url, j.user, j.h)
		op := "connect"
		if err == nil && j.setup != nil {
			op = "setup"
			if err = j.setup(actx, c); err != nil {
				c.close()
			}
		}
		cancel()
		if err == nil {
			r.connectHist.Record(j.idx, time.Since(t0))
			j.conn = c
			return true
		}
		r.env.errs.add(classify(op, err), err)
		if !retryable(err) || ctx.Err() != nil {
			return false
		}
		r.connectRetry.Add(1)
		// Jitter spreads the retries of many refused connections.
		d := backoff/2 + time.Duration(rand.Int64N(int64(backoff)))
		if !sleepUntil(ctx, time.Now().Add(d)) {
			return false
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// sleepUntil waits until t; it reports false when ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// user names the n-th connection's user.
func (r *runner) user(n int) string { return fmt.Sprintf("%s-%d", r.cfg.UserPrefix, n) }

// progressLoop prints one line per interval to ProgressOut.
func (r *runner) progressLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.Progress)
	defer t.Stop()
	start := time.Now()
	lastT := start
	lastSent, lastRecv := int64(0), int64(0)
	lastCPU, _ := selfCPU()
	var lastHist *Histogram
	var lastSnap *HistSnapshot
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			dt := now.Sub(lastT).Seconds()
			sent, recv := r.sent.Load(), r.recv.Load()
			cpu, _ := selfCPU()
			// p99 so far, and of this interval alone: a queue building up
			// shows in the second long before it moves the first.
			p99 := "-"
			if h := r.progressHist.Load(); h != nil {
				s := h.Snapshot()
				if h != lastHist {
					lastHist, lastSnap = h, nil
				}
				if s.Count() > 0 {
					p99 = fmt.Sprintf("%.2fms", ms(s.Quantile(0.99)))
					if d := s.Since(lastSnap); d.Count() > 0 {
						p99 += fmt.Sprintf(" (last %.2fms)", ms(d.Quantile(0.99)))
					}
				}
				lastSnap = s
			}
			fmt.Fprintf(r.cfg.ProgressOut, "[%6.1fs] %-8s conns %d  %s %d (%.0f/s)  %s %d (%.0f/s)  p99 %s  errors %d  cpu %.0f%%\n",
				now.Sub(start).Seconds(), *r.phase.Load(), r.env.live.Load(),
				r.labels[0], sent, float64(sent-lastSent)/dt, r.labels[1], recv, float64(recv-lastRecv)/dt,
				p99, r.env.errs.count(), 100*(cpu-lastCPU)/dt)
			lastT, lastSent, lastRecv, lastCPU = now, sent, recv, cpu
		}
	}
}

// ParseAddrs parses a comma-separated list of IP addresses and inclusive
// ranges ("127.0.0.2-127.0.0.60"), as given to --source-addrs.
func ParseAddrs(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil {
			return nil, fmt.Errorf("source address %q: %w", f, err)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		b, err := netip.ParseAddr(strings.TrimSpace(hi))
		if err != nil {
			return nil, fmt.Errorf("source address range %q: %w", f, err)
		}
		if b.Less(a) || a.Is4() != b.Is4() {
			return nil, fmt.Errorf("source address range %q is empty", f)
		}
		for x := a; ; x = x.Next() {
			if len(out) >= 1<<16 {
				return nil, fmt.Errorf("source address range %q is too large", f)
			}
			out = append(out, x)
			if x == b {
				break
			}
		}
	}
	return out, nil
}

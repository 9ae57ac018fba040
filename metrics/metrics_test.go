package metrics

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// fakeSources are what a node passes to the scrape-time collectors.
type fakeSources struct {
	stats    BackplaneStats
	peers    []time.Time
	peersErr error
	backlog  JobBacklog
	readyErr error
	draining bool
	depth    SendQueueDepth
}

// register builds every metric of a node on reg, fed by src, and touches
// one series of each labelled family so that all of them are gathered.
func register(reg *prometheus.Registry, src *fakeSources, now time.Time) {
	n := NewNode(reg)
	n.InitHub("OrchestratorHub")
	n.ConnectionsClosed.WithLabelValues("OrchestratorHub", "client_closed")
	n.HandshakeFailures.WithLabelValues("invalid")
	n.MessageInCounter("1")
	n.Invocations.WithLabelValues("OrchestratorHub", "JoinSession", "ok")
	n.InvocationDuration.WithLabelValues("OrchestratorHub", "JoinSession")
	NewBackplane(reg)
	RegisterBackplaneStats(reg, BackplaneSources{
		Stats: func() BackplaneStats { return src.stats },
		PeerHeartbeats: func(context.Context) ([]time.Time, error) {
			return src.peers, src.peersErr
		},
		Now: func() time.Time { return now },
	})
	e := NewEngine(reg, EngineLabels{JobKinds: []string{"step"}, PlanOutcomes: []string{"completed"}})
	e.AgentCall("scripted", "ok", time.Second)
	RegisterJobBacklog(reg, func(context.Context) (JobBacklog, error) { return src.backlog, nil })
	RegisterAgentCatalogDrift(reg, func() int { return 0 })
	NewApprovals(reg, []string{"approved"})
	RegisterHealth(reg, Health{
		Ready:    func(context.Context) error { return src.readyErr },
		Draining: func() bool { return src.draining },
	})
	RegisterSendQueues(reg, func() SendQueueDepth { return src.depth })
}

func gatherNames(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), Namespace+"_") {
			names = append(names, f.GetName())
		}
	}
	return names
}

// TestMetricNames pins every exported name: dashboards and alerts depend
// on them, so a change must be deliberate (and the README's list follows).
func TestMetricNames(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	register(reg, &fakeSources{}, time.Now())
	want := []string{
		"hubfarm_agent_call_duration_seconds",
		"hubfarm_agent_catalog_drift",
		"hubfarm_approvals_total",
		"hubfarm_backplane_dropped_total",
		"hubfarm_backplane_duplicates_total",
		"hubfarm_backplane_node_reaps_total",
		"hubfarm_backplane_peer_heartbeat_age_max_seconds",
		"hubfarm_backplane_peers",
		"hubfarm_backplane_publish_duration_seconds",
		"hubfarm_backplane_publish_errors_total",
		"hubfarm_backplane_publish_queue",
		"hubfarm_backplane_published_total",
		"hubfarm_backplane_received_total",
		"hubfarm_backplane_reconnects_total",
		"hubfarm_backplane_subscriptions",
		"hubfarm_bytes_in_total",
		"hubfarm_bytes_out_total",
		"hubfarm_connections",
		"hubfarm_connections_closed_total",
		"hubfarm_connections_opened_total",
		"hubfarm_draining",
		"hubfarm_dropped_frames_total",
		"hubfarm_handshake_failures_total",
		"hubfarm_invocation_duration_seconds",
		"hubfarm_invocations_rate_limited_total",
		"hubfarm_invocations_total",
		"hubfarm_job_queue_wait_seconds",
		"hubfarm_job_run_seconds",
		"hubfarm_jobs_dead_letters",
		"hubfarm_jobs_dead_lettered_total",
		"hubfarm_jobs_delayed",
		"hubfarm_jobs_enqueued_total",
		"hubfarm_jobs_failed_total",
		"hubfarm_jobs_pending",
		"hubfarm_jobs_queued",
		"hubfarm_jobs_reclaimed_total",
		"hubfarm_jobs_released_total",
		"hubfarm_jobs_retried_total",
		"hubfarm_jobs_started_total",
		"hubfarm_jobs_succeeded_total",
		"hubfarm_local_groups",
		"hubfarm_messages_in_total",
		"hubfarm_messages_out_total",
		"hubfarm_node_backplane_send_errors_total",
		"hubfarm_plans_finished_total",
		"hubfarm_ready",
		"hubfarm_records_per_write",
		"hubfarm_send_queue_bytes",
		"hubfarm_send_queue_frames",
		"hubfarm_send_queue_high_water_bytes",
		"hubfarm_send_queue_max_bytes",
		"hubfarm_slow_consumer_closes_total",
		"hubfarm_socket_writes_total",
	}
	sort.Strings(want)
	if got := gatherNames(t, reg); !slices.Equal(got, want) {
		t.Fatalf("exported names changed:\ngot  %v\nwant %v", got, want)
	}
	// The pedantic registry also checked that every metric's help and
	// labels are consistent with its description.

	// The README's metric list names exactly these.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n### Metrics\n")
	if !ok {
		t.Fatal("README.md has no ### Metrics section")
	}
	if end := strings.Index(section, "\n### "); end >= 0 {
		section = section[:end]
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("`(hubfarm_[a-z0-9_]+)`").FindAllStringSubmatch(section, -1) {
		documented[m[1]] = true
	}
	var missing []string
	for _, name := range want {
		if !documented[name] {
			missing = append(missing, name)
		}
		delete(documented, name)
	}
	var extra []string
	for name := range documented {
		extra = append(extra, name)
	}
	sort.Strings(extra)
	if len(missing) > 0 || len(extra) > 0 {
		t.Errorf("README ### Metrics: undocumented %v; documented but not exported %v", missing, extra)
	}
}

// TestScrapeTimeCollectors: the collectors report what their sources say
// at each scrape, and leave Redis-backed figures out when the read fails.
func TestScrapeTimeCollectors(t *testing.T) {
	now := time.Unix(1700000000, 0)
	src := &fakeSources{
		stats:   BackplaneStats{Published: 7, PublishErrors: 2, Received: 5, Reconnects: 1, Subscriptions: 4, QueueLen: 3},
		peers:   []time.Time{now.Add(-300 * time.Millisecond), now.Add(-1500 * time.Millisecond)},
		backlog: JobBacklog{Queued: 3, Pending: 2, Delayed: 1, DeadLetters: 9},
		depth:   SendQueueDepth{Bytes: 1000, Frames: 10, DeepestByte: 600},
	}
	reg := prometheus.NewRegistry()
	register(reg, src, now)
	check := func(name string, want float64) {
		t.Helper()
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == name {
				if got := value(f.GetMetric()[0]); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
				return
			}
		}
		if want >= 0 {
			t.Errorf("%s not exported", name)
		}
	}
	const absent = -1
	check("hubfarm_backplane_published_total", 7)
	check("hubfarm_backplane_publish_errors_total", 2)
	check("hubfarm_backplane_received_total", 5)
	check("hubfarm_backplane_reconnects_total", 1)
	check("hubfarm_backplane_subscriptions", 4)
	check("hubfarm_backplane_publish_queue", 3)
	check("hubfarm_backplane_peers", 2)
	check("hubfarm_backplane_peer_heartbeat_age_max_seconds", 1.5)
	check("hubfarm_jobs_queued", 3)
	check("hubfarm_jobs_pending", 2)
	check("hubfarm_jobs_delayed", 1)
	check("hubfarm_jobs_dead_letters", 9)
	check("hubfarm_send_queue_bytes", 1000)
	check("hubfarm_send_queue_frames", 10)
	check("hubfarm_send_queue_max_bytes", 600)
	check("hubfarm_ready", 1)
	check("hubfarm_draining", 0)

	src.readyErr, src.draining = errors.New("probe did not come back"), true
	src.peersErr = errors.New("redis down")
	check("hubfarm_ready", 0)
	check("hubfarm_draining", 1)
	check("hubfarm_backplane_peers", absent)
	check("hubfarm_backplane_peer_heartbeat_age_max_seconds", absent)
	check("hubfarm_backplane_published_total", 7) // the local counters are still there
}

// read is the value of one counter or gauge.
func read(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	return value(&d)
}

// count is the number of series c collects.
func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric)
	go func() { c.Collect(ch); close(ch) }()
	n := 0
	for range ch {
		n++
	}
	return n
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	}
	return 0
}

// TestEngineObserver: events land on their counters by kind, unknown
// events are dropped rather than named after a value, and latencies are
// observed in seconds.
func TestEngineObserver(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := NewEngine(reg, EngineLabels{JobKinds: []string{"step"}, PlanOutcomes: []string{"completed", "failed"}})
	e.JobEvent("step", "enqueued", 3)
	e.JobEvent("step", "started", 1)
	e.JobEvent("step", "no_such_event", 5)
	e.JobEvent("step", "succeeded", 0)
	e.JobQueueWait("step", 1500*time.Millisecond)
	e.JobRunTime("step", 2*time.Second)
	e.PlanFinished("failed")
	if got := read(e.events["enqueued"].WithLabelValues("step")); got != 3 {
		t.Errorf("enqueued = %v", got)
	}
	if got := read(e.events["started"].WithLabelValues("step")); got != 1 {
		t.Errorf("started = %v", got)
	}
	if got := read(e.events["succeeded"].WithLabelValues("step")); got != 0 {
		t.Errorf("succeeded = %v", got)
	}
	if got := read(e.plans.WithLabelValues("failed")); got != 1 {
		t.Errorf("plans failed = %v", got)
	}
	if n := count(e.plans); n != 2 {
		t.Errorf("plan outcome series = %d, want the 2 created up front", n)
	}
	for _, name := range []string{"hubfarm_job_queue_wait_seconds", "hubfarm_job_run_seconds"} {
		fams, _ := reg.Gather()
		for _, f := range fams {
			if f.GetName() == name {
				h := f.GetMetric()[0].GetHistogram()
				if h.GetSampleCount() != 1 || h.GetSampleSum() < 1.5 || h.GetSampleSum() > 2 {
					t.Errorf("%s: count %d sum %v", name, h.GetSampleCount(), h.GetSampleSum())
				}
			}
		}
	}
}

func TestMessageTotals(t *testing.T) {
	m := NewNode(prometheus.NewRegistry())
	if in, out := m.MessageTotals(); in != 0 || out != 0 {
		t.Fatalf("fresh node: in %d out %d", in, out)
	}
	m.MessageInCounter("1").Add(3)
	m.MessageInCounter("6").Add(4)
	m.RecordsOut.Add(11)
	if in, out := m.MessageTotals(); in != 7 || out != 11 {
		t.Fatalf("in %d out %d, want 7 and 11", in, out)
	}
}

package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Engine holds the orchestration metrics. It implements the orchestration
// engine's Observer (by its method set: this package imports none of the
// farm's), so pass it as orchestration.Config.Observer.
type Engine struct {
	events     map[string]*prometheus.CounterVec // job event → counter by kind; read-only after NewEngine
	queueWait  *prometheus.HistogramVec
	runTime    *prometheus.HistogramVec
	plans      *prometheus.CounterVec
	agentCalls *prometheus.HistogramVec
}

// EngineLabels are label values whose series NewEngine creates at zero, so
// that rates and alerts see them before the first event.
type EngineLabels struct {
	JobKinds     []string
	PlanOutcomes []string
}

// jobEvents names the job counters: event (as the engine reports it) →
// metric name and help.
func jobEvents() []struct{ event, name, help string } {
	return []struct{ event, name, help string }{
		{"enqueued", "jobs_enqueued_total", "Jobs this node added to the job stream: first attempts, due retries, jobs released at shutdown."},
		{"started", "jobs_started_total", "Job attempts this node's workers started."},
		{"succeeded", "jobs_succeeded_total", "Job attempts whose success this node recorded."},
		{"failed", "jobs_failed_total", "Job attempts whose failure this node recorded with no retry to follow (permanent error, timeout)."},
		{"retried", "jobs_retried_total", "Failed job attempts for which this node scheduled a retry."},
		{"dead_lettered", "jobs_dead_lettered_total", "Jobs this node moved to the dead-letter stream after their attempts ran out."},
		{"reclaimed", "jobs_reclaimed_total", "Jobs this node took over from a consumer that stopped refreshing its claim."},
		{"released", "jobs_released_total", "Running jobs this node gave back to the stream at shutdown."},
	}
}

// JobEventNames returns the job events Engine counts.
func JobEventNames() []string {
	var out []string
	for _, e := range jobEvents() {
		out = append(out, e.event)
	}
	return out
}

// NewEngine creates the orchestration metrics and registers them on reg.
func NewEngine(reg prometheus.Registerer, init EngineLabels) *Engine {
	e := &Engine{
		events: map[string]*prometheus.CounterVec{},
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "job_queue_wait_seconds",
			Help: "Time from a job's enqueue to its start by a worker of this node.", Buckets: jobBuckets()}, []string{"kind"}),
		runTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "job_run_seconds",
			Help: "Run time of job attempts on this node.", Buckets: jobBuckets()}, []string{"kind"}),
		plans: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "plans_finished_total",
			Help: "Plans that reached a final status, by outcome (completed, failed, cancelled, timed_out); one node counts each plan."}, []string{"outcome"}),
		agentCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "agent_call_duration_seconds",
			Help: "Agent calls by agent kind (scripted, command, openai) and outcome (ok, error, timeout, cancelled).", Buckets: jobBuckets()},
			[]string{"kind", "outcome"}),
	}
	cs := []prometheus.Collector{e.queueWait, e.runTime, e.plans, e.agentCalls}
	for _, ev := range jobEvents() {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: ev.name, Help: ev.help}, []string{"kind"})
		e.events[ev.event] = v
		cs = append(cs, v)
	}
	reg.MustRegister(cs...)
	for _, k := range init.JobKinds {
		for _, v := range e.events {
			v.WithLabelValues(k)
		}
		e.queueWait.WithLabelValues(k)
		e.runTime.WithLabelValues(k)
	}
	for _, o := range init.PlanOutcomes {
		e.plans.WithLabelValues(o)
	}
	return e
}

// JobEvent counts n jobs of kind reaching event; unknown events are
// ignored (a metric name is never made up from a value).
func (e *Engine) JobEvent(kind, event string, n int) {
	if v := e.events[event]; v != nil && n > 0 {
		v.WithLabelValues(kind).Add(float64(n))
	}
}

// JobQueueWait observes a job's wait in the stream.
func (e *Engine) JobQueueWait(kind string, d time.Duration) {
	e.queueWait.WithLabelValues(kind).Observe(d.Seconds())
}

// JobRunTime observes a job attempt's run time.
func (e *Engine) JobRunTime(kind string, d time.Duration) {
	e.runTime.WithLabelValues(kind).Observe(d.Seconds())
}

// PlanFinished counts a plan's final outcome.
func (e *Engine) PlanFinished(outcome string) { e.plans.WithLabelValues(outcome).Inc() }

// AgentCall observes one agent call.
func (e *Engine) AgentCall(kind, outcome string, d time.Duration) {
	e.agentCalls.WithLabelValues(kind, outcome).Observe(d.Seconds())
}

// JobBacklog is the farm-wide state of the job stream (orchestration.Backlog).
type JobBacklog struct {
	Queued, Pending, Delayed, DeadLetters int64
}

// RegisterAgentCatalogDrift registers hubfarm_agent_catalog_drift, read
// with drift at scrape time: how many other live nodes load an agent
// catalogue different from this node's.
func RegisterAgentCatalogDrift(reg prometheus.Registerer, drift func() int) {
	d := newDesc("agent_catalog_drift", "Other live nodes whose agent catalogue differs from this node's (0 when every node loads the same agents).")
	reg.MustRegister(&funcCollector{
		descs: []*prometheus.Desc{d},
		collect: func(ch chan<- prometheus.Metric) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(drift()))
		},
	})
}

// RegisterJobBacklog registers gauges of the job stream's backlog, read
// with read at scrape time. The figures are farm-wide: every node reports
// the same ones, so aggregate them with max, not sum. A failed read leaves
// them out of that scrape.
func RegisterJobBacklog(reg prometheus.Registerer, read func(ctx context.Context) (JobBacklog, error)) {
	queued := newDesc("jobs_queued", "Jobs in the stream not yet delivered to any worker (farm-wide).")
	pending := newDesc("jobs_pending", "Jobs delivered to a worker and not yet acknowledged: the consumer group's pending entries (farm-wide).")
	delayed := newDesc("jobs_delayed", "Job retries waiting for their back-off (farm-wide).")
	dead := newDesc("jobs_dead_letters", "Entries in the dead-letter stream (farm-wide; capped near 10,000).")
	reg.MustRegister(&funcCollector{
		descs: []*prometheus.Desc{queued, pending, delayed, dead},
		collect: func(ch chan<- prometheus.Metric) {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			b, err := read(ctx)
			if err != nil {
				return
			}
			ch <- prometheus.MustNewConstMetric(queued, prometheus.GaugeValue, float64(b.Queued))
			ch <- prometheus.MustNewConstMetric(pending, prometheus.GaugeValue, float64(b.Pending))
			ch <- prometheus.MustNewConstMetric(delayed, prometheus.GaugeValue, float64(b.Delayed))
			ch <- prometheus.MustNewConstMetric(dead, prometheus.GaugeValue, float64(b.DeadLetters))
		},
	})
}

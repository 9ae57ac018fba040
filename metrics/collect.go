package metrics

import "github.com/prometheus/client_golang/prometheus"

// funcCollector computes its metrics at scrape time. The registry calls
// collectors concurrently, so slow sources (Redis round trips) overlap.
type funcCollector struct {
	descs   []*prometheus.Desc
	collect func(ch chan<- prometheus.Metric)
}

// Describe implements prometheus.Collector.
func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *funcCollector) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// newDesc describes a metric hubfarm_<name>.
func newDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

// latencyBuckets spans 100µs to 10s: Redis round trips and hub calls.
func latencyBuckets() []float64 {
	return []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// jobBuckets spans 1ms to 30 minutes: queue waits and agent calls, from a
// scripted agent to a long model run.
func jobBuckets() []float64 {
	return []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800}
}

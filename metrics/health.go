package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, the base every node's metrics are registered on.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Health is what the readiness gauges read at scrape time.
type Health struct {
	// Ready runs the node's end-to-end readiness check (what /readyz
	// answers): nil means ready.
	Ready func(ctx context.Context) error
	// Draining reports whether the node stopped taking connections.
	Draining func() bool
}

// RegisterHealth registers hubfarm_ready and hubfarm_draining. Prometheus
// cannot read /readyz itself, so each scrape runs the same check; it costs
// one probe through Redis pub/sub.
func RegisterHealth(reg prometheus.Registerer, h Health) {
	ready := newDesc("ready", "1 when the node is ready (Redis commands and pub/sub answer end to end, not draining), else 0.")
	draining := newDesc("draining", "1 while the node drains (refuses new connections, closes existing ones).")
	reg.MustRegister(&funcCollector{
		descs: []*prometheus.Desc{ready, draining},
		collect: func(ch chan<- prometheus.Metric) {
			ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
			defer cancel()
			ch <- prometheus.MustNewConstMetric(ready, prometheus.GaugeValue, boolValue(h.Ready(ctx) == nil))
			ch <- prometheus.MustNewConstMetric(draining, prometheus.GaugeValue, boolValue(h.Draining()))
		},
	})
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

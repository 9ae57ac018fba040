package metrics

import "github.com/prometheus/client_golang/prometheus"

// Approvals counts tool approval outcomes.
type Approvals struct {
	total *prometheus.CounterVec
}

// NewApprovals creates the approvals counter, with a zero series for each
// of outcomes, and registers it on reg.
func NewApprovals(reg prometheus.Registerer, outcomes []string) *Approvals {
	a := &Approvals{total: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "approvals_total",
		Help: "Tool call authorisations by outcome (approved, denied, timed_out, cancelled, policy_approved, policy_denied)."},
		[]string{"outcome"})}
	reg.MustRegister(a.total)
	for _, o := range outcomes {
		a.total.WithLabelValues(o)
	}
	return a
}

// Observe counts one authorisation outcome.
func (a *Approvals) Observe(outcome string) { a.total.WithLabelValues(outcome).Inc() }

// Package metrics owns every Prometheus metric name the farm exports
// (namespace "hubfarm"). Collectors are registered on a registry passed in;
// nothing touches the global default registry. Labels are bounded: hub,
// method, outcome, reason, type, kind — never a user, session, connection,
// plan or node id.
//
// Figures that the other packages already keep (backplane counters, the job
// stream's backlog, readiness) are read at scrape time by collectors here,
// through small functions the node assembly passes in; events that nothing
// keeps (latencies, job events by kind) arrive through observer hooks. The
// package imports nothing of the farm's, so every package may feed it.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Namespace prefixes every metric name.
const Namespace = "hubfarm"

// Node holds the hub node's connection, message and invocation metrics.
type Node struct {
	ConnectionsCurrent  *prometheus.GaugeVec
	ConnectionsOpened   *prometheus.CounterVec
	ConnectionsClosed   *prometheus.CounterVec
	HandshakeFailures   *prometheus.CounterVec
	MessagesIn          *prometheus.CounterVec
	BytesIn             prometheus.Counter
	RecordsOut          prometheus.Counter
	BytesOut            prometheus.Counter
	WritesOut           prometheus.Counter
	RecordsPerWrite     prometheus.Histogram
	SlowConsumerCloses  prometheus.Counter
	DroppedFrames       prometheus.Counter
	Invocations         *prometheus.CounterVec
	InvocationDuration  *prometheus.HistogramVec
	LocalGroups         prometheus.Gauge
	RateLimited         *prometheus.CounterVec
	BackplanePublishErr prometheus.Counter
	// SendQueueHighWater observes, when a connection ends, the most bytes
	// its send queue ever held: how close connections come to the
	// slow-consumer bound.
	SendQueueHighWater prometheus.Histogram
}

// NewNode creates the node metrics and registers them on reg.
func NewNode(reg prometheus.Registerer) *Node {
	m := &Node{
		ConnectionsCurrent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: "connections",
			Help: "Connections currently held by this node."}, []string{"hub"}),
		ConnectionsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "connections_opened_total",
			Help: "Connections that completed the handshake."}, []string{"hub"}),
		ConnectionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "connections_closed_total",
			Help: "Connections closed, by reason."}, []string{"hub", "reason"}),
		HandshakeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "handshake_failures_total",
			Help: "WebSocket connections refused before or during the handshake, by reason."}, []string{"reason"}),
		MessagesIn: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "messages_in_total",
			Help: "Hub protocol records received from clients, by message type."}, []string{"type"}),
		BytesIn: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "bytes_in_total",
			Help: "WebSocket payload bytes received from clients."}),
		RecordsOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "messages_out_total",
			Help: "Hub protocol records written to clients."}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "bytes_out_total",
			Help: "WebSocket payload bytes written to clients."}),
		WritesOut: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "socket_writes_total",
			Help: "WebSocket messages written (each may batch several records)."}),
		RecordsPerWrite: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "records_per_write",
			Help: "Records batched into one WebSocket message.", Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}}),
		SlowConsumerCloses: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "slow_consumer_closes_total",
			Help: "Connections closed because their send queue was full."}),
		DroppedFrames: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "dropped_frames_total",
			Help: "Frames not queued because the connection's queue was full or closing."}),
		Invocations: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "invocations_total",
			Help: "Hub method invocations by hub, method and outcome (ok, error, bind_error, cancelled)."}, []string{"hub", "method", "outcome"}),
		InvocationDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: "invocation_duration_seconds",
			Help: "Hub method latency from dispatch to completion.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}, []string{"hub", "method"}),
		RateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: "invocations_rate_limited_total",
			Help: "Invocations refused by the per-connection rate limit or queue bound."}, []string{"hub"}),
		LocalGroups: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: "local_groups",
			Help: "Groups with at least one member on this node."}),
		BackplanePublishErr: prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: "node_backplane_send_errors_total",
			Help: "Sends from this node whose backplane publication failed (remote members missed them)."}),
		SendQueueHighWater: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "send_queue_high_water_bytes",
			Help:    "Most bytes a connection's send queue held during its life, observed when it ends.",
			Buckets: prometheus.ExponentialBuckets(1024, 4, 8)}), // 1 KiB .. 16 MiB
	}
	reg.MustRegister(m.ConnectionsCurrent, m.ConnectionsOpened, m.ConnectionsClosed, m.HandshakeFailures, m.MessagesIn,
		m.BytesIn, m.RecordsOut, m.BytesOut, m.WritesOut, m.RecordsPerWrite, m.SlowConsumerCloses, m.DroppedFrames,
		m.Invocations, m.InvocationDuration, m.LocalGroups, m.RateLimited, m.BackplanePublishErr, m.SendQueueHighWater)
	return m
}

// InitHub creates the series of hub at zero, so that rates and alerts see
// them before its first connection.
func (m *Node) InitHub(hub string) {
	m.ConnectionsCurrent.WithLabelValues(hub)
	m.ConnectionsOpened.WithLabelValues(hub)
	m.RateLimited.WithLabelValues(hub)
}

// MessageTotals returns the records received from clients (all message
// types) and written to them since the node started, read from the
// counters themselves: the node publishes them with its heartbeat so that
// every node can show every node's message rate.
func (m *Node) MessageTotals() (in, out uint64) {
	return uint64(counterSum(m.MessagesIn)), uint64(counterSum(m.RecordsOut))
}

// counterSum adds up the values of a counter or of every series of a
// counter vector.
func counterSum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 16)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var sum float64
	var pb dto.Metric
	for metric := range ch {
		pb.Reset()
		if metric.Write(&pb) == nil && pb.Counter != nil {
			sum += pb.Counter.GetValue()
		}
	}
	return sum
}

// MessageInCounter returns the counter of received records of one message
// type, for callers that resolve it once instead of on every record.
func (m *Node) MessageInCounter(messageType string) prometheus.Counter {
	return m.MessagesIn.WithLabelValues(messageType)
}

// SendQueueDepth is what the node's send queues hold at one moment.
type SendQueueDepth struct {
	Bytes       int // queued bytes, all connections together
	Frames      int // queued records, all connections together
	DeepestByte int // bytes queued for the fullest connection
}

// RegisterSendQueues registers gauges of the send queues' current depth,
// read from depth at scrape time (the hot path keeps no shared counter).
func RegisterSendQueues(reg prometheus.Registerer, depth func() SendQueueDepth) {
	bytes := newDesc("send_queue_bytes", "Bytes queued for clients now, all connections together.")
	frames := newDesc("send_queue_frames", "Records queued for clients now, all connections together.")
	deepest := newDesc("send_queue_max_bytes", "Bytes queued now for the connection with the fullest send queue.")
	reg.MustRegister(&funcCollector{
		descs: []*prometheus.Desc{bytes, frames, deepest},
		collect: func(ch chan<- prometheus.Metric) {
			d := depth()
			ch <- prometheus.MustNewConstMetric(bytes, prometheus.GaugeValue, float64(d.Bytes))
			ch <- prometheus.MustNewConstMetric(frames, prometheus.GaugeValue, float64(d.Frames))
			ch <- prometheus.MustNewConstMetric(deepest, prometheus.GaugeValue, float64(d.DeepestByte))
		},
	})
}

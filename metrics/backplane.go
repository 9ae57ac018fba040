package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds the Redis reads a scrape makes (readiness probe,
// peers, job backlog); Prometheus' default scrape timeout is 10s.
const scrapeTimeout = 2 * time.Second

// BackplaneStats mirrors backplane.Stats: counters only grow,
// Subscriptions and QueueLen are current values.
type BackplaneStats struct {
	Published     uint64
	PublishErrors uint64
	Received      uint64
	Dropped       uint64
	Duplicates    uint64
	Reconnects    uint64
	NodeReaps     uint64
	Subscriptions int
	QueueLen      int
}

// BackplaneSources are what the backplane collector reads at scrape time.
type BackplaneSources struct {
	// Stats returns the backplane's counters (required).
	Stats func() BackplaneStats
	// PeerHeartbeats returns the last heartbeat of every other live node
	// (optional). A failure leaves the peer series out of that scrape.
	PeerHeartbeats func(ctx context.Context) ([]time.Time, error)
	// Now is the clock heartbeats are compared with (time.Now).
	Now func() time.Time
}

// Backplane holds the backplane metrics that are observed as they happen.
type Backplane struct {
	// PublishDuration is the latency of publications, from the Publish
	// call to Redis' answer (queue wait included).
	PublishDuration prometheus.Histogram
}

// NewBackplane creates the event-fed backplane metrics and registers them
// on reg. Pass ObservePublish to the backplane as its OnPublished hook.
func NewBackplane(reg prometheus.Registerer) *Backplane {
	b := &Backplane{
		PublishDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: "backplane_publish_duration_seconds",
			Help: "Latency of backplane publications, from the Publish call to Redis' answer (queue wait included).", Buckets: latencyBuckets()}),
	}
	reg.MustRegister(b.PublishDuration)
	return b
}

// ObservePublish records one publication's latency (backplane.Config.OnPublished).
func (b *Backplane) ObservePublish(d time.Duration) { b.PublishDuration.Observe(d.Seconds()) }

// RegisterBackplaneStats registers the backplane's counters and gauges,
// read from src at scrape time.
func RegisterBackplaneStats(reg prometheus.Registerer, src BackplaneSources) {
	if src.Now == nil {
		src.Now = time.Now
	}
	counters := []struct {
		d *prometheus.Desc
		v func(BackplaneStats) uint64
	}{
		{newDesc("backplane_published_total", "Publications Redis accepted (fan-out, node inboxes and readiness probes)."),
			func(s BackplaneStats) uint64 { return s.Published }},
		{newDesc("backplane_publish_errors_total", "Publications that failed: a Redis error, or their deadline passed while queued."),
			func(s BackplaneStats) uint64 { return s.PublishErrors }},
		{newDesc("backplane_received_total", "Messages from other nodes handed to this node's delivery handler."),
			func(s BackplaneStats) uint64 { return s.Received }},
		{newDesc("backplane_dropped_total", "Messages read from pub/sub but not delivered: undecodable, or the handler panicked."),
			func(s BackplaneStats) uint64 { return s.Dropped }},
		{newDesc("backplane_duplicates_total", "Messages dropped as re-sends of one already delivered (Redis client retries)."),
			func(s BackplaneStats) uint64 { return s.Duplicates }},
		{newDesc("backplane_reconnects_total", "Times the pub/sub connection was lost (or went silent and was replaced) and reads resumed."),
			func(s BackplaneStats) uint64 { return s.Reconnects }},
		{newDesc("backplane_node_reaps_total", "Dead nodes whose connections this node removed from the registry."),
			func(s BackplaneStats) uint64 { return s.NodeReaps }},
	}
	subs := newDesc("backplane_subscriptions", "Pub/sub channels this node is subscribed to (its inbox, all, and one per local group and user).")
	queue := newDesc("backplane_publish_queue", "Publications waiting for the publisher.")
	peers := newDesc("backplane_peers", "Other live nodes in the registry (heartbeat within the dead-node limit).")
	age := newDesc("backplane_peer_heartbeat_age_max_seconds", "Age of the oldest heartbeat among the other live nodes: near the dead-node limit, a peer is about to be reaped.")
	descs := []*prometheus.Desc{subs, queue, peers, age}
	for _, c := range counters {
		descs = append(descs, c.d)
	}
	reg.MustRegister(&funcCollector{descs: descs, collect: func(ch chan<- prometheus.Metric) {
		s := src.Stats()
		for _, c := range counters {
			ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(c.v(s)))
		}
		ch <- prometheus.MustNewConstMetric(subs, prometheus.GaugeValue, float64(s.Subscriptions))
		ch <- prometheus.MustNewConstMetric(queue, prometheus.GaugeValue, float64(s.QueueLen))
		if src.PeerHeartbeats == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
		defer cancel()
		beats, err := src.PeerHeartbeats(ctx)
		if err != nil {
			return // readiness reports Redis trouble; stale peer figures would mislead
		}
		now := src.Now()
		var oldest time.Duration
		for _, hb := range beats {
			oldest = max(oldest, now.Sub(hb))
		}
		ch <- prometheus.MustNewConstMetric(peers, prometheus.GaugeValue, float64(len(beats)))
		ch <- prometheus.MustNewConstMetric(age, prometheus.GaugeValue, oldest.Seconds())
	}})
}

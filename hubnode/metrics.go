package hubnode

import (
	"strconv"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
	"github.com/orchestratorchat/hubfarm/metrics"
)

// counter is the part of a Prometheus counter the hot path uses.
type counter interface{ Inc() }

// nodeMetrics adapts the metrics package to the node; a nil *metrics.Node
// turns every call into a no-op so tests and tools need no registry.
//
// Per-record observations use children resolved once here: no label
// lookup, lock or allocation per record.
type nodeMetrics struct {
	m  *metrics.Node
	in *[protocol.TypeSequence + 1]counter // by message type; [0] counts unknown types
}

func newNodeMetrics(m *metrics.Node) nodeMetrics {
	n := nodeMetrics{m: m}
	if m == nil {
		return n
	}
	n.in = new([protocol.TypeSequence + 1]counter)
	n.in[0] = m.MessageInCounter("unknown")
	for t := protocol.TypeInvocation; t <= protocol.TypeSequence; t++ {
		n.in[t] = m.MessageInCounter(strconv.Itoa(int(t)))
	}
	return n
}

func (n nodeMetrics) slowConsumer() {
	if n.m != nil {
		n.m.SlowConsumerCloses.Inc()
	}
}

func (n nodeMetrics) dropped(frames int) {
	if n.m != nil && frames > 0 {
		n.m.DroppedFrames.Add(float64(frames))
	}
}

func (n nodeMetrics) batchWritten(records int) {
	if n.m != nil {
		n.m.RecordsPerWrite.Observe(float64(records))
	}
}

func (n nodeMetrics) bytesOut(bytes, records int) {
	if n.m != nil {
		n.m.BytesOut.Add(float64(bytes))
		n.m.RecordsOut.Add(float64(records))
		n.m.WritesOut.Inc()
	}
}

func (n nodeMetrics) bytesIn(bytes int) {
	if n.m != nil {
		n.m.BytesIn.Add(float64(bytes))
	}
}

func (n nodeMetrics) messageIn(t protocol.MessageType) {
	if n.m != nil {
		if t < protocol.TypeInvocation || t > protocol.TypeSequence {
			t = 0
		}
		n.in[t].Inc()
	}
}

func (n nodeMetrics) invocation(hub, method, outcome string, d time.Duration) {
	if n.m != nil {
		n.m.Invocations.WithLabelValues(hub, method, outcome).Inc()
		n.m.InvocationDuration.WithLabelValues(hub, method).Observe(d.Seconds())
	}
}

func (n nodeMetrics) opened(hub string) {
	if n.m != nil {
		n.m.ConnectionsOpened.WithLabelValues(hub).Inc()
		n.m.ConnectionsCurrent.WithLabelValues(hub).Inc()
	}
}

// closed counts a connection's end and how full its send queue ever got.
func (n nodeMetrics) closed(c *Conn) {
	if n.m != nil {
		hub := c.hub.name
		n.m.ConnectionsClosed.WithLabelValues(hub, string(c.closeReason())).Inc()
		n.m.ConnectionsCurrent.WithLabelValues(hub).Dec()
		n.m.SendQueueHighWater.Observe(float64(c.queue.highWaterBytes()))
	}
}

func (n nodeMetrics) handshakeFailed(reason string) {
	if n.m != nil {
		n.m.HandshakeFailures.WithLabelValues(reason).Inc()
	}
}

func (n nodeMetrics) localGroups(count int) {
	if n.m != nil {
		n.m.LocalGroups.Set(float64(count))
	}
}

func (n nodeMetrics) publishError() {
	if n.m != nil {
		n.m.BackplanePublishErr.Inc()
	}
}

func (n nodeMetrics) rateLimited(hub string) {
	if n.m != nil {
		n.m.RateLimited.WithLabelValues(hub).Inc()
	}
}

// highWaterBytes is the most bytes the queue held at once.
func (q *sendQueue) highWaterBytes() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.highWater
}

// SendQueueDepth sums what the local connections' send queues hold now,
// for the queue-depth gauges read at scrape time. It locks each queue
// briefly, once per scrape, instead of keeping a shared counter that every
// push would contend on.
func (n *Node) SendQueueDepth() metrics.SendQueueDepth {
	var d metrics.SendQueueDepth
	for _, c := range n.Connections() {
		frames, bytes := c.queue.depth()
		d.Frames += frames
		d.Bytes += bytes
		d.DeepestByte = max(d.DeepestByte, bytes)
	}
	return d
}

package hubnode

import (
	"strconv"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
	"github.com/orchestratorchat/hubfarm/metrics"
)

// nodeMetrics adapts the metrics package to the node; a nil *metrics.Node
// turns every call into a no-op so tests and tools need no registry.
type nodeMetrics struct{ m *metrics.Node }

func (n nodeMetrics) slowConsumer() {
	if n.m != nil {
		n.m.SlowConsumerCloses.Inc()
	}
}

func (n nodeMetrics) dropped() {
	if n.m != nil {
		n.m.DroppedFrames.Inc()
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
		label := "unknown"
		if t >= protocol.TypeInvocation && t <= protocol.TypeSequence {
			label = strconv.Itoa(int(t))
		}
		n.m.MessagesIn.WithLabelValues(label).Inc()
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

func (n nodeMetrics) closed(hub string, reason DisconnectReason) {
	if n.m != nil {
		n.m.ConnectionsClosed.WithLabelValues(hub, string(reason)).Inc()
		n.m.ConnectionsCurrent.WithLabelValues(hub).Dec()
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

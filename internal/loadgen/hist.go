package loadgen

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// Histogram layout: log-linear buckets over nanoseconds, in the manner of
// HdrHistogram. Values below 2^histPrecision are exact; above, every power
// of two is split into 2^(histPrecision-1) equal sub-buckets, so a bucket is
// at most 1/64 of its lower bound wide (the midpoint is within 0.8 % of any
// value in it).
const (
	histPrecision = 7
	histHalf      = 1 << (histPrecision - 1)
	// histMaxExp bounds the range at 2^(histPrecision+histMaxExp) ns, about
	// 2.4 hours; larger values land in the last bucket.
	histMaxExp  = 36
	histBuckets = (histMaxExp+1)*histHalf + histHalf
	// histShards spreads concurrent recorders over separate counter arrays
	// so that receivers on different cores rarely write the same cache line.
	histShards = 16
)

// bucketOf returns the bucket index of v nanoseconds.
func bucketOf(v uint64) int {
	if v < 1<<histPrecision {
		return int(v)
	}
	e := bits.Len64(v) - histPrecision
	if e > histMaxExp {
		return histBuckets - 1
	}
	return e*histHalf + int(v>>uint(e))
}

// bucketBounds returns the smallest value of bucket b and its width.
func bucketBounds(b int) (lo, width uint64) {
	if b < 1<<histPrecision {
		return uint64(b), 1
	}
	e := b/histHalf - 1
	sub := uint64(b - e*histHalf)
	return sub << uint(e), 1 << uint(e)
}

// bucketMid is the value reported for bucket b.
func bucketMid(b int) float64 {
	lo, w := bucketBounds(b)
	return float64(lo) + float64(w-1)/2
}

type histShard struct {
	counts [histBuckets]atomic.Uint64
	sum    atomic.Uint64
	// pad keeps the next shard's first counters off this shard's last line.
	_ [64]byte
}

// Histogram is a concurrent latency histogram. Record is wait-free: an
// atomic add on the caller's shard plus a compare-and-swap only when a new
// maximum or minimum is seen.
type Histogram struct {
	shards [histShards]histShard
	min    atomic.Int64 // math.MaxInt64 until the first value
	max    atomic.Int64
}

// NewHistogram returns an empty histogram.
func NewHistogram() *Histogram {
	h := &Histogram{}
	h.min.Store(math.MaxInt64)
	return h
}

// Record adds one value. shard is any small integer that is stable per
// recording goroutine (a connection index): recorders with different shards
// do not contend.
func (h *Histogram) Record(shard int, d time.Duration) {
	ns := int64(d)
	if ns < 0 {
		ns = 0
	}
	s := &h.shards[uint(shard)%histShards]
	s.counts[bucketOf(uint64(ns))].Add(1)
	s.sum.Add(uint64(ns))
	for {
		m := h.max.Load()
		if ns <= m || h.max.CompareAndSwap(m, ns) {
			break
		}
	}
	for {
		m := h.min.Load()
		if ns >= m || h.min.CompareAndSwap(m, ns) {
			break
		}
	}
}

// HistSnapshot is a merged, immutable copy of a histogram.
type HistSnapshot struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64
	min, max int64
}

// Snapshot merges the shards. It may run while values are recorded; the
// copy then holds some of them.
func (h *Histogram) Snapshot() *HistSnapshot {
	s := &HistSnapshot{min: h.min.Load(), max: h.max.Load()}
	for i := range h.shards {
		sh := &h.shards[i]
		for b := range sh.counts {
			if c := sh.counts[b].Load(); c != 0 {
				s.counts[b] += c
				s.n += c
			}
		}
		s.sum += float64(sh.sum.Load())
	}
	if s.n == 0 {
		s.min = 0
	}
	return s
}

// Count is the number of recorded values.
func (s *HistSnapshot) Count() uint64 { return s.n }

// Max is the largest recorded value, exactly.
func (s *HistSnapshot) Max() time.Duration { return time.Duration(s.max) }

// Quantile returns the value at quantile q (0..1): the midpoint of the
// bucket holding the ceil(q*n)-th smallest value, clamped to the exact
// minimum and maximum.
func (s *HistSnapshot) Quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	if rank < 1 {
		rank = 1
	}
	var acc uint64
	for b, c := range s.counts {
		acc += c
		if acc >= rank {
			if b == histBuckets-1 {
				return time.Duration(s.max) // the overflow bucket has no midpoint
			}
			v := int64(math.Round(bucketMid(b)))
			return time.Duration(min(max(v, s.min), s.max))
		}
	}
	return time.Duration(s.max)
}

// Latency is a latency summary in milliseconds, as reported.
type Latency struct {
	Count uint64  `json:"count"`
	Mean  float64 `json:"mean_ms"`
	Min   float64 `json:"min_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Summary returns count, mean, min, p50, p90, p99, p99.9 and max.
func (s *HistSnapshot) Summary() Latency {
	l := Latency{Count: s.n}
	if s.n == 0 {
		return l
	}
	l.Mean = s.sum / float64(s.n) / 1e6
	l.Min, l.Max = ms(time.Duration(s.min)), ms(time.Duration(s.max))
	l.P50, l.P90 = ms(s.Quantile(0.50)), ms(s.Quantile(0.90))
	l.P99, l.P999 = ms(s.Quantile(0.99)), ms(s.Quantile(0.999))
	return l
}

// Since returns the values recorded after prev was taken (prev may be nil).
// Its minimum and maximum are bucket bounds, not exact values.
func (s *HistSnapshot) Since(prev *HistSnapshot) *HistSnapshot {
	d := &HistSnapshot{sum: s.sum, min: math.MaxInt64}
	if prev != nil {
		d.sum -= prev.sum
	}
	for b := range s.counts {
		c := s.counts[b]
		if prev != nil {
			c -= prev.counts[b]
		}
		if c == 0 {
			continue
		}
		d.counts[b] = c
		d.n += c
		lo, w := bucketBounds(b)
		d.min = min(d.min, int64(lo))
		d.max = int64(lo + w - 1)
	}
	if b := histBuckets - 1; d.counts[b] != 0 {
		d.max = s.max
	}
	if d.n == 0 {
		d.min = 0
	}
	return d
}

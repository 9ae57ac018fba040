package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestBucketBounds: every value falls inside the bounds of its bucket, and
// a bucket is never wider than 1/64 of its lower bound above the exact
// range.
func TestBucketBounds(t *testing.T) {
	check := func(v uint64) {
		b := bucketOf(v)
		if b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, b)
		}
		lo, w := bucketBounds(b)
		if b == histBuckets-1 && v >= lo {
			return // the last bucket also holds everything beyond the range
		}
		if v < lo || v >= lo+w {
			t.Fatalf("v=%d in bucket %d = [%d, %d)", v, b, lo, lo+w)
		}
		if lo >= 1<<histPrecision && float64(w)/float64(lo) > 1.0/64 {
			t.Fatalf("bucket %d [%d,+%d) is %.4f wide relative to its start", b, lo, w, float64(w)/float64(lo))
		}
	}
	for v := uint64(0); v < 100000; v++ {
		check(v)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		check(r.Uint64N(1 << 44))
	}
	for e := 0; e < 64; e++ {
		check(1 << e)
		check(1<<e - 1)
	}
	// Buckets are contiguous and increasing.
	prevEnd := uint64(0)
	for b := 0; b < histBuckets; b++ {
		lo, w := bucketBounds(b)
		if lo != prevEnd {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", b, lo, prevEnd)
		}
		prevEnd = lo + w
	}
}

// TestQuantilesWithinBucketError compares the histogram's percentiles with
// the exact ones of the recorded values, for several distributions.
func TestQuantilesWithinBucketError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	dists := map[string]func() time.Duration{
		"uniform 0-10ms": func() time.Duration { return time.Duration(r.Int64N(int64(10 * time.Millisecond))) },
		"lognormal ~1ms": func() time.Duration {
			return time.Duration(math.Exp(r.NormFloat64()*0.8) * float64(time.Millisecond))
		},
		"bimodal": func() time.Duration {
			if r.IntN(100) == 0 {
				return time.Duration(200+r.IntN(100)) * time.Millisecond
			}
			return time.Duration(300+r.IntN(200)) * time.Microsecond
		},
		"tiny exact": func() time.Duration { return time.Duration(r.IntN(120)) },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			h := NewHistogram()
			vals := make([]time.Duration, 100000)
			for i := range vals {
				vals[i] = gen()
				h.Record(i, vals[i])
			}
			slices.Sort(vals)
			s := h.Snapshot()
			if s.Count() != uint64(len(vals)) {
				t.Fatalf("count %d, want %d", s.Count(), len(vals))
			}
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 1} {
				exact := vals[int(math.Ceil(q*float64(len(vals))))-1]
				got := s.Quantile(q)
				tol := float64(exact)/128 + 0.5 // half a bucket, at most 1/128 of the value
				if math.Abs(float64(got-exact)) > tol {
					t.Errorf("q%.3f = %v, exact %v (tolerance %.0fns)", q, got, exact, tol)
				}
			}
			if s.Max() != vals[len(vals)-1] {
				t.Errorf("max %v, want %v", s.Max(), vals[len(vals)-1])
			}
			sum := s.Summary()
			if sum.Min != ms(vals[0]) || sum.Max != ms(vals[len(vals)-1]) {
				t.Errorf("summary min/max %v/%v", sum.Min, sum.Max)
			}
			var total float64
			for _, v := range vals {
				total += float64(v)
			}
			if mean := total / float64(len(vals)) / 1e6; math.Abs(sum.Mean-mean) > 1e-9*mean+1e-9 {
				t.Errorf("mean %v, want %v", sum.Mean, mean)
			}
		})
	}
}

func TestHistogramEmptyAndClamped(t *testing.T) {
	h := NewHistogram()
	if s := h.Snapshot(); s.Count() != 0 || s.Quantile(0.99) != 0 || s.Summary().Max != 0 {
		t.Fatalf("empty histogram: %+v", s.Summary())
	}
	h.Record(0, -time.Second) // a clock step backwards must not break anything
	h.Record(0, 100*time.Hour)
	s := h.Snapshot()
	if s.Count() != 2 || s.Max() != 100*time.Hour || s.Quantile(0) != 0 {
		t.Fatalf("clamped values: count %d max %v q0 %v", s.Count(), s.Max(), s.Quantile(0))
	}
	if q := s.Quantile(1); q != 100*time.Hour {
		t.Fatalf("q1 = %v: the top bucket is clamped to the exact max", q)
	}
}

// TestHistogramConcurrent records from many goroutines (run with -race).
func TestHistogramConcurrent(t *testing.T) {
	h := NewHistogram()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				h.Record(g, time.Duration(i)*time.Microsecond)
			}
		}()
	}
	for i := 0; i < 10; i++ {
		_ = h.Snapshot() // concurrent snapshots, as the progress line takes
	}
	wg.Wait()
	s := h.Snapshot()
	if s.Count() != 80000 || s.Max() != 9999*time.Microsecond {
		t.Fatalf("count %d max %v", s.Count(), s.Max())
	}
}

func TestHistogramRecordDoesNotAllocate(t *testing.T) {
	h := NewHistogram()
	if n := testing.AllocsPerRun(1000, func() { h.Record(3, 1234567) }); n != 0 {
		t.Fatalf("Record allocates %v times", n)
	}
}

func TestSnapshotSince(t *testing.T) {
	h := NewHistogram()
	for i := 0; i < 1000; i++ {
		h.Record(0, time.Millisecond)
	}
	first := h.Snapshot()
	for i := 0; i < 100; i++ {
		h.Record(0, time.Second)
	}
	d := h.Snapshot().Since(first)
	if d.Count() != 100 {
		t.Fatalf("count %d, want 100", d.Count())
	}
	if q := d.Quantile(0.5); math.Abs(float64(q-time.Second)) > float64(time.Second)/128 {
		t.Fatalf("median of the interval %v, want ~1s", q)
	}
	if all := h.Snapshot().Since(nil); all.Count() != 1100 || all.Quantile(0.5) > 2*time.Millisecond {
		t.Fatalf("since nil: count %d median %v", all.Count(), all.Quantile(0.5))
	}
	if e := first.Since(first); e.Count() != 0 || e.Quantile(0.99) != 0 {
		t.Fatalf("empty interval: %d", e.Count())
	}
}

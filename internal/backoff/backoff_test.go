package backoff

import (
	"testing"
	"time"
)

func TestJitterBounds(t *testing.T) {
	for _, d := range []time.Duration{1, 2, 3, 10 * time.Millisecond, time.Second + 1, 30 * time.Second} {
		lo := d - d/2 // d/2 rounded up
		// The extremes an injected Rand can return.
		if got := Jitter(d, func(int64) int64 { return 0 }); got != lo {
			t.Errorf("Jitter(%v) with rand 0 = %v, want %v", d, got, lo)
		}
		if got := Jitter(d, func(n int64) int64 { return n - 1 }); got != d {
			t.Errorf("Jitter(%v) with rand n-1 = %v, want %v", d, got, d)
		}
		// The default source stays within [d/2, d] too.
		for range 200 {
			if got := Jitter(d, nil); got < lo || got > d {
				t.Fatalf("Jitter(%v) = %v, outside [%v, %v]", d, got, lo, d)
			}
		}
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if got := Jitter(d, nil); got != d {
			t.Errorf("Jitter(%v) = %v, want it unchanged", d, got)
		}
	}
}

func TestJitterSpreadsWaits(t *testing.T) {
	// Many loops retrying after the same failure with the same bound must
	// not wait the same time: that is the whole point.
	const n = 100
	d := 100 * time.Millisecond
	seen := map[time.Duration]bool{}
	var lo, hi time.Duration = d, 0
	for range n {
		w := Jitter(d, nil)
		seen[w] = true
		lo, hi = min(lo, w), max(hi, w)
	}
	if len(seen) < n/2 {
		t.Errorf("%d draws gave only %d distinct waits", n, len(seen))
	}
	// Uniform over 50 ms: 100 draws spanning less than half of it would be
	// a broken source (probability ~1e-28 otherwise).
	if hi-lo < d/4 {
		t.Errorf("waits span only %v (from %v to %v); want them spread over [%v, %v]", hi-lo, lo, hi, d/2, d)
	}
}

func TestExpDoublesCapsAndResets(t *testing.T) {
	var asked []int64
	e := Exp{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond, Rand: func(n int64) int64 {
		asked = append(asked, n)
		return n - 1 // the top of the range: the wait equals the bound
	}}
	want := []time.Duration{10, 20, 40, 80, 100, 100}
	for i, w := range want {
		w *= time.Millisecond
		if got := e.Next(); got != w {
			t.Fatalf("wait %d = %v, want %v", i, got, w)
		}
		if e.Bound() != w {
			t.Fatalf("bound %d = %v, want %v", i, e.Bound(), w)
		}
		// The random part covers the upper half of the bound.
		if asked[i] != int64(w/2)+1 {
			t.Fatalf("wait %d drew from [0, %d), want [0, %d)", i, asked[i], int64(w/2)+1)
		}
	}
	e.Reset()
	if got := e.Next(); got != 10*time.Millisecond {
		t.Errorf("after Reset the wait is %v, want Min (10ms)", got)
	}
}

func TestExpDefaultRandWithinBounds(t *testing.T) {
	a := Exp{Min: time.Millisecond, Max: 64 * time.Millisecond}
	b := Exp{Min: time.Millisecond, Max: 64 * time.Millisecond}
	differ := 0
	for range 20 {
		wa, wb := a.Next(), b.Next()
		bound := a.Bound()
		for _, w := range []time.Duration{wa, wb} {
			if w < bound/2 || w > bound {
				t.Fatalf("wait %v outside [%v, %v]", w, bound/2, bound)
			}
		}
		if wa != wb {
			differ++
		}
	}
	// Two loops started by the same failure must not retry in lock step.
	if differ < 15 {
		t.Errorf("two back-offs waited the same time in %d of 20 steps", 20-differ)
	}
}

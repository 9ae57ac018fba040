// Package backoff computes the waits between reconnect attempts: a bound
// that doubles from a minimum to a maximum, and a wait drawn with "equal
// jitter" under that bound (half of it fixed, half random).
//
// The jitter matters because failures are shared: when Redis restarts, every
// node of a farm loses its connections at the same instant, and when a node
// dies all its clients do. Without jitter they would all retry at the same
// instants and hit the recovering server in waves; the fixed half keeps a
// retrying loop from spinning, the random half spreads the crowd out.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Rand returns a uniformly random integer in [0, n) for n > 0, like
// math/rand/v2's Int64N (the default wherever a Rand may be nil). Tests
// inject their own to make the waits predictable.
type Rand func(n int64) int64

// Jitter returns a random wait in [d/2, d] ("equal jitter"): it never
// exceeds d, so a configured delay stays an upper bound. d <= 0 is returned
// as is. A nil rnd means math/rand/v2's Int64N.
func Jitter(d time.Duration, rnd Rand) time.Duration {
	if d <= 0 {
		return d
	}
	if rnd == nil {
		rnd = rand.Int64N
	}
	half := d / 2
	// d-half is d/2 rounded up; adding [0, half] keeps the sum within d.
	return d - half + time.Duration(rnd(int64(half)+1))
}

// Exp is an exponential back-off with equal jitter: each Next doubles the
// bound (starting at Min, capped at Max) and returns a wait in
// [bound/2, bound]. Reset starts over after a success. Set Min and Max
// (0 < Min <= Max) before use. An Exp belongs to the one loop that retries;
// it is not safe for concurrent use.
type Exp struct {
	// Min is the first bound; Max caps the bound.
	Min, Max time.Duration
	// Rand draws the jitter; nil means math/rand/v2's Int64N.
	Rand Rand

	bound time.Duration
}

// Next returns the wait before the next attempt and doubles the bound.
func (e *Exp) Next() time.Duration {
	e.bound = min(max(e.bound*2, e.Min), e.Max)
	return Jitter(e.bound, e.Rand)
}

// Bound is the bound of the last wait Next returned (0 after Reset).
func (e *Exp) Bound() time.Duration { return e.bound }

// Reset makes the next wait start again from Min.
func (e *Exp) Reset() { e.bound = 0 }

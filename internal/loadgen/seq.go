package loadgen

// maxSeq bounds the sequence numbers a tracker accepts (a 2 MiB bitset), so
// that a corrupted payload cannot make it allocate without limit. At 1000
// publishes per second into one session that is over four hours.
const maxSeq = 1 << 24

// SeqTracker records which sequence numbers (1, 2, 3, ...) of one stream
// have arrived at one receiver. It is not safe for concurrent use: each
// receiver owns its trackers and reads them only from its read goroutine,
// or after that goroutine has ended.
type SeqTracker struct {
	bits      []uint64
	max       uint64
	unique    uint64
	dups      uint64
	reordered uint64
	invalid   uint64
}

// Observe records the arrival of seq and reports whether it was new. A
// sequence number below the highest one seen so far counts as reordered;
// one seen before counts as a duplicate; 0 and numbers beyond maxSeq are
// invalid.
func (t *SeqTracker) Observe(seq uint64) bool {
	if seq == 0 || seq > maxSeq {
		t.invalid++
		return false
	}
	w := int(seq >> 6)
	if w >= len(t.bits) {
		// Grow geometrically: appending one word per 64 messages would
		// reallocate far too often.
		n := max(2*len(t.bits), w+1, 4)
		nb := make([]uint64, n)
		copy(nb, t.bits)
		t.bits = nb
	}
	bit := uint64(1) << (seq & 63)
	if t.bits[w]&bit != 0 {
		t.dups++
		return false
	}
	t.bits[w] |= bit
	t.unique++
	if seq < t.max {
		t.reordered++
	} else {
		t.max = seq
	}
	return true
}

// Seen reports whether seq has arrived.
func (t *SeqTracker) Seen(seq uint64) bool {
	w := int(seq >> 6)
	return seq != 0 && w < len(t.bits) && t.bits[w]&(1<<(seq&63)) != 0
}

// Missing counts the sequence numbers in 1..upTo that never arrived.
func (t *SeqTracker) Missing(upTo uint64) uint64 {
	if upTo > maxSeq {
		upTo = maxSeq
	}
	var seen uint64
	if upTo >= t.max {
		seen = t.unique
	} else {
		for s := uint64(1); s <= upTo; s++ {
			if t.Seen(s) {
				seen++
			}
		}
	}
	return upTo - min(seen, upTo)
}

// Unique is the number of distinct sequence numbers seen.
func (t *SeqTracker) Unique() uint64 { return t.unique }

// Duplicates is the number of arrivals of an already seen number.
func (t *SeqTracker) Duplicates() uint64 { return t.dups }

// Reordered is the number of arrivals below the highest number seen before.
func (t *SeqTracker) Reordered() uint64 { return t.reordered }

// Invalid is the number of arrivals with an out-of-range number.
func (t *SeqTracker) Invalid() uint64 { return t.invalid }

// Max is the highest sequence number seen.
func (t *SeqTracker) Max() uint64 { return t.max }

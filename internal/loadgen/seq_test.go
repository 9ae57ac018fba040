package loadgen

import "testing"

func TestSeqTrackerInOrder(t *testing.T) {
	var tr SeqTracker
	for s := uint64(1); s <= 1000; s++ {
		if !tr.Observe(s) {
			t.Fatalf("seq %d not new", s)
		}
	}
	if tr.Missing(1000) != 0 || tr.Unique() != 1000 || tr.Duplicates() != 0 || tr.Reordered() != 0 || tr.Max() != 1000 {
		t.Fatalf("in order: missing %d unique %d dups %d reordered %d", tr.Missing(1000), tr.Unique(), tr.Duplicates(), tr.Reordered())
	}
	// Publishes the receiver never saw at the end count as missing too.
	if m := tr.Missing(1010); m != 10 {
		t.Fatalf("missing(1010) = %d, want 10", m)
	}
}

func TestSeqTrackerLoss(t *testing.T) {
	var tr SeqTracker
	lost := map[uint64]bool{1: true, 64: true, 65: true, 500: true, 999: true}
	for s := uint64(1); s <= 1000; s++ {
		if !lost[s] {
			tr.Observe(s)
		}
	}
	if m := tr.Missing(1000); m != uint64(len(lost)) {
		t.Fatalf("missing %d, want %d", m, len(lost))
	}
	for s := range lost {
		if tr.Seen(s) {
			t.Fatalf("seq %d reported seen", s)
		}
	}
	// Missing up to a number below the maximum counts that prefix only.
	if m := tr.Missing(100); m != 3 {
		t.Fatalf("missing(100) = %d, want 3 (1, 64, 65)", m)
	}
	if tr.Reordered() != 0 {
		t.Fatalf("gaps are not reordering: %d", tr.Reordered())
	}
}

func TestSeqTrackerDuplicates(t *testing.T) {
	var tr SeqTracker
	for _, s := range []uint64{1, 2, 2, 3, 1, 3, 3, 4} {
		tr.Observe(s)
	}
	if tr.Unique() != 4 || tr.Duplicates() != 4 || tr.Missing(4) != 0 {
		t.Fatalf("unique %d dups %d missing %d", tr.Unique(), tr.Duplicates(), tr.Missing(4))
	}
	if tr.Reordered() != 0 {
		t.Fatalf("duplicates are not reordering: %d", tr.Reordered())
	}
}

func TestSeqTrackerReordering(t *testing.T) {
	var tr SeqTracker
	// 3 and 2 arrive after 4; 7 after 8; nothing lost.
	for _, s := range []uint64{1, 4, 3, 2, 5, 6, 8, 7, 9} {
		if !tr.Observe(s) {
			t.Fatalf("seq %d not new", s)
		}
	}
	if tr.Reordered() != 3 || tr.Missing(9) != 0 || tr.Duplicates() != 0 || tr.Max() != 9 {
		t.Fatalf("reordered %d missing %d dups %d max %d", tr.Reordered(), tr.Missing(9), tr.Duplicates(), tr.Max())
	}
	// A late duplicate of a reordered message is a duplicate, not a
	// reordering.
	tr.Observe(3)
	if tr.Reordered() != 3 || tr.Duplicates() != 1 {
		t.Fatalf("after late duplicate: reordered %d dups %d", tr.Reordered(), tr.Duplicates())
	}
}

func TestSeqTrackerInvalidAndBounded(t *testing.T) {
	var tr SeqTracker
	if tr.Observe(0) || tr.Observe(maxSeq+1) || tr.Observe(1<<63) {
		t.Fatal("out-of-range sequence numbers accepted")
	}
	if tr.Invalid() != 3 || len(tr.bits) != 0 {
		t.Fatalf("invalid %d, bitset %d words", tr.Invalid(), len(tr.bits))
	}
	if !tr.Observe(maxSeq) || tr.Missing(maxSeq) != maxSeq-1 {
		t.Fatalf("largest sequence number: missing %d", tr.Missing(maxSeq))
	}
}

func TestSeqTrackerObserveAmortised(t *testing.T) {
	var tr SeqTracker
	s := uint64(0)
	// After warming up, observing in order allocates only when the bitset
	// doubles: far less than once per message.
	n := testing.AllocsPerRun(10000, func() { s++; tr.Observe(s) })
	if n > 0.01 {
		t.Fatalf("Observe allocates %.3f times per call", n)
	}
}

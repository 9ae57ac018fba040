package redisconn

import "testing"

func TestSlot(t *testing.T) {
	// Values of CLUSTER KEYSLOT on a real cluster.
	for key, want := range map[string]int{
		"foo": 12182, "bar": 5061, "{foo}.x": 12182, "a{bar}b": 5061,
	} {
		if got := Slot(key); got != want {
			t.Errorf("Slot(%q) = %d, want %d", key, got, want)
		}
	}
	// An empty tag hashes the whole key.
	if Slot("{}foo") == Slot("{}bar") {
		t.Errorf("empty hash tag: {}foo and {}bar share a slot")
	}
	if Slot("foo{}{bar}") == Slot("bar") {
		t.Errorf("foo{}{bar}: only the first {...} is a tag, and it is empty")
	}
}

func TestSpreadTag(t *testing.T) {
	for _, n := range []int{1, 3, 16} {
		seen := map[string]bool{}
		for i := range n {
			tag := SpreadTag("b"+string(rune('a'+i)), i, n)
			if seen[tag] {
				t.Fatalf("n=%d: tag %s twice", n, tag)
			}
			seen[tag] = true
			if s, lo, hi := Slot("{"+tag+"}"), i*ClusterSlots/n, (i+1)*ClusterSlots/n; s < lo || s >= hi {
				t.Errorf("n=%d: tag %d (%s) in slot %d, outside [%d,%d)", n, i, tag, s, lo, hi)
			}
		}
	}
}

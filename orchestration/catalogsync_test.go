package orchestration

import (
	"context"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// TestCatalogDrift: nodes loading the same agents agree; a node whose
// catalogue lacks an agent (or has another) is seen by every node as
// differing within a few intervals, and the drift ends when that node
// stops (its listing is removed).
func TestCatalogDrift(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"writer": failing{}, "reviewer": failing{}})
		cfg := func(node string) Config {
			c := testConfig(node, 0)
			c.CatalogInterval = 50 * time.Millisecond
			return c
		}
		n1 := v.node(cfg("n1"), nil)
		n2 := v.node(cfg("n2"), nil)
		waitFor(t, 2*time.Second, "both nodes listed", func() bool {
			n, _ := v.rdb.HLen(context.Background(), "t:agent-catalogs").Result()
			return n == 2
		})
		// Both listed, and each compared after the other listed: no drift.
		waitFor(t, 2*time.Second, "a comparison after both listed", func() bool {
			return n1.catalogOthers() == 1 && n2.catalogOthers() == 1
		})
		if d1, d2 := n1.CatalogDrift(), n2.CatalogDrift(); d1 != 0 || d2 != 0 {
			t.Fatalf("same catalogues: drift %d and %d, want 0", d1, d2)
		}
		other := NewMemoryCatalog()
		other.Add(contract.AgentInfo{ID: "writer", Name: "writer"}, failing{})
		n3 := v.node(cfg("n3"), other)
		waitFor(t, 3*time.Second, "every node sees the drift", func() bool {
			return n1.CatalogDrift() == 1 && n2.CatalogDrift() == 1 && n3.CatalogDrift() == 2
		})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n3.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 3*time.Second, "the drift ends with the odd node gone", func() bool {
			return n1.CatalogDrift() == 0 && n2.CatalogDrift() == 0
		})
		if ok, _ := v.rdb.HExists(ctx, "t:agent-catalogs", "n3").Result(); ok {
			t.Fatal("the stopped node's listing is still there")
		}
	})
}

func TestDiffAgents(t *testing.T) {
	for _, c := range []struct {
		mine, theirs []string
		want         string
	}{
		{[]string{"a", "b"}, []string{"a"}, "lacks b"},
		{[]string{"a"}, []string{"a", "c"}, "also has c"},
		{[]string{"a", "b"}, []string{"a", "c"}, "lacks b, also has c"},
		{[]string{"a"}, []string{"a"}, "same agents, other settings"},
	} {
		if got := diffAgents(c.mine, c.theirs); got != c.want {
			t.Errorf("diffAgents(%v, %v) = %q, want %q", c.mine, c.theirs, got, c.want)
		}
	}
}

// catalogOthers is how many other live nodes the last comparison saw.
func (e *Engine) catalogOthers() int {
	e.catalog.mu.Lock()
	defer e.catalog.mu.Unlock()
	return e.catalog.others
}

package orchestration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Agent catalogue drift.
//
// Every node loads its agent catalogue from its own file, and any node's
// worker may take any job: a node whose file lacks an agent (half-way
// through a configuration rollout, say) fails the jobs of that agent it
// takes, and answers GetAgents differently from the others. The catalogue
// watch makes such a farm visible instead of silently flaky: each node
// lists its catalogue in Redis (the hash <prefix>:agent-catalogs, one field
// per node: the agent ids and a digest of their public descriptions, and
// when it was written), refreshed every CatalogInterval, and compares it
// with the entries the other live nodes refreshed within three intervals.
// When they differ it logs a warning naming the nodes and the agents (once
// per change) and CatalogDrift reports how many nodes differ (a metric and
// an alert read it). Entries of nodes gone for ten intervals are removed.

// catalogListing is a node's listing in the agent-catalogs hash.
type catalogListing struct {
	Digest string   `json:"digest"`
	Agents []string `json:"agents"`
	At     int64    `json:"at"` // unix ms
}

// catalogWatch holds what the last comparison found.
type catalogWatch struct {
	mu      sync.Mutex
	drift   int    // other live nodes whose catalogue differs
	others  int    // other live nodes compared with
	lastLog string // the drift last logged ("" when none)
}

// catalogListingOf describes the local catalogue: its agent ids, sorted,
// and a digest of their public descriptions (what GetAgents shows, which
// holds no secret).
func (e *Engine) catalogListingOf(now time.Time) catalogListing {
	list := e.agents.List()
	slices.SortFunc(list, func(a, b contract.AgentInfo) int { return strings.Compare(a.ID, b.ID) })
	ids := make([]string, len(list))
	for i, a := range list {
		ids[i] = a.ID
	}
	body, _ := json.Marshal(list)
	sum := sha256.Sum256(body)
	return catalogListing{Digest: hex.EncodeToString(sum[:12]), Agents: ids, At: now.UnixMilli()}
}

// catalogLoop lists this node's catalogue and compares it with the other
// nodes' until the engine stops; then it removes its listing.
func (e *Engine) catalogLoop(stop <-chan struct{}) {
	e.syncCatalog()
	t := time.NewTicker(e.cfg.CatalogInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			ctx, cancel := context.WithTimeout(context.Background(), e.cfg.OpTimeout)
			if err := e.rdb.HDel(ctx, e.keys.agentCatalogs(), e.cfg.NodeID).Err(); err != nil {
				e.log.Debug("agent catalogue: remove listing", "err", err)
			}
			cancel()
			return
		case <-t.C:
			e.syncCatalog()
		}
	}
}

// syncCatalog writes this node's listing and compares it with the others'.
func (e *Engine) syncCatalog() {
	ctx, cancel := e.op()
	defer cancel()
	now := e.cfg.Now()
	mine := e.catalogListingOf(now)
	body, _ := json.Marshal(mine)
	key := e.keys.agentCatalogs()
	// Write ours and read everyone's in one round trip.
	var get *redis.MapStringStringCmd
	if _, err := e.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, e.cfg.NodeID, body)
		get = p.HGetAll(ctx, key)
		return nil
	}); err != nil {
		e.log.Warn("agent catalogue: list in Redis and read the farm's listings", "err", err)
		return
	}
	all := get.Val()
	live := now.Add(-3 * e.cfg.CatalogInterval).UnixMilli()
	gone := now.Add(-10 * e.cfg.CatalogInterval).UnixMilli()
	var differ, stale []string
	others := 0
	for node, raw := range all {
		if node == e.cfg.NodeID {
			continue
		}
		var l catalogListing
		if json.Unmarshal([]byte(raw), &l) != nil || l.At < gone {
			stale = append(stale, node)
			continue
		}
		if l.At < live {
			continue
		}
		others++
		if l.Digest == mine.Digest {
			continue
		}
		differ = append(differ, node+" ("+diffAgents(mine.Agents, l.Agents)+")")
	}
	if len(stale) > 0 {
		_ = e.rdb.HDel(ctx, key, stale...).Err()
	}
	slices.Sort(differ)
	report := strings.Join(differ, "; ")
	e.catalog.mu.Lock()
	e.catalog.drift, e.catalog.others = len(differ), others
	changed := report != e.catalog.lastLog
	e.catalog.lastLog = report
	e.catalog.mu.Unlock()
	switch {
	case changed && report != "":
		e.log.Warn("agent catalogue differs from other nodes': load the same agents file on every node",
			"nodes", report, "agents", strings.Join(mine.Agents, ","))
	case changed:
		e.log.Info("agent catalogue agrees with every live node's again")
	}
}

// diffAgents says how another node's agent ids differ from ours.
func diffAgents(mine, theirs []string) string {
	var missing, extra []string
	for _, id := range mine {
		if !slices.Contains(theirs, id) {
			missing = append(missing, id)
		}
	}
	for _, id := range theirs {
		if !slices.Contains(mine, id) {
			extra = append(extra, id)
		}
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "lacks "+strings.Join(missing, ","))
	}
	if len(extra) > 0 {
		parts = append(parts, "also has "+strings.Join(extra, ","))
	}
	if len(parts) == 0 {
		return "same agents, other settings"
	}
	return strings.Join(parts, ", ")
}

// CatalogDrift is the number of other live nodes whose agent catalogue
// differs from this node's, as of the last comparison (every
// Config.CatalogInterval). 0 on a healthy farm.
func (e *Engine) CatalogDrift() int {
	e.catalog.mu.Lock()
	defer e.catalog.mu.Unlock()
	return e.catalog.drift
}

package orchestration

import (
	"slices"
	"sync"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// MemoryCatalog is an in-memory AgentCatalog. The zero value is empty and
// ready to use.
type MemoryCatalog struct {
	mu     sync.RWMutex
	agents map[string]catalogEntry
}

type catalogEntry struct {
	agent Agent
	info  contract.AgentInfo
}

// NewMemoryCatalog returns an empty catalog.
func NewMemoryCatalog() *MemoryCatalog { return &MemoryCatalog{} }

// Add registers (or replaces) the agent info.ID.
func (c *MemoryCatalog) Add(info contract.AgentInfo, a Agent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agents == nil {
		c.agents = map[string]catalogEntry{}
	}
	c.agents[info.ID] = catalogEntry{agent: a, info: info}
}

// Remove unregisters an agent.
func (c *MemoryCatalog) Remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.agents, id)
}

// Lookup implements AgentCatalog.
func (c *MemoryCatalog) Lookup(id string) (Agent, contract.AgentInfo, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.agents[id]
	return e.agent, e.info, ok
}

// List implements AgentCatalog; agents come sorted by id.
func (c *MemoryCatalog) List() []contract.AgentInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]contract.AgentInfo, 0, len(c.agents))
	for _, e := range c.agents {
		out = append(out, e.info)
	}
	slices.SortFunc(out, func(a, b contract.AgentInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

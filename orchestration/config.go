package orchestration

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
)

// Config configures an Engine. Zero durations and counts take the defaults
// documented on each field, except Workers: 0 means "no workers" (an
// API-only node); [DefaultConfig] sets it to [DefaultWorkers].
type Config struct {
	// Prefix is put before every Redis key ("hf"). With one partition on
	// Redis Cluster every engine key must hash to one slot: use a hash tag
	// such as "{hf}". With more partitions the keys carry their own hash
	// tags and the prefix must not contain "{" or "}".
	Prefix string
	// Partitions is the number of job streams (1). Each partition has its
	// own stream, consumer group, delayed set, dead-letter stream and
	// deadline set under its own hash tag; a plan's jobs go to the
	// partition its id hashes to, an agent message's to its session's. On
	// Redis Cluster, more partitions spread the job load over the shards.
	// Every node of a farm must use the same value, and changing it strands
	// the jobs and plans of the old layout. Workers, when not 0, must be
	// at least Partitions (each partition's reader waits for a free worker).
	Partitions int
	// NodeID names this node's consumer in the job group; it must be unique
	// among live nodes (default: hostname-pid-random).
	NodeID string
	// Workers is the number of concurrent step runners Start launches
	// (DefaultConfig: DefaultWorkers; 0 = none, and then no reader,
	// reclaimer or scheduler runs either: the node only serves the API).
	// Every worker holds a Redis connection while it waits for a job (a
	// blocked read) or runs one, so the client's pool needs more than
	// Workers connections.
	Workers int
	// VisibilityTimeout is how long a delivered job may go without a claim
	// refresh before another node's reclaimer takes it over (30s).
	VisibilityTimeout time.Duration
	// ClaimRefresh is how often a running job refreshes its claim
	// (VisibilityTimeout/3). Must be below VisibilityTimeout.
	ClaimRefresh time.Duration
	// PollInterval is how often a running job checks for cancellation,
	// plan timeout or a lost claim (250ms): the bound on how fast a step
	// stops after CancelExecution on any node.
	PollInterval time.Duration
	// ReclaimInterval is how often the reclaimer looks for abandoned jobs
	// (VisibilityTimeout/4, at least 50ms).
	ReclaimInterval time.Duration
	// BlockTimeout bounds one blocking read of the job stream (1s); it is
	// also the worst-case delay for workers to notice Shutdown.
	BlockTimeout time.Duration
	// SchedulerInterval is how often due retries are moved back to the job
	// stream and expired plan deadlines are enforced (100ms).
	SchedulerInterval time.Duration
	// MaxAttempts is how many times a step may start before its job is
	// dead-lettered (3). Worker crashes count as attempts.
	MaxAttempts int
	// RetryBackoff is the delay before the second attempt (500ms); it
	// doubles for each further attempt up to RetryBackoffMax (30s).
	RetryBackoff    time.Duration
	RetryBackoffMax time.Duration
	// StepTimeout, when set, overrides the per-strategy step timeouts of
	// CONTRACT §7 (5, 10 or 8 minutes) for plans built by this node; a
	// plan's constraints.stepTimeout overrides both.
	StepTimeout time.Duration
	// PlanTimeout is the default plan timeout (30 min); constraints.timeout
	// (or planTimeout) overrides it per plan.
	PlanTimeout time.Duration
	// MaxSteps is the largest maxSteps a request may ask for (50).
	MaxSteps int
	// PlanRetention is how long a plan stays readable after it finishes
	// (or after creation, if it is never executed) (24h).
	PlanRetention time.Duration
	// OpTimeout bounds each Redis operation the engine makes on its own
	// behalf (5s).
	OpTimeout time.Duration
	// AgentTimeout bounds one attempt at answering an agent message (5
	// min); an attempt that runs out is not retried: the caller and the
	// session get ReceiveError with code TIMEOUT.
	AgentTimeout time.Duration
	// AgentIdleAfter is how long a node goes on counting an agent as
	// served after its last call of it ended (200ms): a call that follows
	// within it (the next step of a plan, the next message) keeps the
	// agent Busy without a Ready and a Busy in between, and calls cost no
	// Redis round trip while they keep coming. It delays the agent's
	// Ready (or Error) by as much. See agentstatus.go.
	AgentIdleAfter time.Duration
	// CatalogInterval is how often the node lists its agent catalogue in
	// Redis and compares it with the other nodes' (see catalogsync.go).
	// Default 30s.
	CatalogInterval time.Duration
	// ConversationMessages is how many recent messages of a session an
	// agent message job carries (20, the new message included), and
	// ConversationBytes bounds their total size (256 KiB; older messages
	// are dropped first, the new one is always kept).
	ConversationMessages int
	ConversationBytes    int
	// ConversationTTL is how long a session's conversation is kept after
	// its last message (7 days, the session store's default TTL).
	ConversationTTL time.Duration
	// MessageRetention is how long an agent message job's record stays
	// after it finished (1h), so a redelivered job finds it done.
	MessageRetention time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Observer, when set, receives job, plan and agent events for metrics
	// (see Observer; nil: none).
	Observer Observer
}

// DefaultWorkers is DefaultConfig's worker count. A worker mostly waits:
// on Redis for a quick step, on the agent's API or process for a real one,
// so a node runs many at once on few cores; the readers take no more jobs
// than workers are free, so idle workers cost nothing.
const DefaultWorkers = 16

// DefaultConfig returns the defaults, with DefaultWorkers workers and the
// given node id.
func DefaultConfig(nodeID string) Config {
	c := Config{NodeID: nodeID, Workers: DefaultWorkers}
	c.fill()
	return c
}

func (c *Config) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Prefix == "" {
		c.Prefix = "hf"
	}
	if c.Partitions <= 0 {
		c.Partitions = 1
	}
	if c.NodeID == "" {
		host, _ := os.Hostname()
		c.NodeID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	def(&c.VisibilityTimeout, 30*time.Second)
	def(&c.ClaimRefresh, c.VisibilityTimeout/3)
	def(&c.PollInterval, 250*time.Millisecond)
	def(&c.ReclaimInterval, max(c.VisibilityTimeout/4, 50*time.Millisecond))
	def(&c.BlockTimeout, time.Second)
	def(&c.SchedulerInterval, 100*time.Millisecond)
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	def(&c.RetryBackoff, 500*time.Millisecond)
	def(&c.RetryBackoffMax, 30*time.Second)
	def(&c.PlanTimeout, 30*time.Minute)
	if c.MaxSteps <= 0 {
		c.MaxSteps = 50
	}
	def(&c.PlanRetention, 24*time.Hour)
	def(&c.OpTimeout, 5*time.Second)
	def(&c.AgentTimeout, 5*time.Minute)
	def(&c.AgentIdleAfter, 200*time.Millisecond)
	def(&c.CatalogInterval, 30*time.Second)
	if c.ConversationMessages <= 0 {
		c.ConversationMessages = 20
	}
	if c.ConversationBytes <= 0 {
		c.ConversationBytes = 256 << 10
	}
	def(&c.ConversationTTL, 7*24*time.Hour)
	def(&c.MessageRetention, time.Hour)
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	switch {
	case c.Workers < 0:
		return fmt.Errorf("orchestration: Workers must not be negative (got %d)", c.Workers)
	case c.ClaimRefresh >= c.VisibilityTimeout:
		return fmt.Errorf("orchestration: ClaimRefresh (%v) must be below VisibilityTimeout (%v)", c.ClaimRefresh, c.VisibilityTimeout)
	case c.BlockTimeout < time.Millisecond:
		return fmt.Errorf("orchestration: BlockTimeout must be at least 1ms")
	case c.Partitions > 1 && strings.ContainsAny(c.Prefix, "{}"):
		return fmt.Errorf("orchestration: with %d partitions Prefix (%q) must not contain a hash tag", c.Partitions, c.Prefix)
	case c.Partitions > redisconn.ClusterSlots:
		return fmt.Errorf("orchestration: Partitions must be at most %d (got %d)", redisconn.ClusterSlots, c.Partitions)
	case c.Workers > 0 && c.Workers < c.Partitions:
		return fmt.Errorf("orchestration: Workers (%d) must be at least Partitions (%d)", c.Workers, c.Partitions)
	}
	return nil
}

// backoff returns the delay before attempt n+1 after attempt n failed.
func (c *Config) backoff(n int) time.Duration {
	d := c.RetryBackoff
	for i := 1; i < n && d < c.RetryBackoffMax; i++ {
		d *= 2
	}
	return min(d, c.RetryBackoffMax)
}

// Package backplane is everything Redis-shaped about the farm's real-time
// layer: cross-node fan-out over Redis pub/sub, the farm-wide registry of
// connections, groups and users, node heartbeats and the cleanup of dead
// nodes by the survivors.
//
// Delivery guarantees (what the hub node may rely on):
//   - Frames are published as opaque bytes, serialised once by the caller; the
//     receiving node writes the same bytes to each local member.
//   - A node never receives its own publications back: the publisher delivers
//     to its local members itself (so local delivery keeps working while Redis
//     is down), and the backplane drops messages whose origin is this node.
//     (Messages a node addresses to its own inbox, e.g. PublishNodeControl to
//     itself, are the exception: they are delivered.)
//   - Order: publications from one node are sent to Redis in call order over a
//     single ordered pipeline, so frames from one sender to one group arrive at
//     every remote member in send order. On Redis Cluster the order holds
//     per channel (indeed per bucket of channels), not across buckets:
//     their messages travel through different masters and connections.
//   - At-most-once: pub/sub keeps nothing. What must survive a Redis outage is
//     kept elsewhere (session history streams). A publication the Redis client
//     re-sent after a connection error is recognised by its sequence number
//     and delivered once.
//   - JoinGroup returns only after Redis has confirmed the group channel
//     subscription, so a publication made after JoinGroup returns reaches the
//     joined connection. The same holds for the user channel and
//     RegisterConnection.
//
// Redis outage: Publish and the registry operations return wrapped errors
// within their ctx; local state is kept. The loops back off and keep
// trying; go-redis reconnects the subscription and re-subscribes every
// channel, and a health check re-subscribes anything Redis refused or lost
// and replaces a connection that went silent. Ready is red until the
// subscription delivers again. When Redis comes back without the node's
// data (restarted empty, or a survivor reaped the node during a partition),
// the heartbeat re-registers every local connection and its groups.
//
// Topologies: on one server or a Sentinel-managed primary (a go-redis
// Client or FailoverClient) fan-out is PUBLISH/SUBSCRIBE on one pub/sub
// connection. On Redis Cluster (a ClusterClient) it is sharded pub/sub
// (SPUBLISH/SSUBSCRIBE), channels grouped into ShardBuckets hash-tagged
// buckets with one connection each (see keys.go and receiver.go), and the
// registry writes that span slots are per-key commands (scripts.go). After
// a failover or a slot move, subscriptions are restored at the new owner.
//
// Node loss: a node that missed DeadAfterMissed heartbeats is removed by one
// survivor: its connections leave every group and user set atomically, one
// connection per script call, and OnNodeDead runs once.
//
// The key and channel layout is described in keys.go, the envelope wire
// format in envelope.go, the goroutines and the shutdown order on Backplane.
package backplane

import (
	"errors"
	"time"
)

// Scope says which kind of target a delivery addresses.
type Scope byte

// Delivery scopes.
const (
	ScopeGroup      Scope = 1 // every local member of Key (a group name)
	ScopeUser       Scope = 2 // every local connection of Key (a user id)
	ScopeAll        Scope = 3 // every local connection
	ScopeConnection Scope = 4 // the local connection Key (a connection id)
	ScopeNode       Scope = 5 // a control message for this node
)

// Kind says what a delivery carries.
type Kind byte

// Delivery kinds.
const (
	KindFrame      Kind = 1 // Frame is a complete hub protocol frame to write
	KindJoinGroup  Kind = 2 // every local connection of user Key joins group Arg
	KindLeaveGroup Kind = 3 // every local connection of user Key leaves group Arg
	KindClose      Kind = 4 // close local connection Key; Arg is the reason
	KindControl    Kind = 5 // an application control message: Arg names it, Frame is its body
)

// Delivery is one message received from another node.
type Delivery struct {
	Scope   Scope
	Kind    Kind
	Key     string // group name, user id or connection id, per Scope
	Arg     string // group name for Join/LeaveGroup, reason for Close, name for Control
	Exclude string // connection id that must not receive the frame ("" = none)
	Origin  string // node id of the publisher
	Frame   []byte // valid only during the Handler call; copy to keep
}

// Handler receives deliveries from other nodes. It is called from the
// backplane's single receive goroutine in arrival order and must not block:
// hand slow work to a queue.
type Handler func(d Delivery)

// ConnInfo is the registry entry of a connection.
type ConnInfo struct {
	ID          string
	Hub         string
	User        string
	Remote      string
	ConnectedAt time.Time
}

// NodeInfo is the registry entry of a live node.
type NodeInfo struct {
	ID            string
	Address       string
	Started       time.Time
	LastHeartbeat time.Time
	Connections   int
	// MessagesIn and MessagesOut are the node's cumulative message counts
	// as of its last heartbeat (Config.NodeStats), so that any node can
	// show every node's message rate; zero when the node reports none.
	MessagesIn, MessagesOut uint64
}

// NodeStats is what a node publishes about its traffic with each heartbeat.
type NodeStats struct {
	// MessagesIn and MessagesOut count the records the node received from
	// and sent to its clients since it started.
	MessagesIn, MessagesOut uint64
}

// Config configures a Backplane. Zero fields take the defaults documented on
// each field; withDefaults fills them in, in one place.
type Config struct {
	// Prefix starts every key and channel name, so several farms can share
	// one Redis. Default "hf".
	Prefix string
	// NodeID names this node farm-wide. Required; it must not contain ':'
	// (it is embedded in key names). Two live nodes must never share one.
	NodeID string
	// Address is the node's advertised address, stored in its node hash for
	// operators and tools (informational only).
	Address string
	// HeartbeatInterval is how often the node refreshes its heartbeat, and
	// how often the reaper and the subscription health check run.
	// Default 2s.
	HeartbeatInterval time.Duration
	// DeadAfterMissed is the number of missed heartbeats after which a node
	// is dead and its connections are removed by a survivor. Default 3.
	// Node clocks must agree to well within DeadAfterMissed*HeartbeatInterval
	// (heartbeat scores are the nodes' own clocks).
	DeadAfterMissed int
	// PublishQueue is how many publications may wait for the publisher
	// before Publish blocks (until its ctx ends). Default 65536.
	PublishQueue int
	// PublishBatch is the most publications sent in one pipelined round trip.
	// Default 256.
	PublishBatch int
	// Now is the clock for heartbeats and dead-node detection. Default
	// time.Now.
	Now func() time.Time
	// NodeStats, if set, is read at every heartbeat and published with it
	// (see NodeInfo). It must be cheap and safe to call from the heartbeat
	// goroutine. Default: none (the counts are zero).
	NodeStats func() NodeStats
	// OnNodeDead, if set, is called after this node removed a dead node's
	// connections from the registry. Exactly one survivor cleans up a given
	// dead node, so across the farm the hook runs once per death. It runs
	// on the reaper goroutine: hand long work elsewhere.
	OnNodeDead func(nodeID string)
	// ShardBuckets is the number of channel buckets on Redis Cluster, where
	// fan-out uses sharded pub/sub (SPUBLISH/SSUBSCRIBE): every channel
	// hashes into a bucket whose hash tag puts all its channels in one
	// slot, and the node holds one sharded pub/sub connection per bucket
	// however many groups it follows. More buckets spread the channels over
	// more slots (and so masters); fewer keep fewer connections. Ignored on
	// one server or Sentinel (one pub/sub connection). Default 16.
	ShardBuckets int
	// OnPublished, if set, receives the latency of every publication whose
	// caller got its result: from the Publish call to Redis' answer (or to
	// the failure of an item whose ctx ended while queued), queue wait
	// included; for Post, from the call to Redis' answer. Calls that gave
	// up waiting are not observed. It runs on the publishing goroutine (for
	// Post, the publisher's) and must be cheap (a histogram observation).
	OnPublished func(d time.Duration)
}

// Defaults of Config.
const (
	DefaultPrefix            = "hf"
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultDeadAfterMissed   = 3
	DefaultPublishQueue      = 65536
	DefaultPublishBatch      = 256
	DefaultShardBuckets      = 16
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.DeadAfterMissed <= 0 {
		c.DeadAfterMissed = DefaultDeadAfterMissed
	}
	if c.PublishQueue <= 0 {
		c.PublishQueue = DefaultPublishQueue
	}
	if c.PublishBatch <= 0 {
		c.PublishBatch = DefaultPublishBatch
	}
	if c.ShardBuckets <= 0 {
		c.ShardBuckets = DefaultShardBuckets
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// deadAfter is how long a node may go without a heartbeat before it is dead.
func (c Config) deadAfter() time.Duration {
	return time.Duration(c.DeadAfterMissed) * c.HeartbeatInterval
}

// Stats is a snapshot of the backplane's counters, for metrics. Counters
// only grow; Subscriptions and QueueLen are current values.
type Stats struct {
	Published     uint64 // publications Redis accepted
	PublishErrors uint64 // publications that failed (Redis error, or their ctx ended while queued)
	Received      uint64 // deliveries handed to the Handler
	Dropped       uint64 // messages read but not delivered: undecodable, or the Handler panicked
	Duplicates    uint64 // messages dropped as re-sends of one already delivered (client retries)
	Reconnects    uint64 // times a subscription connection was lost and re-established
	Subscriptions int    // channels this node is subscribed to (inbox, all, groups, users; not probes)
	NodeReaps     uint64 // dead nodes this node cleaned up
	QueueLen      int    // publications waiting for the publisher
}

// Errors returned by the backplane; match them with errors.Is.
var (
	// ErrClosed is returned by every operation after Shutdown began.
	ErrClosed = errors.New("backplane: closed")
	// ErrNotStarted is returned by operations that need Start first.
	ErrNotStarted = errors.New("backplane: not started")
	// ErrUnknownConnection is returned when a connection id is in the
	// registry of no node.
	ErrUnknownConnection = errors.New("backplane: unknown connection")
	// ErrNoReceiver is returned by a message to a node inbox that no node
	// was subscribed to: the addressed node is gone (and not yet reaped).
	ErrNoReceiver = errors.New("backplane: no receiver")
	// ErrInvalidScope is returned by Publish for a scope it does not fan
	// out (use PublishConnection for a single connection).
	ErrInvalidScope = errors.New("backplane: invalid scope")
)

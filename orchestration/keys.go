package orchestration

import (
	"hash/fnv"
	"strconv"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
)

// keys are the engine's Redis keys (see the package documentation for the
// layout).
//
// With one partition the layout is the historical one: a single job stream
// and every key spelled from the prefix alone (on Redis Cluster the prefix
// then carries a hash tag, putting the whole engine in one slot). With N > 1
// partitions every partition has its own job stream, dead-letter stream,
// delayed set and deadline set, all under the partition's hash tag, and a
// plan (or a session's agent messages and conversation) lives under the tag
// of the partition it hashes to: every Lua script touches keys of exactly
// one slot, and the job load spreads over the cluster's shards.
type keys struct {
	prefix string
	parts  []partKeys
}

// partKeys are the keys of one partition.
type partKeys struct {
	tag       string // "{...}" with N > 1 partitions, "" with one
	jobs      string // job stream with the "workers" group
	dead      string // dead-letter stream
	delayed   string // retries waiting for their back-off
	deadlines string // running plans by deadline
}

func newKeys(prefix string, partitions int) keys {
	k := keys{prefix: prefix}
	if partitions <= 1 {
		k.parts = []partKeys{{jobs: prefix + ":jobs", dead: prefix + ":jobs:dead",
			delayed: prefix + ":jobs:delayed", deadlines: prefix + ":plans:deadlines"}}
		return k
	}
	for i := range partitions {
		t := partitionTag(i, partitions)
		k.parts = append(k.parts, partKeys{tag: t, jobs: prefix + ":jobs:" + t, dead: prefix + ":jobs:" + t + ":dead",
			delayed: prefix + ":jobs:" + t + ":delayed", deadlines: prefix + ":plans:" + t + ":deadlines"})
	}
	return k
}

// partitionTag is the hash tag of partition i of n: "{p<i>}" or, when that
// slot falls outside the i-th n-th of the slot space, the first "{p<i>.<k>}"
// whose slot falls inside it. Clusters created with an even slot split
// (redis-cli --cluster create) then put the partitions on different
// masters. It is a pure function of i and n, so every node agrees.
func partitionTag(i, n int) string {
	return "{" + redisconn.SpreadTag("p"+strconv.Itoa(i), i, n) + "}"
}

// partitioned reports whether there is more than one partition.
func (k keys) partitioned() bool { return len(k.parts) > 1 }

// partOf is the partition of a plan id or a session id.
func (k keys) partOf(id string) int {
	if len(k.parts) == 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(id))
	return int(h.Sum32() % uint32(len(k.parts)))
}

// part returns the keys of the partition of a plan or session id.
func (k keys) part(id string) partKeys { return k.parts[k.partOf(id)] }

// plan is a plan's hash; it lives in the partition of its id.
func (k keys) plan(id string) string {
	if t := k.part(id).tag; t != "" {
		return k.prefix + ":plan:" + t + ":" + id
	}
	return k.prefix + ":plan:" + id
}

// msg is an agent message job's record; it lives in the partition of its
// session (p = partOf(sessionID)), with the session's conversation.
func (k keys) msg(p int, id string) string {
	if t := k.parts[p].tag; t != "" {
		return k.prefix + ":msg:" + t + ":" + id
	}
	return k.prefix + ":msg:" + id
}

// conv is a session's recent conversation (agent messages and answers).
func (k keys) conv(sessionID string) string {
	if t := k.part(sessionID).tag; t != "" {
		return k.prefix + ":conv:" + t + ":" + sessionID
	}
	return k.prefix + ":conv:" + sessionID
}

// agentTag is the hash tag shared by an agent's keys when partitioned. The
// "a:" keeps the tag non-empty (an empty tag would hash the whole key).
func (k keys) agentTag(agentID string) string {
	if !k.partitioned() {
		return agentID
	}
	return "{a:" + agentID + "}"
}

// agentCatalogs is the hash of every node's agent catalogue listing
// (catalogsync.go).
func (k keys) agentCatalogs() string { return k.prefix + ":agent-catalogs" }

// agentRunning is the set of answers an agent is giving, farm-wide.
func (k keys) agentRunning(agentID string) string {
	return k.prefix + ":agent:" + k.agentTag(agentID) + ":running"
}

// agentLast is the outcome of an agent's last answer ("ready" or "error").
func (k keys) agentLast(agentID string) string {
	return k.prefix + ":agent:" + k.agentTag(agentID) + ":last"
}

package backplane

import (
	"strconv"
	"strings"

	"github.com/orchestratorchat/hubfarm/internal/redisconn"
)

// keys names every Redis key and channel of one farm (prefix P):
//
//	P:node:{node}          hash + TTL  address, started, heartbeat (unix ms), conns, instance
//	P:nodes                zset        node ids scored by last heartbeat (unix ms)
//	P:node:{node}:conns    set         connections held by the node
//	P:conn:{conn}          hash        node, hub, user, at (unix ms), remote
//	P:conn:{conn}:groups   set         the connection's groups
//	P:conn-claim:{conn}    string+TTL  node that accepted the negotiated connection id (ClaimConnection)
//	P:user:{user}:conns    set         the user's connections, farm-wide
//	P:group:{group}        set         the group's member connections, farm-wide
//	P:reap:{node}          string+TTL  lock of the survivor cleaning up a dead node
//
//	P:ch:node:{node}       channel     the node's inbox (connections, close, control, probes)
//	P:ch:all               channel     every node
//	P:ch:group:{group}     channel     nodes holding a member of the group
//	P:ch:user:{user}       channel     nodes holding a connection of the user
//
// (The braces above mark placeholders, not hash tags.) Node and connection
// ids must not contain ':' (checked), so no two names collide.
//
// On Redis Cluster (sharded pub/sub) every channel carries a bucket hash tag
// after "P:ch:", e.g. P:ch:{P:b7}:group:<group>: the bucket is a hash of the
// group, user or node id modulo ShardBuckets, so a bucket's channels share
// one slot and one sharded pub/sub connection serves all of them. Bucket i's
// tag is {P:b<i>}, or {P:b<i>.<k>} for the first k whose slot lies in the
// i-th ShardBuckets-th of the slot space, so that on a cluster created with
// an even slot split the buckets spread evenly over the masters. Each
// bucket also has a probe channel per node, P:ch:{P:b<n>}:probe:<node>, so
// readiness checks every sharded subscriber end to end. The registry keys
// keep their names: on Cluster they are written per key (see scripts.go),
// never by one multi-key script or transaction across slots.
type keys struct {
	p       string
	buckets int      // 0: plain channel names (one server); else sharded names with a bucket tag
	tags    []string // sharded: bucket → channel name prefix up to and including its tag
}

// newKeys returns the names of a farm with prefix p; buckets > 0 shards the
// channels into that many tagged buckets.
func newKeys(p string, buckets int) keys {
	k := keys{p: p, buckets: buckets}
	for i := range buckets {
		tag := redisconn.SpreadTag(p+":b"+strconv.Itoa(i), i, buckets)
		k.tags = append(k.tags, p+":ch:{"+tag+"}:")
	}
	return k
}

func (k keys) node(id string) string      { return k.p + ":node:" + id }
func (k keys) nodes() string              { return k.p + ":nodes" }
func (k keys) nodeConns(id string) string { return k.p + ":node:" + id + ":conns" }
func (k keys) conn(id string) string      { return k.p + ":conn:" + id }
func (k keys) connGroups(id string) string {
	return k.p + ":conn:" + id + ":groups"
}
func (k keys) userConns(u string) string { return k.p + ":user:" + u + ":conns" }
func (k keys) group(g string) string     { return k.p + ":group:" + g }
func (k keys) reapLock(id string) string { return k.p + ":reap:" + id }

func (k keys) connClaim(id string) string { return k.p + ":conn-claim:" + id }

func (k keys) chNode(id string) string { return k.ch("node:"+id, "n:"+id) }
func (k keys) chAll() string           { return k.ch("all", "all") }
func (k keys) chGroup(g string) string { return k.ch("group:"+g, "g:"+g) }
func (k keys) chUser(u string) string  { return k.ch("user:"+u, "u:"+u) }

// chProbe is the readiness probe channel of node in bucket b (sharded only).
func (k keys) chProbe(b int, node string) string {
	return k.bucketTag(b) + "probe:" + node
}

// ch names a channel; seed picks its bucket when sharded.
func (k keys) ch(name, seed string) string {
	if k.buckets == 0 {
		return k.p + ":ch:" + name
	}
	return k.bucketTag(k.bucketOf(seed)) + name
}

func (k keys) bucketTag(b int) string { return k.tags[b] }

// bucketOf hashes seed (FNV-1a) into a bucket.
func (k keys) bucketOf(seed string) int {
	h := uint32(2166136261)
	for i := 0; i < len(seed); i++ {
		h ^= uint32(seed[i])
		h *= 16777619
	}
	return int(h % uint32(k.buckets))
}

// chBucket returns the bucket of a channel named by this keys (0 when not
// sharded, or for a name it did not make).
func (k keys) chBucket(ch string) int {
	if k.buckets == 0 {
		return 0
	}
	rest, ok := strings.CutPrefix(ch, k.p+":ch:{"+k.p+":b")
	if !ok {
		return 0
	}
	digits, _, ok := strings.Cut(rest, "}")
	if !ok {
		return 0
	}
	digits, _, _ = strings.Cut(digits, ".")
	b, err := strconv.Atoi(digits)
	if err != nil || b < 0 || b >= k.buckets {
		return 0
	}
	return b
}

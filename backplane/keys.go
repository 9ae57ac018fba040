package backplane

// keys names every Redis key and channel of one farm (prefix P):
//
//	P:node:{node}          hash + TTL  address, started, heartbeat (unix ms), conns, instance
//	P:nodes                zset        node ids scored by last heartbeat (unix ms)
//	P:node:{node}:conns    set         connections held by the node
//	P:conn:{conn}          hash        node, hub, user, at (unix ms), remote
//	P:conn:{conn}:groups   set         the connection's groups
//	P:user:{user}:conns    set         the user's connections, farm-wide
//	P:group:{group}        set         the group's member connections, farm-wide
//	P:reap:{node}          string+TTL  lock of the survivor cleaning up a dead node
//
//	P:ch:node:{node}       channel     the node's inbox (connections, close, control, probes)
//	P:ch:all               channel     every node
//	P:ch:group:{group}     channel     nodes holding a member of the group
//	P:ch:user:{user}       channel     nodes holding a connection of the user
//
// Node and connection ids must not contain ':' (checked), so no two names
// collide. The Lua scripts build key names from the prefix, so the registry
// needs a single Redis (or a Sentinel-managed primary), not Redis Cluster.
type keys struct{ p string }

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

func (k keys) chNode(id string) string { return k.p + ":ch:node:" + id }
func (k keys) chAll() string           { return k.p + ":ch:all" }
func (k keys) chGroup(g string) string { return k.p + ":ch:group:" + g }
func (k keys) chUser(u string) string  { return k.p + ":ch:user:" + u }

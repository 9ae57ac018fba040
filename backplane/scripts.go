package backplane

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// On one server (or a Sentinel-managed primary), Lua scripts make each
// connection's cleanup and re-registration atomic: a reader never sees a
// connection in a group set whose connection hash is gone, and a node that
// comes back mid-cleanup is not half-deleted. They build key names from the
// prefix, so they need every key on one server; they run on miniredis too.
//
// On Redis Cluster a connection's keys (hash, groups set) and the sets it
// belongs to (every group's, its user's, its node's) hash to different
// slots, and no script or MULTI may span slots. There the same operations
// are per-key commands in pipelines (removeConns, reconcileConns,
// finishNode below), ordered so that an interrupted run is completed by
// the next one (the id stays in the node's set until the last step) and a
// reader sees at worst what it already tolerates: a connection id in a
// group or user set whose hash is gone for a moment (lookups treat a
// missing hash as an unknown connection, and a delivery to it finds no
// local connection). What the scripts' atomicity bought otherwise is
// handled by checks: the dead-node check (cutoff) runs once per batch just
// before it, and a node reaped while alive sees itself missing from the
// node set at its next heartbeat and re-registers everything.

// scriptRemoveConn removes one connection of a node from the registry:
// from every group set in its groups set (and the extra groups given), from
// its user's set and from the node's set, and deletes its hash and groups
// set. It refuses (returns 0) when the node heartbeated at or after the
// cutoff, i.e. it is alive after all, unless force is "1" (a node removing
// its own connection). A connection whose hash names another node (the id
// was registered again elsewhere) only leaves this node's set: its new
// entry is never touched.
//
// ARGV: prefix, node, conn, cutoff unix ms, force, user (used if the hash
// has none), group...
var scriptRemoveConn = redis.NewScript(`
local p, node, conn, cutoff, force = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
if force ~= '1' then
  local score = redis.call('ZSCORE', p .. ':nodes', node)
  if score and tonumber(score) >= cutoff then return 0 end
end
local ck = p .. ':conn:' .. conn
local owner = redis.call('HGET', ck, 'node')
if (not owner) or owner == node then
  local gk = ck .. ':groups'
  for _, g in ipairs(redis.call('SMEMBERS', gk)) do
    redis.call('SREM', p .. ':group:' .. g, conn)
  end
  for i = 7, #ARGV do
    redis.call('SREM', p .. ':group:' .. ARGV[i], conn)
  end
  local user = redis.call('HGET', ck, 'user')
  if (not user) or user == '' then user = ARGV[6] or '' end
  if user ~= '' then
    redis.call('SREM', p .. ':user:' .. user .. ':conns', conn)
  end
  redis.call('DEL', ck, gk)
end
redis.call('SREM', p .. ':node:' .. node .. ':conns', conn)
return 1
`)

// removeConnArgs builds scriptRemoveConn's ARGV.
func removeConnArgs(prefix, node, conn string, cutoff int64, force bool, user string, groups []string) []any {
	f := "0"
	if force {
		f = "1"
	}
	a := make([]any, 0, 6+len(groups))
	a = append(a, prefix, node, conn, cutoff, f, user)
	for _, g := range groups {
		a = append(a, g)
	}
	return a
}

// scriptFinishNode deletes a dead node's keys and removes it from the node
// zset, if it is still dead and holds no connection. Returns 1 when it did
// (the caller then runs OnNodeDead), 0 when the node is alive or already
// gone, -1 when connections remain.
//
// ARGV: prefix, node, cutoff unix ms.
var scriptFinishNode = redis.NewScript(`
local p, node, cutoff = ARGV[1], ARGV[2], tonumber(ARGV[3])
local score = redis.call('ZSCORE', p .. ':nodes', node)
if (not score) or tonumber(score) >= cutoff then return 0 end
if redis.call('SCARD', p .. ':node:' .. node .. ':conns') > 0 then return -1 end
redis.call('DEL', p .. ':node:' .. node, p .. ':node:' .. node .. ':conns')
redis.call('ZREM', p .. ':nodes', node)
return 1
`)

// scriptReconcileConn writes a local connection's registry entry as the
// node knows it: hash, node set, user set, and exactly the given groups
// (stale group memberships are removed). Used to re-register after Redis
// lost data or a registry write failed.
//
// ARGV: prefix, node, conn, hub, user, at, remote, group...
var scriptReconcileConn = redis.NewScript(`
local p, node, conn, hub, user, at, remote = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local ck = p .. ':conn:' .. conn
local gk = ck .. ':groups'
redis.call('HSET', ck, 'node', node, 'hub', hub, 'user', user, 'at', at, 'remote', remote)
redis.call('SADD', p .. ':node:' .. node .. ':conns', conn)
if user ~= '' then redis.call('SADD', p .. ':user:' .. user .. ':conns', conn) end
local want = {}
for i = 8, #ARGV do want[ARGV[i]] = true end
for _, g in ipairs(redis.call('SMEMBERS', gk)) do
  if not want[g] then
    redis.call('SREM', p .. ':group:' .. g, conn)
    redis.call('SREM', gk, g)
  end
end
for i = 8, #ARGV do
  redis.call('SADD', p .. ':group:' .. ARGV[i], conn)
  redis.call('SADD', gk, ARGV[i])
end
return 1
`)

// scriptReleaseLock deletes a lock only if it still holds our value.
//
// KEYS: lock. ARGV: value.
var scriptReleaseLock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// removal is one connection to take out of the registry.
type removal struct {
	conn   string
	user   string   // used if the connection hash names none
	groups []string // groups to leave besides the ones recorded in Redis
}

// removeConns removes connections of node from the registry
// (scriptRemoveConn). Unless force, it refuses when node heartbeated at or
// after cutoff (it is alive after all): done[i] is false for a removal that
// did not happen for that reason.
func (b *Backplane) removeConns(ctx context.Context, node string, cutoff int64, force bool, rs []removal) (done []bool, err error) {
	done = make([]bool, len(rs))
	if len(rs) == 0 {
		return done, nil
	}
	if !b.sharded {
		argv := make([][]any, len(rs))
		for i, r := range rs {
			argv[i] = removeConnArgs(b.cfg.Prefix, node, r.conn, cutoff, force, r.user, r.groups)
		}
		cmds, err := runScripts(ctx, b.rdb, scriptRemoveConn, argv)
		if err != nil {
			return done, err
		}
		for i, c := range cmds {
			n, _ := c.Int()
			done[i] = n == 1
		}
		return done, nil
	}
	if !force {
		score, err := b.rdb.ZScore(ctx, b.k.nodes(), node).Result()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return done, err
		case int64(score) >= cutoff:
			return done, nil
		}
	}
	// 1. Read what each connection belongs to.
	hs := make([]*redis.SliceCmd, len(rs))
	gs := make([]*redis.StringSliceCmd, len(rs))
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range rs {
			hs[i] = p.HMGet(ctx, b.k.conn(r.conn), "node", "user")
			gs[i] = p.SMembers(ctx, b.k.connGroups(r.conn))
		}
		return nil
	}); err != nil {
		return done, err
	}
	owned := make([]bool, len(rs))
	// 2. Take it out of its group and user sets (while its groups set still
	// says which: a failure here is redone from the same state).
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range rs {
			v := hs[i].Val()
			owner, _ := v[0].(string)
			user, _ := v[1].(string)
			if owner != "" && owner != node {
				continue // the id was registered again elsewhere: not ours to touch
			}
			owned[i] = true
			for _, g := range gs[i].Val() {
				p.SRem(ctx, b.k.group(g), r.conn)
			}
			for _, g := range r.groups {
				p.SRem(ctx, b.k.group(g), r.conn)
			}
			if user == "" {
				user = r.user
			}
			if user != "" {
				p.SRem(ctx, b.k.userConns(user), r.conn)
			}
		}
		return nil
	}); err != nil {
		return done, err
	}
	// 3. Delete its entry, and last the node's reference to it.
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, r := range rs {
			if owned[i] {
				p.Del(ctx, b.k.conn(r.conn))
				p.Del(ctx, b.k.connGroups(r.conn))
			}
			p.SRem(ctx, b.k.nodeConns(node), r.conn)
		}
		return nil
	}); err != nil {
		return done, err
	}
	for i := range done {
		done[i] = true
	}
	return done, nil
}

// connEntry is a local connection's registry entry as the node knows it.
type connEntry struct {
	info   ConnInfo
	groups []string
}

// reconcileConns writes local connections' registry entries as the node
// knows them (scriptReconcileConn).
func (b *Backplane) reconcileConns(ctx context.Context, es []connEntry) error {
	if len(es) == 0 {
		return nil
	}
	if !b.sharded {
		argv := make([][]any, len(es))
		for i, e := range es {
			c := e.info
			a := []any{b.cfg.Prefix, b.cfg.NodeID, c.ID, c.Hub, c.User, ms(c.ConnectedAt), c.Remote}
			for _, g := range e.groups {
				a = append(a, g)
			}
			argv[i] = a
		}
		_, err := runScripts(ctx, b.rdb, scriptReconcileConn, argv)
		return err
	}
	gs := make([]*redis.StringSliceCmd, len(es))
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range es {
			gs[i] = p.SMembers(ctx, b.k.connGroups(e.info.ID))
		}
		return nil
	}); err != nil {
		return err
	}
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, e := range es {
			c := e.info
			p.HSet(ctx, b.k.conn(c.ID), "node", b.cfg.NodeID, "hub", c.Hub, "user", c.User,
				"at", ms(c.ConnectedAt), "remote", c.Remote)
			p.SAdd(ctx, b.k.nodeConns(b.cfg.NodeID), c.ID)
			if c.User != "" {
				p.SAdd(ctx, b.k.userConns(c.User), c.ID)
			}
			want := make(map[string]bool, len(e.groups))
			for _, g := range e.groups {
				want[g] = true
				p.SAdd(ctx, b.k.group(g), c.ID)
				p.SAdd(ctx, b.k.connGroups(c.ID), g)
			}
			for _, g := range gs[i].Val() {
				if !want[g] {
					p.SRem(ctx, b.k.group(g), c.ID)
					p.SRem(ctx, b.k.connGroups(c.ID), g)
				}
			}
		}
		return nil
	})
	return err
}

// finishNode deletes a dead node's keys and removes it from the node zset
// if it is still dead and holds no connection (scriptFinishNode): 1 when it
// did (only one caller gets 1), 0 when the node is alive or already gone,
// -1 when connections remain.
func (b *Backplane) finishNode(ctx context.Context, node string, cutoff int64) (int, error) {
	if !b.sharded {
		return scriptFinishNode.Run(ctx, b.rdb, nil, b.cfg.Prefix, node, cutoff).Int()
	}
	score, err := b.rdb.ZScore(ctx, b.k.nodes(), node).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if int64(score) >= cutoff {
		return 0, nil
	}
	n, err := b.rdb.SCard(ctx, b.k.nodeConns(node)).Result()
	if err != nil {
		return 0, err
	}
	if n > 0 {
		return -1, nil
	}
	// ZREM decides which survivor finishes: it removes the entry once.
	removed, err := b.rdb.ZRem(ctx, b.k.nodes(), node).Result()
	if err != nil || removed == 0 {
		return 0, err
	}
	if _, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, b.k.node(node))
		p.Del(ctx, b.k.nodeConns(node))
		return nil
	}); err != nil {
		return 0, err
	}
	return 1, nil
}

// multi sends fn's commands as one MULTI transaction on one server. On
// Redis Cluster the registry keys of one operation live in different slots
// (a cross-slot MULTI is refused), so there they go as a plain pipeline.
// Nothing relies on seeing such writes together: every caller records a
// failure (dirty) so the heartbeat re-writes the whole entry, and readers
// take a set member without its hash as an unknown connection.
func (b *Backplane) multi(ctx context.Context, fn func(redis.Pipeliner) error) error {
	_, err := b.multiCmds(ctx, fn)
	return err
}

// multiCmds is multi returning the commands fn queued, with their results.
func (b *Backplane) multiCmds(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	if b.sharded {
		return b.rdb.Pipelined(ctx, fn)
	}
	return b.rdb.TxPipelined(ctx, fn)
}

// runScripts runs s once per argument list in one pipeline (EVALSHA),
// loading the script first if Redis does not know it. The per-call results
// are returned in order; the error is the pipeline's.
func runScripts(ctx context.Context, rdb redis.UniversalClient, s *redis.Script, argv [][]any) ([]*redis.Cmd, error) {
	run := func() ([]*redis.Cmd, error) {
		cmds := make([]*redis.Cmd, len(argv))
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, a := range argv {
				cmds[i] = s.EvalSha(ctx, p, nil, a...)
			}
			return nil
		})
		return cmds, err
	}
	cmds, err := run()
	if err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return cmds, err
		}
		cmds, err = run()
	}
	return cmds, err
}

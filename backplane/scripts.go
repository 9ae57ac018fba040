package backplane

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Lua scripts make each connection's cleanup and re-registration atomic:
// a reader never sees a connection in a group set whose connection hash is
// gone, and a node that comes back mid-cleanup is not half-deleted. They
// build key names from the prefix (single Redis only, see keys) and run on
// miniredis too.

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

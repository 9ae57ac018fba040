package orchestration

import "github.com/redis/go-redis/v9"

// Agent message job states kept in the record (field status).
const (
	msgQueued   = "queued"   // a job for it is in the stream
	msgRunning  = "running"  // a worker answers it (field owner)
	msgRetrying = "retrying" // an attempt failed; the next waits in the delayed set
	msgDone     = "done"     // answered (terminal)
	msgFailed   = "failed"   // failed for good (terminal)
)

// messageScripts are the Lua scripts of agent message jobs. Like the plan
// scripts, every change of a job's state is one of them, so it is atomic
// across nodes; the ownership rules are the same as a plan step's (a
// delivery owns the job from start until it records, retries or releases
// it; a reclaimed delivery takes ownership over).
type messageScripts struct {
	enqueue, start, record, notify, retry, release, keepalive, agentBegin, agentEnd *redis.Script
}

func newMessageScripts() messageScripts {
	return messageScripts{
		// enqueue: append the user message to the session's conversation,
		// trim it, and take the snapshot the job carries: the newest
		// messages within the byte budget (the new one always). With
		// enqueue = 1 also write the job record and add the job.
		// KEYS msg, conv, jobs. ARGV id, req, convEntry, maxMsgs,
		// maxBytes, convTTL, recordTTL, now, enqueue.
		enqueue: redis.NewScript(`
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local list = redis.call('LRANGE', KEYS[2], 0, -1)
local budget = tonumber(ARGV[5])
local first = #list
local used = #list[#list]
for i = #list - 1, 1, -1 do
  used = used + #list[i]
  if used > budget then break end
  first = i
end
local parts = {}
for i = first, #list do parts[#parts + 1] = list[i] end
local conv = '[' .. table.concat(parts, ',') .. ']'
if ARGV[9] == '1' then
  redis.call('HSET', KEYS[1], 'req', ARGV[2], 'conv', conv, 'status', 'queued', 'created', ARGV[8], 'attempts', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('XADD', KEYS[3], '*', 'kind', 'agent-message', 'msg', ARGV[1], 'attempt', '1')
end
return conv`),

		// start: a delivery wants to answer the message. Counts the
		// attempt, takes ownership and returns the request and the
		// conversation. A finished job whose callbacks were not marked sent
		// asks for them again (renotify).
		// KEYS msg. ARGV owner, now, maxAttempts, recordTTL.
		start: redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'by', 'notified')
if not v[1] then return {'gone'} end
if v[1] == 'done' or v[1] == 'failed' then
  if v[2] == 'w' and not v[3] then return {'renotify'} end
  return {'dup'}
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', ARGV[1])
if attempts > tonumber(ARGV[3]) then return {'exhausted', tostring(attempts - 1), redis.call('HGET', KEYS[1], 'err') or ''} end
redis.call('HSETNX', KEYS[1], 'started', ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'req', 'conv')
return {'run', tostring(attempts), f[1] or '', f[2] or '[]'}`),

		// record: the owner records the outcome, at most once: the state,
		// the outcome the callbacks are built from (kept for a renotify),
		// the assistant's answer appended to the conversation, and the
		// dead letter.
		// KEYS msg, dead, conv. ARGV owner, ok, now, retention, dead, error,
		// id, attempt, convEntry ('' = none), maxMsgs, convTTL, outcome.
		record: redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not v[1] then return 'gone' end
if v[1] == 'done' or v[1] == 'failed' then return 'dup' end
if v[2] ~= ARGV[1] then return 'lost' end
local st = 'failed'
if ARGV[2] == '1' then st = 'done' end
redis.call('HSET', KEYS[1], 'status', st, 'by', 'w', 'finished', ARGV[3], 'err', ARGV[6], 'outcome', ARGV[12])
redis.call('HDEL', KEYS[1], 'conv')
if ARGV[9] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[9])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[10]), -1)
  redis.call('PEXPIRE', KEYS[3], ARGV[11])
end
if ARGV[5] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'kind', 'agent-message', 'msg', ARGV[7], 'attempt', ARGV[8], 'error', ARGV[6], 'at', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 'recorded'`),

		// notify: the recorded outcome's callbacks were sent; acknowledge
		// the job. KEYS msg, jobs. ARGV streamID ('' = none), group.
		notify: redis.NewScript(`
if ARGV[1] ~= '' then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.call('XDEL', KEYS[2], ARGV[1])
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'notified', '1') end
return 'ok'`),

		// retry: park the next attempt in the delayed set and acknowledge
		// the failed job.
		// KEYS msg, jobs, delayed. ARGV owner, streamID, group, due, member, error.
		retry: redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'owner')
if v[1] == 'running' and v[2] ~= ARGV[1] then return 'lost' end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if v[1] ~= 'running' then return 'stale' end
redis.call('HSET', KEYS[1], 'status', 'retrying', 'err', ARGV[6])
redis.call('HDEL', KEYS[1], 'owner')
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
return 'ok'`),

		// release: give a running job back at shutdown (the attempt is not
		// counted) at the stream's end, for any node to take.
		// KEYS msg, jobs. ARGV owner, streamID, group, id, attempt.
		release: redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'owner')
if v[1] == 'running' and v[2] ~= ARGV[1] then return 'lost' end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
redis.call('XDEL', KEYS[2], ARGV[2])
if v[1] ~= 'running' then return 'stale' end
redis.call('HSET', KEYS[1], 'status', 'queued')
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('XADD', KEYS[2], '*', 'kind', 'agent-message', 'msg', ARGV[4], 'attempt', ARGV[5])
return 'ok'`),

		// keepalive: refresh the claim of a running job and say whether
		// this delivery still owns it ('lost' when another took over).
		// KEYS msg, jobs. ARGV owner, group, consumer, streamID, claim, claimOnly.
		keepalive: redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'owner')
if not v[1] then return 'gone' end
if v[2] ~= ARGV[1] then return 'lost' end
if ARGV[6] ~= '1' and v[1] ~= 'running' then return 'stop' end
if ARGV[5] == '1' then redis.call('XCLAIM', KEYS[2], ARGV[2], ARGV[3], 0, ARGV[4], 'JUSTID') end
return 'ok'`),

		// agentBegin: a node started serving the agent (or must push its
		// deadline further): add or update the node's member of the
		// agent's running set (scored by when its calls must be over, so
		// a dead node's member expires by itself) and return how many
		// nodes serve the agent (see agentstatus.go).
		// KEYS running. ARGV now, member, deadline, ttl.
		agentBegin: redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])`),

		// agentEnd: a node has no call of the agent left: remove its
		// member, note the outcome ('' keeps the last one) and return how
		// many nodes still serve the agent and the last outcome.
		// KEYS running, last. ARGV now, member, outcome, ttl.
		agentEnd: redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4]) end
return {redis.call('ZCARD', KEYS[1]), redis.call('GET', KEYS[2]) or ''}`),
	}
}

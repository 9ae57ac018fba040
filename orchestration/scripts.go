package orchestration

import "github.com/redis/go-redis/v9"

// Step states kept in the plan hash (field s:<order>:state).
const (
	statePending   = "pending"   // waiting for dependencies
	stateQueued    = "queued"    // a job for it is in the stream
	stateRunning   = "running"   // a worker runs it (s:<order>:owner)
	stateRetrying  = "retrying"  // failed; its next attempt waits in the delayed set
	stateDone      = "done"      // succeeded (terminal)
	stateFailed    = "failed"    // failed (terminal)
	stateSkipped   = "skipped"   // never ran to completion because of another step or the plan (terminal)
	stateCancelled = "cancelled" // was running or retrying when the plan was cancelled or timed out (terminal)
)

// Plan statuses kept in the plan hash (field status).
const (
	planCreated   = "created"
	planRunning   = "running"
	planCompleted = "completed"
	planFailed    = "failed"
	planCancelled = "cancelled"
	planTimedOut  = "timedOut"
)

// luaCommon is prepended to every script.
const luaCommon = `
local function isterm(s) return s == 'done' or s == 'failed' or s == 'skipped' or s == 'cancelled' end
local function completion(plan)
  local v = redis.call('HMGET', plan, 'status', 'need', 'notified')
  if v[1] and v[1] ~= 'running' and v[1] ~= 'created' and tonumber(v[3] or '0') >= tonumber(v[2] or '0') then
    if redis.call('HSETNX', plan, 'completionSent', '1') == 1 then return 'complete' end
  end
  return 'ok'
end
-- startstep: a delivery of step k's job takes the step: counts the
-- attempt, takes ownership and returns what the step needs (see
-- parseRun), or why not. A step whose callbacks were sent and whose
-- delivery went on with a step it released (s:<k>:cont) hands the
-- delivery on to that step: the job entry carries the whole chain.
local function startstep(plan, k, owner, now, maxAttempts)
  local v
  for _ = 1, 200 do
    local p = 's:' .. k .. ':'
    v = redis.call('HMGET', plan, 'status', p .. 'state', p .. 'by', p .. 'notified', p .. 'cont')
    if not v[1] or not v[2] then return {'gone'} end
    if not isterm(v[2]) then break end
    if v[3] == 'w' and not v[4] then return {'renotify', k} end
    if not v[5] then return {'dup'} end
    k = v[5]
  end
  if isterm(v[2]) then return {'dup'} end
  if v[1] ~= 'running' then return {'stale'} end
  local p = 's:' .. k .. ':'
  local attempts = redis.call('HINCRBY', plan, p .. 'attempts', 1)
  redis.call('HSET', plan, p .. 'state', 'running', p .. 'owner', owner)
  if attempts > tonumber(maxAttempts) then return {'exhausted', tostring(attempts - 1), redis.call('HGET', plan, p .. 'err') or '', k} end
  local first = redis.call('HSETNX', plan, p .. 'startedAt', now)
  local f = redis.call('HMGET', plan, p .. 'def', p .. 'deps', p .. 'startedAt', 'started', 'terminal', 'total', 'session', 'xconn', 'xuser', 'strategy', 'goal', 'agents', 'maxSteps', 'wd')
  -- The whole plan is only needed by Adaptive's analysis step (to replace the template).
  local whole = ''
  if f[10] == '2' and k == '1' then whole = redis.call('HGET', plan, 'plan') or '' end
  local out = {'run', k, tostring(attempts), tostring(first), f[1] or '', f[3] or '', f[4] or '0', f[5] or '0', f[6] or '0',
    f[7] or '', f[8] or '', f[9] or '', f[10] or '0', f[11] or '', f[12] or '[]', f[13] or '0', whole, f[14] or ''}
  if f[2] and f[2] ~= '' then
    for d in string.gmatch(f[2], '[^,]+') do
      out[#out + 1] = d
      out[#out + 1] = redis.call('HGET', plan, 's:' .. d .. ':out') or ''
    end
  end
  return out
end
`

// scripts holds the engine's Lua scripts. Every change of plan state is one
// of them, so that each is atomic across nodes.
type scripts struct {
	execute, start, record, notify, retry, promote, abort, keepalive, release, complete *redis.Script
}

func newScripts() scripts {
	s := func(src string) *redis.Script { return redis.NewScript(luaCommon + src) }
	return scripts{
		// execute: created → running; enqueue the steps without dependencies.
		// KEYS plan, jobs, deadlines. ARGV now, xconn, xuser, deadline, planID, ttl.
		execute: s(`
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'gone'} end
if st ~= 'created' then return {'conflict', st} end
redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[1], 'xconn', ARGV[2], 'xuser', ARGV[3], 'deadline', ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local queued = 0
for j = 1, total do
  local q = 's:' .. j .. ':'
  if redis.call('HGET', KEYS[1], q .. 'left') == '0' then
    redis.call('HSET', KEYS[1], q .. 'state', 'queued')
    redis.call('XADD', KEYS[2], '*', 'plan', ARGV[5], 'step', tostring(j), 'attempt', '1')
    queued = queued + 1
  end
end
return {'ok', tostring(queued)}`),

		// start: a delivery wants to run a step (see startstep).
		// KEYS plan. ARGV step, owner, now, maxAttempts.
		start: s(`return startstep(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])`),

		// record: the owner of a running step records its outcome, at most
		// once. It applies an Adaptive replacement, dead-letters, skips
		// dependants per strategy after a failure, and finishes the plan
		// when every step is terminal. (A success releases its dependants
		// in notify, once its callbacks were sent.)
		// KEYS plan, dead, deadlines. ARGV step, owner, now, ok, result,
		// output, dead, error, planID, retention, reason, attempt, nrepl,
		// then nrepl field/value pairs.
		record: s(`
local k = ARGV[1]
local p = 's:' .. k .. ':'
local v = redis.call('HMGET', KEYS[1], 'status', p .. 'state', p .. 'owner')
if not v[1] or not v[2] then return {'gone'} end
if isterm(v[2]) then return {'dup'} end
if v[1] ~= 'running' then return {'stale'} end
if v[3] ~= ARGV[2] then return {'lost'} end
local nrepl = tonumber(ARGV[13])
if nrepl > 0 then
  local old = tonumber(redis.call('HGET', KEYS[1], 'total'))
  for j = 2, old do
    local q = 's:' .. j .. ':'
    redis.call('HDEL', KEYS[1], q .. 'def', q .. 'deps', q .. 'next', q .. 'left', q .. 'state')
  end
  local i = 14
  for _ = 1, nrepl do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    i = i + 2
  end
  redis.call('HSET', KEYS[1], 'replaced', '1')
end
local ok = ARGV[4] == '1'
local st = 'failed'
if ok then st = 'done' end
redis.call('HSET', KEYS[1], p .. 'state', st, p .. 'result', ARGV[5], p .. 'out', ARGV[6], p .. 'by', 'w', p .. 'finished', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'need', 1)
if ARGV[7] == '1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '10000', '*', 'plan', ARGV[9], 'step', k, 'attempt', ARGV[12], 'error', ARGV[8], 'at', ARGV[3])
end
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
local terminal = redis.call('HINCRBY', KEYS[1], 'terminal', 1)
local finish = false
if not ok then
  redis.call('HINCRBY', KEYS[1], 'failedSteps', 1)
  redis.call('HSETNX', KEYS[1], 'reason', ARGV[11])
  if redis.call('HGET', KEYS[1], 'stop') == '1' then
    for j = 1, total do
      local q = 's:' .. j .. ':'
      if not isterm(redis.call('HGET', KEYS[1], q .. 'state')) then
        redis.call('HSET', KEYS[1], q .. 'state', 'skipped')
        terminal = terminal + 1
      end
    end
    finish = true
  else
    local queue = {k}
    local h = 1
    while h <= #queue do
      local nx = redis.call('HGET', KEYS[1], 's:' .. queue[h] .. ':next')
      h = h + 1
      if nx then
        for d in string.gmatch(nx, '[^,]+') do
          local q = 's:' .. d .. ':'
          local ds = redis.call('HGET', KEYS[1], q .. 'state')
          if ds and not isterm(ds) then
            redis.call('HSET', KEYS[1], q .. 'state', 'skipped')
            terminal = terminal + 1
            queue[#queue + 1] = d
          end
        end
      end
    end
  end
  redis.call('HSET', KEYS[1], 'terminal', terminal)
end
if terminal >= total then finish = true end
local status = ''
if finish then
  status = 'completed'
  if tonumber(redis.call('HGET', KEYS[1], 'failedSteps') or '0') > 0 then status = 'failed' end
  redis.call('HSET', KEYS[1], 'status', status, 'finished', ARGV[3], 'finishedBy', k)
  redis.call('ZREM', KEYS[3], ARGV[9])
  redis.call('PEXPIRE', KEYS[1], ARGV[10])
end
return {'recorded', tostring(terminal), tostring(total), status}`),

		// notify: the step's callbacks were sent; after a success, count
		// it done for each dependant and enqueue those whose dependencies
		// are now all done and notified (so a step with several
		// dependencies starts after every one's StepCompleted), and
		// acknowledge its job. Given an owner, the delivery
		// goes on with the first released step instead of enqueueing it:
		// its job entry stays pending (the step is chained to it,
		// s:<k>:cont) and the step is started as by the start script.
		// Returns {'ok', queued, start result...} when it went on, else
		// {completion, queued} where completion says whether the plan's
		// completion is now due (and claims sending it): {'complete',
		// queued, plan hash field/value pairs...}.
		// KEYS plan, jobs. ARGV step, msgID ('' = none), group, planID,
		// owner ('' = do not go on), now, maxAttempts, consumer.
		notify: s(`
local k = ARGV[1]
local p = 's:' .. k .. ':'
local function ack()
  if ARGV[2] ~= '' then
    redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
    redis.call('XDEL', KEYS[2], ARGV[2])
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  ack()
  return {'gone', '0'}
end
local queued = 0
local cont = nil
if redis.call('HSETNX', KEYS[1], p .. 'notified', '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'notified', 1)
  local v = redis.call('HMGET', KEYS[1], p .. 'state', p .. 'next', 'status')
  if v[1] == 'done' and v[2] and v[3] == 'running' then
    for d in string.gmatch(v[2], '[^,]+') do
      local q = 's:' .. d .. ':'
      local left = redis.call('HINCRBY', KEYS[1], q .. 'left', -1)
      if left == 0 and redis.call('HGET', KEYS[1], q .. 'state') == 'pending' then
        redis.call('HSET', KEYS[1], q .. 'state', 'queued')
        if not cont and ARGV[5] ~= '' and ARGV[2] ~= '' then
          cont = d
        else
          redis.call('XADD', KEYS[2], '*', 'plan', ARGV[4], 'step', d, 'attempt', '1')
          queued = queued + 1
        end
      end
    end
  end
end
if cont then
  redis.call('HSET', KEYS[1], p .. 'cont', cont)
  -- A fresh claim, as a new delivery would have.
  redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[8], 0, ARGV[2], 'JUSTID')
  local out = startstep(KEYS[1], cont, ARGV[5], ARGV[6], ARGV[7])
  table.insert(out, 1, tostring(queued))
  table.insert(out, 1, 'ok')
  return out
end
ack()
local c = completion(KEYS[1])
if c == 'complete' then
  local h = redis.call('HGETALL', KEYS[1])
  table.insert(h, 1, tostring(queued))
  table.insert(h, 1, c)
  return h
end
return {c, tostring(queued)}`),

		// retry: park a failed step's next attempt in the delayed set and
		// acknowledge the failed job.
		// KEYS plan, jobs, delayed. ARGV step, owner, msgID, group, due, member, error.
		retry: s(`
local p = 's:' .. ARGV[1] .. ':'
local v = redis.call('HMGET', KEYS[1], 'status', p .. 'state', p .. 'owner')
if v[2] == 'running' and v[3] ~= ARGV[2] then return 'lost' end
redis.call('XACK', KEYS[2], ARGV[4], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if v[1] ~= 'running' or v[2] ~= 'running' then return 'stale' end
redis.call('HSET', KEYS[1], p .. 'state', 'retrying', p .. 'err', ARGV[7])
redis.call('HDEL', KEYS[1], p .. 'owner')
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
return 'ok'`),

		// promote: move due retries to the job stream. Members are
		// "plan|step|attempt" for plan steps and "msg|id|attempt" for agent
		// messages (plan ids are UUIDs, so never "msg"). Returns how many
		// of each were enqueued.
		// KEYS delayed, jobs. ARGV now, limit.
		promote: s(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local steps, msgs = 0, 0
for _, m in ipairs(due) do
  redis.call('ZREM', KEYS[1], m)
  local mid, mattempt = string.match(m, '^msg|(.*)|(%d+)$')
  if mid then
    redis.call('XADD', KEYS[2], '*', 'kind', 'agent-message', 'msg', mid, 'attempt', mattempt)
    msgs = msgs + 1
  else
    local plan, step, attempt = string.match(m, '^(.*)|(%d+)|(%d+)$')
    if plan then
      redis.call('XADD', KEYS[2], '*', 'plan', plan, 'step', step, 'attempt', attempt)
      steps = steps + 1
    end
  end
end
return {steps, msgs}`),

		// abort: cancel or time out a plan at once. Running and retrying
		// steps become cancelled (their ids are returned, after the status
		// and the earlier terminal count, so the caller can send their
		// results; the last of them is the plan's finishedBy); the others
		// are skipped. The caller's
		// callbacks count as one pending notification, so the completion
		// cannot be sent before them.
		// KEYS plan, deadlines. ARGV now, status, reason, planID, retention, onlyIfDue.
		abort: s(`
local v = redis.call('HMGET', KEYS[1], 'status', 'total', 'deadline')
if not v[1] then return {'gone'} end
if v[1] ~= 'running' and v[1] ~= 'created' then return {'terminal', v[1]} end
if ARGV[6] == '1' and (v[1] ~= 'running' or tonumber(v[3] or '0') > tonumber(ARGV[1])) then return {'notdue'} end
local out = {'ok', v[1], redis.call('HGET', KEYS[1], 'terminal') or '0'}
local last = ''
for j = 1, tonumber(v[2]) do
  local q = 's:' .. j .. ':'
  local s = redis.call('HGET', KEYS[1], q .. 'state')
  if s == 'running' or s == 'retrying' then
    redis.call('HSET', KEYS[1], q .. 'state', 'cancelled', q .. 'by', 'x', q .. 'finished', ARGV[1])
    out[#out + 1] = tostring(j)
    last = tostring(j)
  elseif s and not isterm(s) then
    redis.call('HSET', KEYS[1], q .. 'state', 'skipped')
  end
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished', ARGV[1], 'reason', ARGV[3], 'terminal', v[2], 'finishedBy', last)
redis.call('HINCRBY', KEYS[1], 'need', 1)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return out`),

		// keepalive: while a step runs, refresh its claim and report whether
		// it should stop ('stop': plan or step no longer running; 'lost':
		// another delivery owns it now). claimOnly skips the stop check (used
		// after the agent returned, while callbacks are sent).
		// KEYS plan, jobs. ARGV step, owner, group, consumer, msgID, claim, claimOnly.
		keepalive: s(`
local p = 's:' .. ARGV[1] .. ':'
local v = redis.call('HMGET', KEYS[1], 'status', p .. 'state', p .. 'owner')
if not v[1] then return 'gone' end
if v[3] ~= ARGV[2] then return 'lost' end
if ARGV[7] ~= '1' and (v[1] ~= 'running' or v[2] ~= 'running') then return 'stop' end
if ARGV[6] == '1' then redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID') end
return 'ok'`),

		// release: give a job back on shutdown. A step this delivery was
		// running goes back to queued (the attempt is not counted); the job
		// is re-added at the stream's end for any node to take, unless
		// another delivery owns the step or the plan no longer runs.
		// KEYS plan, jobs. ARGV step, owner, msgID, group, planID, attempt.
		release: s(`
local p = 's:' .. ARGV[1] .. ':'
local v = redis.call('HMGET', KEYS[1], 'status', p .. 'state', p .. 'owner')
if v[2] == 'running' and v[3] ~= ARGV[2] then return 'lost' end
redis.call('XACK', KEYS[2], ARGV[4], ARGV[3])
redis.call('XDEL', KEYS[2], ARGV[3])
if v[1] ~= 'running' or isterm(v[2] or 'done') then return 'stale' end
if v[2] == 'running' and v[3] == ARGV[2] then
  redis.call('HSET', KEYS[1], p .. 'state', 'queued')
  redis.call('HDEL', KEYS[1], p .. 'owner')
  redis.call('HINCRBY', KEYS[1], p .. 'attempts', -1)
end
redis.call('XADD', KEYS[2], '*', 'plan', ARGV[5], 'step', ARGV[1], 'attempt', ARGV[6])
return 'ok'`),

		// complete: an abort's callbacks were sent (abort counted them as
		// one pending notification); say whether the completion is due (and
		// claim sending it). KEYS plan.
		complete: s(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
redis.call('HINCRBY', KEYS[1], 'notified', 1)
return completion(KEYS[1])`),
	}
}

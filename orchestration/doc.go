// Package orchestration is hubfarm's orchestration engine: it builds
// multi-agent plans (Sequential, Parallel, Adaptive, RoundRobin), stores them
// farm-wide in Redis and runs their steps as jobs on a Redis stream read by a
// consumer group of workers, one group shared by every node. Messages sent
// to an agent (AgentHub.SendAgentMessage) are jobs of the same stream, kind
// "agent-message", with the same delivery, retry, reclaim and dead-letter
// machinery (see [Engine.SendAgentMessage]). The job stream may be split
// into partitions (Config.Partitions) for Redis Cluster.
//
// The engine never imports the hub or the backplane. It reaches the outside
// through small interfaces defined here: [Sessions] (session existence and
// the session event channel), [AgentCatalog] / [Agent] (who runs a step or
// answers a message) and, optionally on the Sessions value,
// [SessionAuthorizer] and [Router] (how agent answers stream to the
// session group and the agent's subscribers).
//
// # Keys (all under Config.Prefix, "hf" by default)
//
// With one partition (Config.Partitions = 1, the default):
//
//	P:plan:<id>          hash: plan JSON, status, session, callers, per-step state and results (TTL)
//	P:jobs               stream + consumer group "workers": one entry per runnable step or agent message
//	P:jobs:dead          stream (capped): jobs that exhausted their attempts
//	P:jobs:delayed       sorted set: retries waiting for their back-off, scored by due time
//	P:plans:deadlines    sorted set: running plans scored by their plan deadline
//	P:msg:<id>           hash: an agent message job: request, conversation snapshot, status, owner, attempts, outcome (TTL)
//	P:conv:<session>     list (capped, TTL): the session's recent agent conversation, oldest first
//	P:agent:<id>:running sorted set: the nodes serving the agent (steps or answers), scored by when their calls must be over (Busy status)
//	P:agent:<id>:last    string (TTL): outcome of the agent's last call that had one, "ready" or "error"
//	P:agent-catalogs     hash: node id → that node's agent catalogue listing (ids, digest, when), refreshed every CatalogInterval
//
// With N > 1 partitions, partition i has the hash tag T = "{p<i>}" (or
// "{p<i>.<k>}", chosen so the N tags fall in N equal slices of the Cluster
// slot space) and the keys become:
//
//	P:jobs:T, P:jobs:T:dead, P:jobs:T:delayed, P:plans:T:deadlines   partition i's stream, dead letters, retries, deadlines
//	P:plan:T:<id>            a plan, in the partition its id hashes to (FNV-1a mod N)
//	P:msg:T:<id>             an agent message, in the partition its session id hashes to
//	P:conv:T:<session>       the session's conversation, in the same partition
//	P:agent:{a:<id>}:running, P:agent:{a:<id>}:last   an agent's status keys, under the agent's own tag
//
// Every Lua script gets all its keys in KEYS and they hash to one slot: a
// plan's scripts touch the plan and its partition's stream, dead letters,
// retries and deadlines; an agent message's touch its record, its session's
// conversation and that partition's keys; the agent status scripts touch
// one agent's two keys. MULTI blocks touch one key. So the engine runs on
// Redis Cluster, and job throughput grows with the shards the partitions
// are spread over.
//
// # Guarantees
//
//   - A hub call (CreatePlan, ExecutePlan, SendOrchestrationMessage,
//     CancelExecution) returns once its effect is durable in Redis; execution
//     happens on whichever node's worker takes the job.
//   - Jobs are delivered at least once. A step's result is recorded at most
//     once, atomically, by a Lua script that also checks that the recording
//     delivery still owns the step; only that delivery sends the step's
//     callbacks, and a step becomes runnable (is enqueued) only after the
//     callbacks of every step it depends on were sent, so per plan the
//     callbacks of a chain arrive in step order and OrchestrationCompleted
//     is the last event of the plan. The
//     delivery that sent them goes on with one of those steps itself, in
//     the same Lua call that enqueues the others: its job entry stays
//     pending and carries the chain (a redelivery of the entry follows the
//     chain to the step still open), so a chain of steps runs without a
//     trip through the stream per step.
//   - A job whose worker dies is reclaimed (XAUTOCLAIM) after
//     Config.VisibilityTimeout and runs again; a running job refreshes its
//     claim every Config.ClaimRefresh. Every start of a step counts as an
//     attempt; after Config.MaxAttempts the job goes to the dead-letter stream
//     and its step fails.
//   - Callbacks are sent once. The one exception is a worker that dies after
//     recording a step and before marking its callbacks sent (a window of one
//     Redis round trip): the redelivered job sends them again rather than
//     lose them. A step's start progress is sent at most once.
//   - Cancellation and plan timeouts are recorded atomically at once; running
//     steps notice within Config.PollInterval (on any node) and stop.
//   - Agent messages: SendAgentMessage returns once the job is in the stream.
//     The answer's outcome (final ReceiveAgentResponse or ReceiveError) is
//     recorded at most once, by the delivery that owns the job, and sent
//     once, with the same crash-window exception as a step's callbacks.
//     Chunks (ReceiveStreamingUpdate) are notifications, sent at most once
//     per attempt and never recorded; every attempt streams from the start
//     with its number in metadata.attempt, and the final answer carries the
//     whole text of the attempt that succeeded.
package orchestration

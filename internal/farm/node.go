// Package farm assembles one hub node from its parts — the hub runtime, the
// backplane, the session store, the hubs and the HTTP endpoints — so that the
// command line, the development farm and the multi-node tests start nodes the
// same way.
package farm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/backplane"
	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/hubnode/auth"
	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/redisconn"
	"github.com/orchestratorchat/hubfarm/metrics"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
	"github.com/orchestratorchat/hubfarm/web"
)

// NodeConfig configures one node. Zero fields take the defaults noted.
type NodeConfig struct {
	// NodeID names the node farm-wide. Default: a random id.
	NodeID string
	// Listen is the HTTP listen address. Default "127.0.0.1:0".
	Listen string
	// Prefix of every Redis key and channel. Default "hf".
	Prefix string
	// TokenSecret signs negotiate connection tokens. Default: a secret
	// created once per farm and shared through Redis, so every node of the
	// farm accepts every other node's tokens.
	TokenSecret []byte
	// DevTrustUserParam trusts the `user` query parameter (development).
	DevTrustUserParam bool
	// Auth verifies JWT bearer tokens. When nil the node is unauthenticated
	// and sessions are open: any user may join any session by id.
	Auth *auth.Verifier
	// Dev enables development diagnostics (DebugClose).
	Dev bool
	// HeartbeatInterval of the backplane. Default 2s.
	HeartbeatInterval time.Duration
	// DrainWindow spreads the closing of connections on Shutdown. Default 0.
	DrainWindow time.Duration
	// UserRenewInterval is how often the node renews its connected users'
	// session indexes (see renewUsers). Default 1h.
	UserRenewInterval time.Duration
	// Workers is the number of orchestration job workers on this node.
	// Default orchestration.DefaultWorkers; NoWorkers makes the node serve
	// the API only.
	Workers   int
	NoWorkers bool
	// JobPartitions is the number of job streams of the orchestration
	// engine (orchestration.Config.Partitions). Default 1 on one server or
	// Sentinel, DefaultClusterJobPartitions on Redis Cluster, where each
	// partition lives under its own hash tag so the engine's scripts stay
	// within one slot and the job load spreads over the masters. Every node
	// of a farm must use the same value; a node's Workers are raised to it.
	JobPartitions int
	// Engine tunes the orchestration engine (timeouts, retries); Prefix,
	// NodeID and Workers are filled in from the fields above.
	Engine orchestration.Config
	// Agents is the agent catalogue. Default: DefaultAgents().
	Agents orchestration.AgentCatalog
	// ToolsRoot is the sandbox root of AgentHub.ExecuteTool: every
	// session's working directory lives under it. "" leaves ExecuteTool
	// and ApproveTool out.
	ToolsRoot string
	// Tools tunes the tool executor (its Root is ToolsRoot).
	Tools tools.Config
	// ToolPolicy is the approval policy of tool calls (zero: CONTRACT
	// §8.4's defaults, asking a person for write_file and bash).
	ToolPolicy tools.PolicyConfig
	// Hub tunes the node runtime (timeouts, queue bounds); NodeID,
	// TokenSecret and Logger are filled in from the fields above.
	Hub hubnode.Config
	// Logger receives the node's logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultClusterJobPartitions is NodeConfig.JobPartitions on Redis Cluster.
const DefaultClusterJobPartitions = 4

// Node is a running hub node.
type Node struct {
	ID       string
	Hub      *hubnode.Node
	Hubs     *hubs.Hubs
	BP       *backplane.Backplane
	Sessions *session.Store
	Engine   *orchestration.Engine
	Registry *prometheus.Registry

	cfg      NodeConfig
	rdb      redis.UniversalClient
	log      *slog.Logger
	listener net.Listener
	server   *http.Server
	serveErr chan error
	stopOnce sync.Once
	// watchQuit ends watchBackplane; watchDone is closed when it returned.
	watchQuit, watchDone chan struct{}
	// renewQuit ends renewUsers; renewDone is closed when it returned.
	renewQuit, renewDone chan struct{}

	// approvals counts tool approval outcomes (see ObserveApproval).
	approvals *metrics.Approvals
	// nodeMetrics are the hub node's own metrics (message totals for the
	// farm view).
	nodeMetrics *metrics.Node
	// tools runs ExecuteTool's calls (nil without ToolsRoot).
	tools *tools.Executor
}

// URL is the node's base URL (http://host:port).
func (n *Node) URL() string { return "http://" + n.listener.Addr().String() }

// Addr is the node's listen address.
func (n *Node) Addr() string { return n.listener.Addr().String() }

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FarmTokenSecret returns the farm's shared connection-token secret, creating
// it in Redis on first use (SET NX: every node agrees on the first one).
func FarmTokenSecret(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]byte, error) {
	key := prefix + ":token-secret"
	if _, err := rdb.SetNX(ctx, key, randomID(32), 0).Result(); err != nil {
		return nil, fmt.Errorf("farm: token secret: %w", err)
	}
	s, err := rdb.Get(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("farm: token secret: %w", err)
	}
	return []byte(s), nil
}

// StartNode builds and starts a node on rdb and begins serving HTTP.
func StartNode(ctx context.Context, cfg NodeConfig, rdb redis.UniversalClient) (*Node, error) {
	if cfg.NodeID == "" {
		cfg.NodeID = "node-" + randomID(4)
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "hf"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	if len(cfg.TokenSecret) == 0 {
		secret, err := FarmTokenSecret(ctx, rdb, cfg.Prefix)
		if err != nil {
			return nil, err
		}
		cfg.TokenSecret = secret
	}

	reg := metrics.NewRegistry()
	nodeMetrics := metrics.NewNode(reg)
	bpMetrics := metrics.NewBackplane(reg)
	hcfg := cfg.Hub
	hcfg.NodeID, hcfg.TokenSecret, hcfg.Logger = cfg.NodeID, cfg.TokenSecret, cfg.Logger
	hcfg.DevTrustUserParam = hcfg.DevTrustUserParam || cfg.DevTrustUserParam
	if cfg.Auth != nil {
		verifier := cfg.Auth
		hcfg.Authenticator = func(r *http.Request) (hubnode.Identity, error) {
			c, err := verifier.Authenticate(r)
			if err != nil {
				return hubnode.Identity{}, err
			}
			return hubnode.Identity{User: c.Subject, Roles: c.Roles, Expires: c.Expires}, nil
		}
	}
	hn, err := hubnode.New(hcfg, nodeMetrics)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("farm: listen %s: %w", cfg.Listen, err)
	}
	bp, err := backplane.New(rdb, backplane.Config{
		Prefix: cfg.Prefix, NodeID: cfg.NodeID, Address: ln.Addr().String(),
		HeartbeatInterval: cfg.HeartbeatInterval, OnPublished: bpMetrics.ObservePublish,
		NodeStats: func() backplane.NodeStats {
			in, out := nodeMetrics.MessageTotals()
			return backplane.NodeStats{MessagesIn: in, MessagesOut: out}
		},
	}, hn.HandleDelivery, cfg.Logger)
	if err != nil {
		ln.Close()
		return nil, err
	}
	hn.SetBackplane(bp)
	store := session.NewStore(rdb, hn, session.Config{Prefix: cfg.Prefix})
	if cfg.Agents == nil {
		cfg.Agents = DefaultAgents()
	}
	cluster := redisconn.TopologyOf(rdb) == redisconn.Cluster
	ecfg := cfg.Engine
	ecfg.Prefix, ecfg.NodeID = cfg.Prefix, cfg.NodeID
	switch {
	case cfg.JobPartitions > 0:
		ecfg.Partitions = cfg.JobPartitions
	case ecfg.Partitions == 0 && cluster:
		ecfg.Partitions = DefaultClusterJobPartitions
	}
	ecfg.Observer = metrics.NewEngine(reg, metrics.EngineLabels{
		JobKinds: orchestration.JobKinds(), PlanOutcomes: orchestration.PlanOutcomes()})
	switch {
	case cfg.NoWorkers:
		ecfg.Workers = 0
	case cfg.Workers > 0:
		ecfg.Workers = cfg.Workers
	default:
		ecfg.Workers = orchestration.DefaultWorkers
	}
	if ecfg.Workers > 0 && ecfg.Workers < ecfg.Partitions {
		// Each partition's reader waits for a free worker of its own.
		ecfg.Workers = ecfg.Partitions
	}
	router := hubs.EngineRouter{Node: hn, Sessions: store, Members: bp.GroupMembers, OpenSessions: cfg.Auth == nil,
		ConnectionUser: func(ctx context.Context, connID string) (string, error) {
			c, _, err := bp.Connection(ctx, connID)
			return c.User, err
		}}
	engine, err := orchestration.New(ecfg, rdb, engineSessions{EngineSessions: hubs.EngineSessions{Store: store, Node: hn}, EngineRouter: router, log: log}, cfg.Agents, log)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("farm: orchestration engine: %w", err)
	}
	approvalMetrics := metrics.NewApprovals(reg, tools.ApprovalOutcomes())
	executor, approvals, err := newTools(cfg, rdb, log, approvalMetrics)
	if err != nil {
		ln.Close()
		return nil, err
	}
	hh := hubs.Register(hn, hubs.Deps{Sessions: store, Engine: engine, Logger: log, Dev: cfg.Dev,
		OpenSessions: cfg.Auth == nil, Tools: executor, Approvals: approvals})
	nodeMetrics.InitHub(hh.Orchestrator.Name())
	nodeMetrics.InitHub(hh.Agent.Name())

	if err := bp.Start(ctx); err != nil {
		ln.Close()
		return nil, fmt.Errorf("farm: start backplane: %w", err)
	}
	if err := hn.Start(); err != nil {
		ln.Close()
		_ = bp.Shutdown(ctx)
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		ln.Close()
		hn.Abort()
		_ = bp.Shutdown(ctx)
		return nil, fmt.Errorf("farm: start engine: %w", err)
	}
	n := &Node{ID: cfg.NodeID, Hub: hn, Hubs: hh, BP: bp, Sessions: store, Engine: engine, Registry: reg,
		cfg: cfg, rdb: rdb, log: log, listener: ln, serveErr: make(chan error, 1),
		watchQuit: make(chan struct{}), watchDone: make(chan struct{}),
		renewQuit: make(chan struct{}), renewDone: make(chan struct{})}
	n.approvals = approvalMetrics
	n.nodeMetrics = nodeMetrics
	n.tools = executor
	n.registerCollectors()
	n.server = &http.Server{Handler: n.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { n.serveErr <- n.server.Serve(ln) }()
	go n.watchBackplane()
	go n.renewUsers()
	log.Info("node serving", "addr", ln.Addr().String())
	return n, nil
}

func (n *Node) routes() http.Handler {
	r := gin.New()
	r.Use(gin.Recovery())
	r.GET("/healthz", func(c *gin.Context) { c.String(http.StatusOK, "ok") })
	r.GET("/readyz", func(c *gin.Context) {
		if err := n.Ready(c.Request.Context()); err != nil {
			c.String(http.StatusServiceUnavailable, "not ready: %v", err)
			return
		}
		c.String(http.StatusOK, "ready")
	})
	r.GET("/metrics", gin.WrapH(promhttp.HandlerFor(n.Registry, promhttp.HandlerOpts{Registry: n.Registry})))
	n.Hub.Routes(r)
	farmSrc := web.FarmSource{NodeID: n.ID, Nodes: n.BP.Nodes, ConnectionNode: n.connectionNode,
		MessageTotals: n.nodeMetrics.MessageTotals}
	if v := n.cfg.Auth; v != nil {
		farmSrc.Authenticate = func(r *http.Request) error {
			_, err := v.Authenticate(r)
			return err
		}
	}
	r.GET("/api/farm", gin.WrapH(web.FarmAPI(farmSrc)))
	console := gin.WrapH(web.Handler())
	r.GET("/", console)
	r.HEAD("/", console)
	r.GET(web.AssetsPrefix+"*file", console)
	r.HEAD(web.AssetsPrefix+"*file", console)
	return r
}

// connectionNode returns the id of the node holding connID: this one, or
// the node named in the backplane registry's connection hash
// (<prefix>:conn:<id>, field "node"); "" when no node holds it.
func (n *Node) connectionNode(ctx context.Context, connID string) (string, error) {
	if _, ok := n.Hub.LocalConnection(connID); ok {
		return n.ID, nil
	}
	node, err := n.rdb.HGet(ctx, n.cfg.Prefix+":conn:"+connID, "node").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return node, err
}

// registerCollectors registers the metrics read at scrape time: send-queue
// depth, the backplane's counters and peers, the job stream's backlog and
// readiness.
func (n *Node) registerCollectors() {
	metrics.RegisterSendQueues(n.Registry, n.Hub.SendQueueDepth)
	metrics.RegisterBackplaneStats(n.Registry, metrics.BackplaneSources{
		Stats: func() metrics.BackplaneStats {
			s := n.BP.Stats()
			return metrics.BackplaneStats{Published: s.Published, PublishErrors: s.PublishErrors, Received: s.Received,
				Dropped: s.Dropped, Duplicates: s.Duplicates, Reconnects: s.Reconnects, NodeReaps: s.NodeReaps,
				Subscriptions: s.Subscriptions, QueueLen: s.QueueLen}
		},
		PeerHeartbeats: n.peerHeartbeats,
	})
	metrics.RegisterJobBacklog(n.Registry, func(ctx context.Context) (metrics.JobBacklog, error) {
		b, err := n.Engine.Backlog(ctx)
		return metrics.JobBacklog{Queued: b.Queued, Pending: b.Pending, Delayed: b.Delayed, DeadLetters: b.DeadLetters}, err
	})
	metrics.RegisterAgentCatalogDrift(n.Registry, n.Engine.CatalogDrift)
	metrics.RegisterHealth(n.Registry, metrics.Health{Ready: n.Ready, Draining: n.Hub.Draining})
}

// peerHeartbeats returns the last heartbeat of every other live node.
func (n *Node) peerHeartbeats(ctx context.Context) ([]time.Time, error) {
	nodes, err := n.BP.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	beats := make([]time.Time, 0, len(nodes))
	for _, p := range nodes {
		if p.ID != n.ID {
			beats = append(beats, p.LastHeartbeat)
		}
	}
	return beats, nil
}

// ObserveApproval counts a tool approval outcome; pass it as
// tools.ApprovalsConfig.OnOutcome to the node's approvals coordinator.
func (n *Node) ObserveApproval(r tools.ApprovalResult) { n.approvals.Observe(r.Outcome()) }

// Ready reports whether the node can serve: not draining, and Redis and the
// node's pub/sub subscription answer end to end.
func (n *Node) Ready(ctx context.Context) error {
	if n.Hub.Draining() {
		return errors.New("draining")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return n.BP.Ready(ctx)
}

// watchBackplane asks the node's clients to reconnect whenever the
// backplane's subscription connection was lost and re-established (a Redis
// restart, a failover or a network break) and the node is ready end to end
// again: frames the other nodes published meanwhile never reached this
// node, so its clients may have missed session events that the history
// holds. Each client is closed with allowReconnect, spread over the drain
// window (10s without one), reconnects anywhere, and catches up with
// GetSessionHistory. The loop ends when the node drains (Shutdown and Kill
// stop it and wait for it).
func (n *Node) watchBackplane() {
	defer close(n.watchDone)
	interval := n.cfg.HeartbeatInterval
	if interval <= 0 {
		interval = 2 * time.Second
	}
	window := n.cfg.DrainWindow
	if window <= 0 {
		window = 10 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	last := n.BP.Stats().Reconnects
	// settle is how long the node must stay ready before its clients are
	// asked to reconnect (see below).
	settle := max(interval, 1500*time.Millisecond)
	var readySince time.Time
	// stopRecycle cancels the recycle in progress and waits for it.
	stopRecycle := func() {}
	defer func() { stopRecycle() }()
	for {
		select {
		case <-t.C:
		case <-n.watchQuit:
			return
		}
		if n.Hub.Draining() {
			return
		}
		r := n.BP.Stats().Reconnects
		if r == last {
			continue
		}
		// Ask the clients back only once the node has worked end to end for
		// a while: right after an outage or a failover the Redis client
		// still fails new connections fast (go-redis' pool, after repeated
		// dial errors, tries dialling again only once a second), and a
		// client reconnecting then would not get its sessions back.
		readyCtx, cancelReady := context.WithTimeout(context.Background(), max(interval, time.Second))
		err := n.BP.Ready(readyCtx)
		cancelReady()
		if err != nil {
			readySince = time.Time{}
			continue
		}
		if readySince.IsZero() {
			readySince = time.Now()
		}
		if time.Since(readySince) < settle {
			continue
		}
		readySince = time.Time{}
		last = r
		n.log.Warn("backplane subscription restored: asking clients to reconnect and catch up from the session history",
			"connections", n.Hub.ConnectionCount(), "window", window)
		stopRecycle() // a recycle still in progress starts over
		ctx, cancel := context.WithCancel(context.Background())
		recycled := make(chan struct{})
		stopRecycle = func() {
			cancel()
			<-recycled
		}
		go func() {
			defer close(recycled)
			n.Hub.Recycle(ctx, window)
		}()
	}
}

// Shutdown drains the node gracefully: not ready first (the hub node's
// draining flag), no new connections, existing ones closed with
// allowReconnect over the drain window. At the same time the engine stops
// taking jobs, and its running jobs have the same window to finish; those
// still running when it ends are released for another node to take at once
// (a zero window leaves them until ctx ends). Releasing is part of a clean
// drain, not an error. Then the HTTP server stops and the backplane
// deregisters the node.
func (n *Node) Shutdown(ctx context.Context) error {
	var errs []error
	n.stopOnce.Do(func() {
		jobsCtx, cancelJobs := ctx, context.CancelFunc(func() {})
		if n.cfg.DrainWindow > 0 {
			jobsCtx, cancelJobs = context.WithTimeout(ctx, n.cfg.DrainWindow)
		}
		defer cancelJobs()
		engineDone := make(chan error, 1)
		go func() { engineDone <- n.Engine.Shutdown(jobsCtx) }()
		if err := n.Hub.Drain(ctx, n.cfg.DrainWindow); err != nil {
			errs = append(errs, err)
		}
		n.stopLoops()
		if err := n.Hub.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		// Jobs released at the end of the window are not an error.
		if err := <-engineDone; err != nil && (ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded)) {
			errs = append(errs, err)
		}
		if err := n.server.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		if err := n.BP.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		n.closeTools()
	})
	return errors.Join(errs...)
}

// Kill stops the node the way a crash does: its Redis client is closed first,
// so nothing is cleaned up in Redis (its connections, heartbeat and group
// memberships stay behind for the survivors' reaper), then its sockets and
// listener are dropped without Close records. The node owns rdb after
// StartNode only for this purpose.
func (n *Node) Kill() {
	n.stopOnce.Do(func() {
		_ = n.rdb.Close()
		_ = n.server.Close()
		n.Hub.Abort()
		n.stopLoops()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = n.Engine.Shutdown(ctx)
		_ = n.BP.Shutdown(ctx)
		n.closeTools()
	})
}

// stopLoops ends watchBackplane (and a recycle it started) and
// renewUsers, and waits for them.
func (n *Node) stopLoops() {
	close(n.watchQuit)
	close(n.renewQuit)
	<-n.watchDone
	<-n.renewDone
}

// closeTools releases the tool executor's handle on the sandbox root once
// no hub method can run any more.
func (n *Node) closeTools() {
	if n.tools != nil {
		_ = n.tools.Close()
	}
}

// engineSessions is how the engine emits session events. An event that was
// recorded in the session history (Emit returned its id) counts as emitted
// even when a delivery failed -- typically the plan's caller connection died
// with its node: members get the event through the session group, and whoever
// missed it finds it in the history. Reporting that as an error made the
// engine retry, which recorded and sent the event again (after a node loss,
// every later StepCompleted and the OrchestrationCompleted arrived three
// times).
type engineSessions struct {
	hubs.EngineSessions
	hubs.EngineRouter // agent messages stream through it
	log               *slog.Logger
}

// newTools builds the tool executor and the farm-wide approvals of a node
// with a ToolsRoot (nil, nil without one). Approval outcomes are counted
// in m.
func newTools(cfg NodeConfig, rdb redis.UniversalClient, log *slog.Logger, m *metrics.Approvals) (*tools.Executor, *tools.Approvals, error) {
	if cfg.ToolsRoot == "" {
		return nil, nil, nil
	}
	tcfg := cfg.Tools
	tcfg.Root = cfg.ToolsRoot
	if tcfg.Logger == nil {
		tcfg.Logger = log
	}
	executor, err := tools.New(tcfg)
	if err != nil {
		return nil, nil, fmt.Errorf("farm: tool executor: %w", err)
	}
	policy, err := tools.NewPolicy(cfg.ToolPolicy)
	if err != nil {
		_ = executor.Close()
		return nil, nil, fmt.Errorf("farm: tool approval policy: %w", err)
	}
	prefix := cfg.Prefix
	if redisconn.TopologyOf(rdb) == redisconn.Cluster {
		// The approval scripts touch an approval's record and its
		// session's pending set together: on Redis Cluster a hash tag puts
		// every approval key in one slot (approvals are few; one shard
		// carries them easily).
		prefix = "{" + prefix + "}"
	}
	approvals := tools.NewApprovals(rdb, policy, tools.ApprovalsConfig{Prefix: prefix, Logger: log,
		OnOutcome: func(r tools.ApprovalResult) { m.Observe(r.Outcome()) }})
	return executor, approvals, nil
}

// Emit implements orchestration.Sessions.
func (s engineSessions) Emit(ctx context.Context, id string, caller orchestration.Caller, target string, payload any) error {
	eventID, err := s.Store.Emit(ctx, id, caller.ConnectionID, target, payload)
	if err != nil && eventID != "" {
		s.log.Debug("session event recorded; a delivery failed", "session", id, "target", target, "event", eventID, "err", err)
		return nil
	}
	return err
}

// DefaultAgents is the catalogue of a node started without one: two
// deterministic scripted agents, enough for demos and tests.
func DefaultAgents() *orchestration.MemoryCatalog { return ScriptedAgents(3, 0) }

// ScriptedAgents is the two-agent scripted catalogue with chunks pieces per
// answer and chunkDelay between them (the development farm streams slowly
// enough to watch).
func ScriptedAgents(chunks int, chunkDelay time.Duration) *orchestration.MemoryCatalog {
	c := orchestration.NewMemoryCatalog()
	for _, a := range []struct{ id, name, desc string }{
		{"scripted-writer", "Writer (scripted)", "Deterministic demo agent that drafts text"},
		{"scripted-reviewer", "Reviewer (scripted)", "Deterministic demo agent that reviews text"},
	} {
		c.Add(contract.AgentInfo{ID: a.id, Name: a.name, Type: contract.AgentTypeCustom, Description: a.desc,
			Status: contract.AgentStatusReady}, &orchestration.Scripted{Chunks: chunks, ChunkDelay: chunkDelay})
	}
	return c
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/redisconn"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/agents"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// shutdownSlack is how long serve's shutdown may run beyond the drain
// window: a busy connection's last invocation, releasing running jobs and
// deregistering. Process managers must allow drain window + this before
// SIGKILL (deploy/ files; checked by deploy_test.go).
const shutdownSlack = 15 * time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("serve", stderr)
	var (
		nf          nodeFlags
		listen      string
		redisURL    string
		nodeID      string
		tokenSecret string
		af          authFlags
		insecure    bool
		agentsFile  string
		sandboxRoot string
		visibility  time.Duration
		negotiateIP float64
		debugListen string
		partitions  int
	)
	f.String(&listen, "listen", ":8080", "HTTP listen address (hubs, /metrics, /healthz, /readyz)")
	f.String(&redisURL, "redis", "redis://127.0.0.1:6379/0", "Redis: redis://host:port/db (or rediss://), redis-sentinel://s1:26379,s2:26379/master, or redis-cluster://h1:7000,h2:7001,h3:7002")
	f.String(&nodeID, "node-id", "", "node id, unique in the farm (default: a random id)")
	f.String(&tokenSecret, "token-secret", "", "secret signing negotiate connection tokens; every node of a farm shares it (default: one kept in Redis for the farm)")
	f.Bool(&nf.devTrustUserParam, "dev-trust-user-param", false, "take the connection's user from the `user` query parameter (development only, no authentication)")
	f.Bool(&insecure, "insecure", false, "run without authentication (every client may claim any user with --dev-trust-user-param; sessions are open)")
	f.String(&agentsFile, "agents", "", "agent catalogue file (YAML or JSON; default: the two built-in scripted agents)")
	f.String(&sandboxRoot, "sandbox-root", "", "directory that tools (ExecuteTool) and command agents are confined to; sessions' working directories are relative to it (no tools without it)")
	f.Duration(&visibility, "job-visibility-timeout", 30*time.Second, "a running job not refreshed for this long (its node died) is taken over by another node")
	f.Float(&negotiateIP, "negotiate-rate-per-ip", 20, "negotiate and WebSocket requests per second one client IP may make (burst: twice that); behind a load balancer every request comes from its address: raise this and limit per client at the balancer")
	f.Int(&partitions, "job-partitions", 0, "job streams of the orchestration engine; every node of a farm must use the same value (default: 1 on one server or Sentinel, 4 on Redis Cluster, where each partition lives on its own hash tag)")
	f.String(&debugListen, "debug-listen", "", "address serving Go runtime profiles at /debug/pprof/ (off when empty; keep it private, e.g. 127.0.0.1:6060)")
	af.register(f)
	nf.register(f, "json")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	log, err := newLogger(stderr, nf.logFormat, nf.logLevel)
	if err != nil {
		return err
	}
	var catalog orchestration.AgentCatalog // nil: farm.DefaultAgents()
	if agentsFile != "" {
		c, err := agents.Load(agentsFile, agents.Options{SandboxRoot: sandboxRoot, Logger: log})
		if err != nil {
			return err
		}
		catalog = c
	}
	verifier, err := af.verifier()
	if err != nil {
		return err
	}
	if verifier == nil && !insecure {
		return errors.New("refusing to start without authentication: set --jwt-secret, --jwt-public-key or --jwks-file, or pass --insecure")
	}
	if verifier != nil && nf.devTrustUserParam {
		return errors.New("--dev-trust-user-param cannot be combined with JWT authentication")
	}
	if verifier == nil {
		log.Warn("INSECURE: no authentication; sessions are open to every client")
	}
	stopDebug, err := startDebugServer(debugListen, log)
	if err != nil {
		return err
	}
	defer stopDebug()
	rconf, err := redisconn.Parse(redisURL)
	if err != nil {
		return fmt.Errorf("--redis: %w", err)
	}
	rdb := rconf.NewClient()
	defer rdb.Close()
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := rdb.Ping(startCtx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", rconf, err)
	}
	log.Info("redis", "topology", rconf.Topology.String(), "addrs", rconf.Addrs)
	hcfg := nf.hubConfig()
	hcfg.NegotiateRatePerIP = negotiateIP
	node, err := farm.StartNode(startCtx, farm.NodeConfig{
		NodeID: nodeID, Listen: listen, Prefix: nf.prefix, TokenSecret: []byte(tokenSecret),
		DevTrustUserParam: nf.devTrustUserParam, Auth: verifier, HeartbeatInterval: nf.heartbeat, DrainWindow: nf.drainWindow,
		Hub: hcfg, Logger: log, Agents: catalog, Engine: orchestration.Config{VisibilityTimeout: visibility},
		ToolsRoot: sandboxRoot, Tools: tools.Config{EnableBash: nf.enableBash}, JobPartitions: partitions,
		Workers: nf.workers, NoWorkers: nf.noWorkers,
	}, rdb)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "hubfarm node %s serving on %s\n", node.ID, node.URL())
	<-ctx.Done()
	log.Info("shutting down", "drain_window", nf.drainWindow)
	shutCtx, cancel2 := context.WithTimeout(context.Background(), nf.drainWindow+shutdownSlack)
	defer cancel2()
	if err := node.Shutdown(shutCtx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func (n *nodeFlags) hubConfig() hubnode.Config {
	var origins []string
	for _, o := range strings.Split(n.allowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	return hubnode.Config{
		AllowedOrigins:        origins,
		InvocationRate:        n.invocationRate,
		InvocationBurst:       int(2 * n.invocationRate),
		MaxConnectionsPerUser: n.maxConnsPerUser,
		MaxConnections:        n.maxConns,
		MaxMessageSize:        int64(n.maxMessageSize),
		MaxFrameSize:          int64(n.maxFrameSize),
		SendQueueBytes:        n.sendQueueBytes,
		SendQueueFrames:       n.sendQueueFrames,
		KeepAliveInterval:     n.keepAlive,
		ClientTimeout:         n.clientTimeout,
	}
}

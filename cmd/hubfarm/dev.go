package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/orchestratorchat/hubfarm/internal/devproxy"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// runDev runs a whole farm in one process: an embedded Redis (miniredis), N
// nodes on loopback ports, and a round-robin proxy in front that alternates
// backends per request — so negotiate and the WebSocket usually land on
// different nodes, as behind a load balancer without sticky sessions.
func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newFlagSet("dev", stderr)
	var (
		nf          nodeFlags
		listen      string
		nodes       int
		sandboxRoot string
		chunkDelay  time.Duration
	)
	f.String(&listen, "listen", ":8080", "address of the round-robin proxy in front of the nodes")
	f.Int(&nodes, "nodes", 3, "number of hub nodes")
	f.String(&sandboxRoot, "sandbox-root", "", "directory tools (ExecuteTool) are confined to (default: a fresh temporary directory, removed at exit)")
	f.Duration(&chunkDelay, "chunk-delay", 40*time.Millisecond, "pause between the streamed chunks of the scripted agents' answers")
	nf.register(f, "text")
	if err := f.parse(args); err != nil {
		return err
	}
	if err := nf.check(); err != nil {
		return err
	}
	if nf.allowedOrigins == "" {
		nf.allowedOrigins = "*" // development: any page may connect
	}
	if nodes < 1 || nodes > 16 {
		return errors.New("--nodes must be between 1 and 16")
	}
	log, err := newLogger(stderr, nf.logFormat, nf.logLevel)
	if err != nil {
		return err
	}
	if sandboxRoot == "" {
		dir, err := os.MkdirTemp("", "hubfarm-dev-sandbox-")
		if err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
		defer os.RemoveAll(dir)
		sandboxRoot = dir
	}
	catalog := farm.ScriptedAgents(8, chunkDelay)
	devHub := nf.hubConfig()
	// Every request reaches the nodes from the built-in proxy's address, so
	// a per-IP limit would be a limit on the whole farm.
	devHub.NegotiateRatePerIP = 1e6
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return fmt.Errorf("embedded redis: %w", err)
	}
	defer mr.Close()

	// Shutdown order: nodes first (they deregister through their Redis
	// clients), then the clients, then (the earlier defer) the embedded Redis.
	var started []*farm.Node
	var clients []*redis.Client
	defer func() {
		shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, n := range started {
			_ = n.Shutdown(shutCtx)
		}
		for _, c := range clients {
			c.Close()
		}
	}()
	var backends []*url.URL
	for i := 1; i <= nodes; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		clients = append(clients, rdb)
		n, err := farm.StartNode(ctx, farm.NodeConfig{
			NodeID: fmt.Sprintf("dev-%d", i), Prefix: nf.prefix, DevTrustUserParam: true, Dev: true,
			HeartbeatInterval: nf.heartbeat, Hub: devHub, Logger: log,
			Agents: catalog, ToolsRoot: sandboxRoot, Tools: tools.Config{EnableBash: nf.enableBash},
			Workers: nf.workers, NoWorkers: nf.noWorkers,
		}, rdb)
		if err != nil {
			return err
		}
		started = append(started, n)
		u, _ := url.Parse(n.URL())
		backends = append(backends, u)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	proxy := devproxy.New(backends, log)
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()

	base := "http://" + displayAddr(ln.Addr())
	fmt.Fprintf(stdout, "hubfarm dev: %d nodes behind a round-robin proxy, embedded Redis at %s\n", nodes, mr.Addr())
	fmt.Fprintln(stdout, "WARNING: development mode: no authentication; the `user` query parameter is trusted.")
	fmt.Fprintf(stdout, "  OrchestratorHub  %s/hubs/orchestrator\n", base)
	fmt.Fprintf(stdout, "  AgentHub         %s/hubs/agent\n", base)
	fmt.Fprintf(stdout, "  tools sandbox    %s\n", sandboxRoot)
	fmt.Fprintf(stdout, "  health           %s/healthz  %s/readyz\n", base, base)
	for _, n := range started {
		fmt.Fprintf(stdout, "  node %-8s     %s  (metrics %s/metrics)\n", n.ID, n.URL(), n.URL())
	}
	<-ctx.Done()
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutCtx)
}

// displayAddr turns a wildcard listen address into one a browser can open.
func displayAddr(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

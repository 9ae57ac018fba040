package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/internal/loadgen"
)

const loadUsage = `usage: hubfarm load <scenario> [flags]

scenarios:
  fanout       R sessions x M members over the URLs, one publisher per session,
               fixed total publish rate; delivered/s, latency, loss, duplicates
  connections  N connections opened at --ramp per second, each joined to a
               session, held for --duration, then probed with one message per
               session; connect+join time, survivors, memory per connection
  chat         SendAgentMessage to --agent at --rate; time to first chunk and
               to the complete response
  plans        orchestration plans at --rate per second, or --concurrency in
               flight; plan latency, steps per second

A numeric flag left at 0 takes the scenario's default (in brackets).
Run 'hubfarm load <scenario> -h' for the flags.
`

// urlList is a repeatable, comma-separated --url flag.
type urlList []string

func (u *urlList) String() string { return strings.Join(*u, ",") }

func (u *urlList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*u = append(*u, s)
		}
	}
	return nil
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") || args[0] == "help" {
		fmt.Fprint(stderr, loadUsage)
		return errUsage
	}
	scenario := args[0]
	switch scenario {
	case loadgen.ScenarioFanout, loadgen.ScenarioConnections, loadgen.ScenarioChat, loadgen.ScenarioPlans:
	default:
		fmt.Fprintf(stderr, "hubfarm load: unknown scenario %q\n\n%s", scenario, loadUsage)
		return errUsage
	}
	f := newFlagSet("load "+scenario, stderr)
	var (
		cfg     = loadgen.Config{Scenario: scenario}
		urls    urlList
		sources string
		jsonOut bool
	)
	if v, ok := f.env("url"); ok {
		_ = urls.Set(v)
	}
	f.Var(&urls, "url", "node or proxy base URL; repeat or comma-separate to spread connections round-robin (default http://127.0.0.1:8080) ["+envName("url")+"]")
	f.String(&cfg.Hub, "hub", "", "hub path [chat: "+loadgen.HubAgent+", else "+loadgen.HubOrchestrator+"]")
	f.Float(&cfg.Rate, "rate", 0, "fanout: publishes/s over all sessions [1000]; chat: messages/s [5]; plans: plans started/s [0 = closed loop at --concurrency]")
	f.Duration(&cfg.Duration, "duration", 0, "measured window; connections: how long to hold them [30s]")
	f.Duration(&cfg.Warmup, "warmup", 3*time.Second, "fanout: unmeasured publishing before the window (0: none)")
	f.Float(&cfg.Ramp, "ramp", 0, "connections opened per second (0: as fast as --dial-concurrency allows)")
	f.Int(&cfg.Sessions, "sessions", 0, "fanout and chat sessions [100, 10]; connections: sessions to spread them over [connections/10]; plans: driver connections [concurrency, or rate/10]")
	f.Int(&cfg.Members, "members", 0, "fanout: members per session, the publisher included [20]")
	f.Int(&cfg.Payload, "payload", 0, "fanout: message size in bytes [100]")
	f.Int(&cfg.Connections, "connections", 0, "connections: how many to open [1000]")
	f.Int(&cfg.Concurrency, "concurrency", 0, "plans: plans in flight in closed loop [4], or the cap with --rate [1000]")
	f.String(&cfg.Agent, "agent", "", "chat: agent id [scripted-writer]; plans: comma-separated agent ids [scripted-writer,scripted-reviewer]")
	f.String(&cfg.UserPrefix, "user-prefix", "", "users are <prefix>-<n>, sent as ?user= (default: a random prefix per run)")
	f.String(&cfg.Token, "token", "", "bearer token sent on negotiate and WebSocket requests")
	f.Bool(&cfg.Ack, "ack", false, "fanout: publish with an invocation id so refused publishes are counted by error kind")
	f.String(&sources, "source-addrs", "", "local addresses to connect from, round-robin: list and ranges, e.g. 127.0.0.2-127.0.0.60 (nodes rate-limit connects per client IP)")
	f.Bool(&cfg.ServerMetrics, "server-metrics", false, "scrape <url>/metrics before and after the window and report the nodes' counters (give node URLs, not a proxy)")
	f.Duration(&cfg.Progress, "progress", time.Second, "interval of the progress line on stderr (0: none)")
	f.Bool(&jsonOut, "json", false, "write the final report as JSON")
	f.Duration(&cfg.Drain, "drain", 0, "wait at most this long for outstanding deliveries or requests after the window [10s]")
	f.Duration(&cfg.ConnectTimeout, "connect-timeout", 0, "bound on the whole connect phase, retries included [5m]")
	f.Int(&cfg.DialConcurrency, "dial-concurrency", 0, "connections being opened at once [32]")
	f.Duration(&cfg.Timeout, "timeout", 0, "chat: bound on one message; plans: on one plan [60s]")
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	if len(urls) == 0 {
		urls = urlList{"http://127.0.0.1:8080"}
	}
	cfg.URLs = urls
	if sources != "" {
		a, err := loadgen.ParseAddrs(sources)
		if err != nil {
			return fmt.Errorf("--source-addrs: %w", err)
		}
		cfg.SourceAddrs = a
	}
	cfg.ProgressOut = stderr
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
		return nil
	}
	rep.WriteText(stdout)
	return nil
}

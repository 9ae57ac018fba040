package loadgen

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode)
	os.Exit(m.Run())
}

// startFarm starts n nodes on one real redis-server and returns their URLs.
func startFarm(t *testing.T, n int) []string {
	t.Helper()
	srv := testredis.Start(t)
	var urls []string
	for i := 0; i < n; i++ {
		cfg := farm.NodeConfig{
			NodeID:            fmt.Sprintf("n%d", i+1),
			DevTrustUserParam: true,
			HeartbeatInterval: 200 * time.Millisecond,
			Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		// The generator connects from one IP; the default per-IP connect
		// limit would make the test wait for tokens.
		cfg.Hub.NegotiateRatePerIP = 10000
		node, err := farm.StartNode(context.Background(), cfg, srv.NewClient())
		if err != nil {
			t.Fatalf("start node %d: %v", i+1, err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = node.Shutdown(ctx)
		})
		urls = append(urls, node.URL())
	}
	return urls
}

func run(t *testing.T, cfg Config) *Report {
	t.Helper()
	var progress strings.Builder
	cfg.ProgressOut = &progress
	cfg.Progress = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	var text strings.Builder
	rep.WriteText(&text)
	t.Logf("progress:\n%s\nreport:\n%s", progress.String(), text.String())
	if rep.WindowSeconds > 1 && !strings.Contains(progress.String(), "conns ") {
		t.Errorf("no progress line written")
	}
	if rep.Interrupted {
		t.Errorf("run interrupted")
	}
	return rep
}

func noErrors(t *testing.T, rep *Report) {
	t.Helper()
	if rep.ErrorsTotal != 0 || rep.Disconnects != 0 || rep.Connect.Failed != 0 {
		t.Errorf("errors %d (%v), disconnects %d, failed connects %d", rep.ErrorsTotal, rep.Errors, rep.Disconnects, rep.Connect.Failed)
	}
}

// TestFanoutEndToEnd: 6 sessions x 5 members over two nodes; nothing lost,
// and the deliveries the generator counted are exactly the records the
// nodes' /metrics say they wrote.
func TestFanoutEndToEnd(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioFanout, URLs: urls, Sessions: 6, Members: 5, Rate: 120, Payload: 100,
		Warmup: 500 * time.Millisecond, Duration: 2 * time.Second, Drain: 5 * time.Second, ServerMetrics: true})
	noErrors(t, rep)
	f := rep.Fanout
	if rep.Connect.Connected != 30 {
		t.Fatalf("connected %d of 30", rep.Connect.Connected)
	}
	if f.Lost != 0 || f.Duplicates != 0 || f.Misrouted != 0 || f.BadPayload != 0 {
		t.Fatalf("lost %d dups %d misrouted %d bad %d", f.Lost, f.Duplicates, f.Misrouted, f.BadPayload)
	}
	if f.Published < 200 || f.Expected != 5*f.Published || f.Delivered != f.Expected || f.Latency.Count != uint64(f.Delivered) {
		t.Fatalf("published %d expected %d delivered %d latency count %d", f.Published, f.Expected, f.Delivered, f.Latency.Count)
	}
	if f.PublishedTotal <= f.Published || f.DeliveredTotal != 5*f.PublishedTotal || f.ExpectedTotal != f.DeliveredTotal {
		t.Fatalf("whole run: published %d delivered %d expected %d", f.PublishedTotal, f.DeliveredTotal, f.ExpectedTotal)
	}
	if f.Latency.P50 <= 0 || f.Latency.P99 < f.Latency.P50 || f.Latency.Max < f.Latency.P999 {
		t.Fatalf("latency %+v", f.Latency)
	}
	s := rep.Server
	if s == nil || len(s.Nodes) != 2 {
		t.Fatalf("server stats %+v", s)
	}
	for _, n := range s.Nodes {
		if n.Error != "" {
			t.Fatalf("scrape %s: %s", n.URL, n.Error)
		}
	}
	// Publishes are non-blocking invocations (no Completion) and the
	// window is shorter than the keep-alive: every record the nodes wrote
	// in the window is a delivery.
	if int64(s.MessagesOut) != f.DeliveredTotal || s.RecordsIn != f.DeliveredTotal {
		t.Fatalf("nodes wrote %.0f records, generator received %d records and %d deliveries",
			s.MessagesOut, s.RecordsIn, f.DeliveredTotal)
	}
	if rep.Generator.CPUSeconds <= 0 {
		t.Errorf("generator CPU not measured: %+v", rep.Generator)
	}
}

// TestFanoutAck: with --ack every publish gets a Completion, and the nodes'
// record count includes them.
func TestFanoutAck(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioFanout, URLs: urls, Sessions: 3, Members: 3, Rate: 60,
		Duration: time.Second, ServerMetrics: true, Ack: true})
	noErrors(t, rep)
	f := rep.Fanout
	if f.Lost != 0 || f.PublishErrors != 0 || f.Delivered != 3*f.Published || f.PublishedTotal != f.Published {
		t.Fatalf("%+v", f)
	}
	if s := rep.Server; int64(s.MessagesOut) != f.DeliveredTotal+f.PublishedTotal || s.RecordsIn != int64(s.MessagesOut) {
		t.Fatalf("nodes wrote %.0f, generator received %d; deliveries %d + completions %d",
			s.MessagesOut, s.RecordsIn, f.DeliveredTotal, f.PublishedTotal)
	}
}

// TestConnectionsEndToEnd: connections from several loopback addresses,
// held, all alive at the probe.
func TestConnectionsEndToEnd(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioConnections, URLs: urls, Connections: 200, Sessions: 20, Ramp: 400,
		Duration: time.Second, ServerMetrics: true,
		SourceAddrs: []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}})
	noErrors(t, rep)
	cs := rep.Connections
	if cs.Connected != 200 || cs.Alive != 200 || cs.Probed != 200 || cs.Dropped != 0 {
		t.Fatalf("%+v", cs)
	}
	if rep.Connect.Latency.Count != 200 || rep.Connect.Seconds < 0.4 {
		t.Fatalf("connect %+v: 200 at 400/s take at least half a second", rep.Connect)
	}
	if s := rep.Server; int64(s.MessagesOut) != s.RecordsIn || s.Processes != 1 {
		t.Fatalf("nodes wrote %.0f records, generator received %d; processes %d", s.MessagesOut, s.RecordsIn, s.Processes)
	}
}

// TestPlansEndToEnd: closed-loop plans; every plan completes successfully
// with both scripted steps.
func TestPlansEndToEnd(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioPlans, URLs: urls, Concurrency: 3, Duration: 2 * time.Second})
	noErrors(t, rep)
	p := rep.Plans
	if p.Completed == 0 || p.Succeeded != p.Completed || p.Failed != 0 || p.TimedOut != 0 || p.Started != p.Completed {
		t.Fatalf("%+v", p)
	}
	if p.Steps != 2*p.Completed || p.Plan.Count != uint64(p.Completed) || p.Create.Count != uint64(p.Started) {
		t.Fatalf("steps %d for %d plans; latencies %d/%d", p.Steps, p.Completed, p.Create.Count, p.Plan.Count)
	}
}

// TestPlansAtRate: open loop at a fixed rate.
func TestPlansAtRate(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioPlans, URLs: urls, Rate: 20, Duration: 2 * time.Second})
	noErrors(t, rep)
	p := rep.Plans
	if p.Started < 35 || p.Started > 41 || p.Completed != p.Started || p.Succeeded != p.Completed {
		t.Fatalf("%+v", p)
	}
}

// TestChatEndToEnd: agent messages to the scripted writer. Until the hub
// has SendAgentMessage the generator reports the method as unsupported,
// and the test says so.
func TestChatEndToEnd(t *testing.T) {
	urls := startFarm(t, 2)
	rep := run(t, Config{Scenario: ScenarioChat, URLs: urls, Sessions: 4, Rate: 10, Duration: 2 * time.Second})
	ch := rep.Chat
	if ch.Unsupported != "" {
		t.Skipf("chat scenario not exercised: %s", ch.Unsupported)
	}
	noErrors(t, rep)
	if ch.Completed == 0 || ch.Completed != ch.Sent || ch.Failed != 0 || ch.TimedOut != 0 {
		t.Fatalf("%+v", ch)
	}
	if ch.FirstChunk.Count != uint64(ch.Completed) || ch.Completion.P50 < ch.FirstChunk.P50 {
		t.Fatalf("first chunk %+v, completion %+v", ch.FirstChunk, ch.Completion)
	}
}

package loadgen

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/orchestratorchat/hubfarm/hubnode/client"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP hubfarm_messages_out_total Hub protocol records written to clients.
# TYPE hubfarm_messages_out_total counter
hubfarm_messages_out_total 2105
hubfarm_connections{hub="AgentHub"} 3
hubfarm_connections{hub="OrchestratorHub"} 40
hubfarm_connections_opened_total{hub="OrchestratorHub"} 99
process_resident_memory_bytes 6.744064e+07
hubfarm_invocations_rate_limited_total{hub="A b}c"} 2
hubfarm_invocation_duration_seconds_sum{hub="AgentHub",method="JoinSession"} 0.5
hubfarm_invocation_duration_seconds_sum{hub="OrchestratorHub",method="JoinSession"} 1.5
hubfarm_invocation_duration_seconds_sum{hub="OrchestratorHub",method="JoinSessionX"} 100
hubfarm_invocation_duration_seconds_sum{hub="OrchestratorHub",method="SendSessionMessage"} 7
`
	join := invocationSeries("JoinSession", "sum")
	orchJoin := `hubfarm_invocation_duration_seconds_sum{hub="OrchestratorHub",method="JoinSession"}`
	m, err := parseMetrics(strings.NewReader(text), []string{MetricMessagesOut, MetricConnections, MetricRSS, MetricRateLimited, MetricCPU, join, orchJoin})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{MetricMessagesOut: 2105, MetricConnections: 43, MetricRSS: 67440640, MetricRateLimited: 2, join: 2, orchJoin: 1.5}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
}

func TestParseAddrs(t *testing.T) {
	a, err := ParseAddrs("127.0.0.2-127.0.0.4, 10.0.0.1,::1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "10.0.0.1", "::1"}
	if len(a) != len(want) {
		t.Fatalf("got %v", a)
	}
	for i, w := range want {
		if a[i] != netip.MustParseAddr(w) {
			t.Fatalf("got %v, want %v", a, want)
		}
	}
	for _, bad := range []string{"127.0.0.5-127.0.0.4", "x", "127.0.0.1-::1", "10.0.0.0-10.255.255.255"} {
		if _, err := ParseAddrs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{&client.StatusError{Op: "negotiate", StatusCode: 429}, "connect: negotiate HTTP 429"},
		{fmt.Errorf("wrapped: %w", &errHTTPStatus{op: "websocket", status: 503}), "connect: websocket HTTP 503"},
		{&invocationError{target: "JoinSession", msg: "An unexpected error occurred invoking 'JoinSession' on the server. HubException: RATE_LIMITED: too many invocations; slow down."}, "connect: RATE_LIMITED"},
		{&invocationError{msg: "Failed to invoke 'X' due to an error on the server. HubException: Method does not exist."}, "connect: Method does not exist."},
		{fmt.Errorf("JoinSession: %w", errTimeout), "connect: timeout"},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), "connect: connection refused"},
		{errors.New("something odd"), "connect: other"},
	}
	for _, c := range cases {
		if got := classify("connect", c.err); got != c.want {
			t.Errorf("classify(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !retryable(&client.StatusError{StatusCode: 429}) || !retryable(&errHTTPStatus{status: 503}) || retryable(errors.New("connection refused")) {
		t.Error("retryable: 429 and 503 are, others are not")
	}
}

func TestParseStatCPU(t *testing.T) {
	// Field 2 may hold spaces and parentheses.
	line := []byte("4242 (hub farm (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 123 0 0")
	got, err := parseStatCPU(line)
	if err != nil || got != 3.25 {
		t.Fatalf("got %v, %v; want 3.25 s", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Fatal("short line accepted")
	}
	if c, err := selfCPU(); err != nil || c < 0 {
		t.Fatalf("selfCPU = %v, %v", c, err)
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Scenario: ScenarioPlans, URLs: []string{"127.0.0.1:8080/"}, Rate: 25}
	if err := c.normalize(); err != nil {
		t.Fatal(err)
	}
	if c.URLs[0] != "http://127.0.0.1:8080" || c.Hub != HubOrchestrator || c.Sessions != 3 || c.Concurrency != 1000 {
		t.Fatalf("plans at a rate: %+v", c)
	}
	c = Config{Scenario: ScenarioChat, URLs: []string{"http://x"}}
	if err := c.normalize(); err != nil || c.Hub != HubAgent || c.Agent != "scripted-writer" || c.UserPrefix == "" {
		t.Fatalf("chat: %+v %v", c, err)
	}
	for _, bad := range []Config{{Scenario: "nope", URLs: []string{"x"}}, {Scenario: ScenarioFanout}, {Scenario: ScenarioFanout, URLs: []string{"x"}, Rate: -1}} {
		if err := bad.normalize(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

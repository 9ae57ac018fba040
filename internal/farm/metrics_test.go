package farm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/orchestratorchat/hubfarm/hubnode/hubs"
	"github.com/orchestratorchat/hubfarm/internal/farm"
	"github.com/orchestratorchat/hubfarm/internal/testredis"
	"github.com/orchestratorchat/hubfarm/metrics"
	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/session"
)

// metricSet is one scrape of a node's /metrics, parsed with the Prometheus
// text parser.
type metricSet map[string]*dto.MetricFamily

func scrape(t *testing.T, n *farm.Node) metricSet {
	t.Helper()
	resp, err := http.Get(n.URL() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// get sums the series of name whose labels include the given name/value
// pairs. name may end in _count or _sum to read a histogram's count or sum.
// A missing series is 0.
func (m metricSet) get(name string, labels ...string) float64 {
	fam, field := m[name], ""
	if fam == nil {
		for _, suffix := range []string{"_count", "_sum"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && m[base] != nil {
				fam, field = m[base], suffix
			}
		}
	}
	if fam == nil {
		return 0
	}
	total := 0.0
series:
	for _, s := range fam.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range s.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue series
			}
		}
		switch {
		case field == "_count" && s.Histogram != nil:
			total += float64(s.GetHistogram().GetSampleCount())
		case field == "_sum" && s.Histogram != nil:
			total += s.GetHistogram().GetSampleSum()
		case s.Counter != nil:
			total += s.GetCounter().GetValue()
		case s.Gauge != nil:
			total += s.GetGauge().GetValue()
		case s.Untyped != nil:
			total += s.GetUntyped().GetValue()
		}
	}
	return total
}

// delta is what a series moved by, summed over nodes, between before
// (one scrape per node) and now.
func delta(t *testing.T, nodes []*farm.Node, before []metricSet, name string, labels ...string) float64 {
	t.Helper()
	d := 0.0
	for i, n := range nodes {
		d += scrape(t, n).get(name, labels...) - before[i].get(name, labels...)
	}
	return d
}

func scrapeAll(t *testing.T, nodes []*farm.Node) []metricSet {
	t.Helper()
	out := make([]metricSet, len(nodes))
	for i, n := range nodes {
		out[i] = scrape(t, n)
	}
	return out
}

// wantDelta waits until the series moved by at least want (summed over
// nodes), then checks it moved by exactly want: counters are updated
// asynchronously (after the client saw the effect), but never overshoot.
func wantDelta(t *testing.T, nodes []*farm.Node, before []metricSet, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = delta(t, nodes, before, name, labels...)
		if got >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got != want {
		t.Errorf("%s%v moved by %v, want %v", name, labels, got, want)
	}
}

// wantValue waits until a gauge of node n reads want.
func wantValue(t *testing.T, n *farm.Node, want float64, name string, labels ...string) {
	t.Helper()
	var got float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = scrape(t, n).get(name, labels...)
		if got == want || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got != want {
		t.Errorf("%s%v on %s = %v, want %v", name, labels, n.ID, got, want)
	}
}

// rawReader reads a hand-driven WebSocket connection, counting the payload
// bytes the node wrote to it.
type rawReader struct {
	ws    *websocket.Conn
	bytes int
	recs  []string
}

// readUntil reads records until cond holds for what was read so far.
func (r *rawReader) readUntil(t *testing.T, within time.Duration, what string, cond func(recs []string) bool) {
	t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(within))
	for !cond(r.recs) {
		_, data, err := r.ws.ReadMessage()
		if err != nil {
			t.Fatalf("waiting for %s: %v (read %d records)", what, err, len(r.recs))
		}
		r.bytes += len(data)
		for _, rec := range strings.Split(string(data), "\x1e") {
			if rec != "" {
				r.recs = append(r.recs, rec)
			}
		}
	}
}

func countRecords(recs []string, substr string) int {
	n := 0
	for _, r := range recs {
		if strings.Contains(r, substr) {
			n++
		}
	}
	return n
}

// TestMetricsMoveWithTraffic drives two nodes (connect, send, stall a
// client, run a plan) and checks, through /metrics and the Prometheus text
// parser, that each step moves the right series by the right amount.
func TestMetricsMoveWithTraffic(t *testing.T) {
	testredis.Backends(t, func(t *testing.T, b testredis.Backend) {
		i := 0
		f := startFarm(t, b, 2, func(c *farm.NodeConfig) {
			i++
			if i == 1 {
				// Node 1 has a small send queue, so a stalled client fills it
				// soon after the socket buffers; a long write timeout makes
				// the slow-consumer close, not a write error, end it.
				c.Hub.SendQueueBytes = 64 << 10
				c.Hub.WriteTimeout = 30 * time.Second
			}
		})
		n1, n2 := f.nodes[0], f.nodes[1]
		both := []*farm.Node{n1, n2}
		hub := []string{"hub", hubs.OrchestratorName}

		// The node starts ready, sees its peer, and has its zero series.
		for _, n := range both {
			wantValue(t, n, 1, "hubfarm_ready")
			wantValue(t, n, 0, "hubfarm_draining")
			wantValue(t, n, 1, "hubfarm_backplane_peers")
			m := scrape(t, n)
			if age := m.get("hubfarm_backplane_peer_heartbeat_age_max_seconds"); age < 0 || age > 5 {
				t.Errorf("%s: peer heartbeat age %vs", n.ID, age)
			}
			for _, name := range []string{"hubfarm_connections", "hubfarm_jobs_enqueued_total", "hubfarm_plans_finished_total",
				"hubfarm_approvals_total", "hubfarm_jobs_pending", "hubfarm_send_queue_max_bytes"} {
				if m[name] == nil {
					t.Errorf("%s: %s is not exported before traffic", n.ID, name)
				}
			}
		}

		t.Run("connect", func(t *testing.T) {
			before := scrapeAll(t, both)
			ws := rawConn(t, n1.URL(), hubs.OrchestratorPath, "counted")
			rawHandshake(t, ws)
			wantDelta(t, both, before, 1, "hubfarm_connections", hub...)
			wantDelta(t, both, before, 1, "hubfarm_connections_opened_total", hub...)
			// A forged connection token is a handshake failure.
			req, _ := http.NewRequest(http.MethodGet, n1.URL()+hubs.OrchestratorPath+"?id=1.forged.token", nil)
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			wantDelta(t, both, before, 1, "hubfarm_handshake_failures_total", "reason", "unknown_token")
			_ = ws.Close()
			wantValue(t, n1, 0, "hubfarm_connections", hub...)
			wantDelta(t, both, before, 1, "hubfarm_connections_closed_total", "hub", hubs.OrchestratorName, "reason", "client_closed")
			wantDelta(t, both, before, 1, "hubfarm_send_queue_high_water_bytes_count")
		})

		// A raw client on node 1 and a Go client on node 2 share a session.
		ws := rawConn(t, n1.URL(), hubs.OrchestratorPath, "sender")
		rawHandshake(t, ws)
		r := &rawReader{ws: ws}
		arg, _ := json.Marshal(contract.CreateSessionRequest{Name: "metrics", Type: contract.SessionTypeMultiAgent})
		if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":1,"invocationId":"c1","target":"CreateSession","arguments":[`+string(arg)+"]}\x1e")); err != nil {
			t.Fatal(err)
		}
		var sid string
		r.readUntil(t, 10*time.Second, "CreateSession's completion", func(recs []string) bool {
			for _, rec := range recs {
				var c struct {
					Type         int    `json:"type"`
					InvocationID string `json:"invocationId"`
					Result       struct {
						SessionID string `json:"sessionId"`
					} `json:"result"`
				}
				if json.Unmarshal([]byte(rec), &c) == nil && c.Type == 3 && c.InvocationID == "c1" {
					sid = c.Result.SessionID
					return true
				}
			}
			return false
		})
		if sid == "" {
			t.Fatalf("no session id in %q", r.recs)
		}
		bob := dial(t, n2.URL(), hubs.OrchestratorPath, "bob")
		bobMsgs := record(bob, "ReceiveSessionMessage")
		invoke(t, bob, nil, "JoinSession", sid)
		waitFor(t, 5*time.Second, "the sender's group on node 1", func() bool {
			return scrape(t, n1).get("hubfarm_local_groups") == 1
		})

		t.Run("send", func(t *testing.T) {
			const k = 20
			before := scrapeAll(t, both)
			r.bytes, r.recs = 0, nil
			sent := 0
			for j := 0; j < k; j++ {
				frame := fmt.Sprintf("{\"type\":1,\"invocationId\":\"s%d\",\"target\":\"SendSessionMessage\",\"arguments\":[%q,\"hello %d\"]}\x1e", j, sid, j)
				if err := ws.WriteMessage(websocket.TextMessage, []byte(frame)); err != nil {
					t.Fatal(err)
				}
				sent += len(frame)
			}
			r.readUntil(t, 10*time.Second, "completions and messages", func(recs []string) bool {
				return countRecords(recs, `"type":3`) == k && countRecords(recs, `"target":"ReceiveSessionMessage"`) == k
			})
			waitFor(t, 10*time.Second, "bob's messages", func() bool { return len(bobMsgs.snapshot()) == k })
			n1Only, n2Only := []*farm.Node{n1}, []*farm.Node{n2}
			b1, b2 := before[:1], before[1:]

			// Node 1: k invocation records in, exactly the bytes written.
			wantDelta(t, n1Only, b1, k, "hubfarm_messages_in_total", "type", "1")
			wantDelta(t, n1Only, b1, float64(sent), "hubfarm_bytes_in_total")
			wantDelta(t, n1Only, b1, k, "hubfarm_invocations_total", "hub", hubs.OrchestratorName, "method", "SendSessionMessage", "outcome", "ok")
			wantDelta(t, n1Only, b1, k, "hubfarm_invocation_duration_seconds_count", "hub", hubs.OrchestratorName, "method", "SendSessionMessage")
			// Out: a completion and the session message per send, exactly
			// the bytes the client read, batched into socket writes.
			wantDelta(t, n1Only, b1, 2*k, "hubfarm_messages_out_total")
			wantDelta(t, n1Only, b1, float64(r.bytes), "hubfarm_bytes_out_total")
			writes := delta(t, n1Only, b1, "hubfarm_socket_writes_total")
			if got := delta(t, n1Only, b1, "hubfarm_records_per_write_count"); got != writes || writes < 1 || writes > 2*k {
				t.Errorf("records_per_write observed %v times for %v socket writes", got, writes)
			}
			wantDelta(t, n1Only, b1, 2*k, "hubfarm_records_per_write_sum")
			// Each send was published once; node 2 received each once and
			// wrote it to bob.
			if got := delta(t, n1Only, b1, "hubfarm_backplane_published_total"); got < k {
				t.Errorf("node 1 published %v times, want at least %d", got, k)
			}
			if got := delta(t, n1Only, b1, "hubfarm_backplane_publish_duration_seconds_count"); got < k {
				t.Errorf("publish latency observed %v times, want at least %d", got, k)
			}
			wantDelta(t, both, before, 0, "hubfarm_backplane_publish_errors_total")
			wantDelta(t, n2Only, b2, k, "hubfarm_backplane_received_total")
			wantDelta(t, n2Only, b2, k, "hubfarm_messages_out_total")
			// node 1: inbox, all, the sender's user channel, the session group.
			if subs := scrape(t, n1).get("hubfarm_backplane_subscriptions"); subs < 4 {
				t.Errorf("node 1 subscribes %v channels, want at least 4", subs)
			}
			wantDelta(t, both, before, 0, "hubfarm_slow_consumer_closes_total")
		})
		_ = ws.Close()
		wantValue(t, n1, 0, "hubfarm_connections", hub...)

		t.Run("stall", func(t *testing.T) {
			before := scrapeAll(t, both)
			stalled := rawConn(t, n1.URL(), hubs.OrchestratorPath, "staller")
			rawHandshake(t, stalled)
			join := fmt.Sprintf("{\"type\":1,\"invocationId\":\"1\",\"target\":\"JoinSession\",\"arguments\":[%q]}\x1e", sid)
			if err := stalled.WriteMessage(websocket.TextMessage, []byte(join)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the stalled client to join", func() bool {
				m, _ := n1.BP.GroupMembers(context.Background(), session.GroupName(sid))
				return len(m) == 2 // bob and the stalled client
			})
			// Bob sends 60 KiB messages; the stalled client reads nothing, so
			// once the socket buffers are full its queue overflows.
			pad := strings.Repeat("x", 60<<10)
			gone := func() bool {
				for _, c := range n1.Hub.Connections() {
					if c.User() == "staller" {
						return false
					}
				}
				return true
			}
			for j := 0; !gone(); j++ {
				if j == 1000 {
					t.Fatal("the stalled client was never closed")
				}
				invoke(t, bob, nil, "SendSessionMessage", sid, pad)
			}
			n1Only, b1 := []*farm.Node{n1}, before[:1]
			wantDelta(t, n1Only, b1, 1, "hubfarm_slow_consumer_closes_total")
			wantDelta(t, n1Only, b1, 1, "hubfarm_connections_closed_total", "hub", hubs.OrchestratorName, "reason", "slow_consumer")
			wantValue(t, n1, 0, "hubfarm_connections", hub...)
			if got := delta(t, n1Only, b1, "hubfarm_dropped_frames_total"); got < 1 {
				t.Errorf("dropped frames moved by %v, want at least 1", got)
			}
			wantDelta(t, n1Only, b1, 1, "hubfarm_send_queue_high_water_bytes_count")
			if hw := delta(t, n1Only, b1, "hubfarm_send_queue_high_water_bytes_sum"); hw < 60<<10 || hw > 200<<10 {
				t.Errorf("the stalled client's queue high water is %v bytes, want about one 60 KiB message or two", hw)
			}
			// Node 2's healthy client was not touched.
			wantDelta(t, []*farm.Node{n2}, before[1:], 0, "hubfarm_slow_consumer_closes_total")
		})

		t.Run("plan", func(t *testing.T) {
			alice := dial(t, n1.URL(), hubs.OrchestratorPath, "alice")
			done := record(alice, "OrchestrationCompleted")
			psid := createSession(t, alice, "plan")
			before := scrapeAll(t, both)
			var plan contract.OrchestrationPlan
			invoke(t, alice, &plan, "CreateOrchestrationPlan", contract.CreatePlanRequest{
				SessionID: psid, Goal: "count things", Strategy: contract.StrategySequential,
				AvailableAgentIDs: []string{"scripted-writer", "scripted-reviewer"}, MaxSteps: 10,
			})
			if len(plan.Steps) != 2 {
				t.Fatalf("plan has %d steps, want 2", len(plan.Steps))
			}
			invoke(t, alice, nil, "ExecutePlan", plan.ID)
			waitFor(t, 20*time.Second, "OrchestrationCompleted", func() bool { return len(done.snapshot()) == 1 })
			step := []string{"kind", orchestration.JobKindStep}
			wantDelta(t, both, before, 2, "hubfarm_jobs_enqueued_total", step...)
			wantDelta(t, both, before, 2, "hubfarm_jobs_started_total", step...)
			wantDelta(t, both, before, 2, "hubfarm_jobs_succeeded_total", step...)
			wantDelta(t, both, before, 2, "hubfarm_job_queue_wait_seconds_count", step...)
			wantDelta(t, both, before, 2, "hubfarm_job_run_seconds_count", step...)
			wantDelta(t, both, before, 2, "hubfarm_agent_call_duration_seconds_count", "kind", "scripted", "outcome", orchestration.AgentOK)
			wantDelta(t, both, before, 1, "hubfarm_plans_finished_total", "outcome", orchestration.PlanCompleted)
			for _, name := range []string{"hubfarm_jobs_failed_total", "hubfarm_jobs_retried_total", "hubfarm_jobs_dead_lettered_total",
				"hubfarm_jobs_reclaimed_total", "hubfarm_jobs_released_total"} {
				wantDelta(t, both, before, 0, name, step...)
			}
			for _, o := range []string{orchestration.PlanFailed, orchestration.PlanCancelled, orchestration.PlanTimedOut} {
				wantDelta(t, both, before, 0, "hubfarm_plans_finished_total", "outcome", o)
			}
			wantDelta(t, both, before, 1, "hubfarm_invocations_total", "method", "ExecutePlan", "outcome", "ok")
			// The stream is drained: every node reports the farm's backlog.
			for _, n := range both {
				wantValue(t, n, 0, "hubfarm_jobs_queued")
				wantValue(t, n, 0, "hubfarm_jobs_pending")
				wantValue(t, n, 0, "hubfarm_jobs_delayed")
				wantValue(t, n, 0, "hubfarm_jobs_dead_letters")
			}
		})

		// What the alert rules and the dashboard use is what the nodes
		// export (after the traffic above created every labelled series).
		t.Run("deploy names exported", func(t *testing.T) {
			exported := map[string]bool{}
			for _, m := range scrapeAll(t, both) {
				for name, fam := range m {
					exported[name] = true
					if fam.GetType() == dto.MetricType_HISTOGRAM {
						for _, s := range []string{"_bucket", "_count", "_sum"} {
							exported[name+s] = true
						}
					}
				}
			}
			for _, file := range deployFiles(t) {
				for _, name := range metricNames(t, file) {
					if !exported[name] {
						t.Errorf("%s uses %s, which no node exports", file, name)
					}
				}
			}
		})
	})
}

// deployFiles lists the alert rules, scrape config and dashboards.
func deployFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../deploy/prometheus/*.yml", "../../deploy/grafana/*.json"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 3 {
		t.Fatalf("deploy files missing: found %v", files)
	}
	return files
}

// metricNames returns the metric names a deploy file mentions: every
// hubfarm_, go_ and process_ identifier (the exporters' namespaces).
func metricNames(t *testing.T, file string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range regexp.MustCompile(`\b(?:hubfarm|go|process)_[a-zA-Z0-9_]+`).FindAllString(string(b), -1) {
		seen[m] = true
	}
	out := make([]string, 0, len(seen))
	for name := range seen {
		out = append(out, name)
	}
	sort.Strings(out)
	return out
}

// TestMetricsObserverCoversEngineEvents: the metrics package counts every
// job event the engine reports (a new event would otherwise be dropped).
func TestMetricsObserverCoversEngineEvents(t *testing.T) {
	var _ orchestration.Observer = (*metrics.Engine)(nil)
	counted := map[string]bool{}
	for _, e := range metrics.JobEventNames() {
		counted[e] = true
	}
	for _, e := range orchestration.JobEvents() {
		if !counted[e] {
			t.Errorf("job event %q has no metric", e)
		}
	}
}

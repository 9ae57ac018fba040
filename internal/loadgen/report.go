package loadgen

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Report is the result of one run; it is written as text or, with --json,
// as JSON.
type Report struct {
	Scenario    string    `json:"scenario"`
	Started     time.Time `json:"started"`
	URLs        []string  `json:"urls"`
	Hub         string    `json:"hub"`
	UserPrefix  string    `json:"user_prefix"`
	Cores       int       `json:"cores"`
	Interrupted bool      `json:"interrupted,omitempty"`
	// WindowSeconds is the measured window (connections: the hold).
	WindowSeconds float64 `json:"window_s"`

	Connect     ConnectStats      `json:"connect"`
	Fanout      *FanoutStats      `json:"fanout,omitempty"`
	Connections *ConnectionsStats `json:"connections,omitempty"`
	Chat        *ChatStats        `json:"chat,omitempty"`
	Plans       *PlansStats       `json:"plans,omitempty"`

	ErrorsTotal int64       `json:"errors_total"`
	Errors      []ErrorKind `json:"errors"`
	// Disconnects counts connections that ended without the generator
	// closing them.
	Disconnects int64          `json:"disconnects"`
	Generator   GeneratorStats `json:"generator"`
	Server      *ServerStats   `json:"server,omitempty"`
}

// ConnectStats covers opening connections and their session setup.
type ConnectStats struct {
	Attempted int     `json:"attempted"`
	Connected int     `json:"connected"`
	Failed    int     `json:"failed"`
	Seconds   float64 `json:"seconds"`
	// Retries counts attempts refused with 429 or 503 and retried.
	Retries int64 `json:"retries"`
	// Latency of one successful attempt: negotiate, WebSocket, handshake
	// and the create or join invocation.
	Latency Latency `json:"latency"`
}

// GeneratorStats is the generator's own cost.
type GeneratorStats struct {
	// CPUSeconds is utime+stime during the measured window; CPUPercent is
	// that as a share of one core.
	CPUSeconds      float64 `json:"cpu_s"`
	CPUPercent      float64 `json:"cpu_pct"`
	CPUSecondsTotal float64 `json:"cpu_s_total"`
	RSSKiB          int64   `json:"rss_kib"`
	PeakRSSKiB      int64   `json:"peak_rss_kib"`
	Goroutines      int     `json:"goroutines"`
	// MachineBusyPct is how busy all cores of the machine were during the
	// window (everything on it, not only the generator and the farm).
	MachineBusyPct float64 `json:"machine_busy_pct"`
}

// FanoutStats is the fanout scenario's result. Published, Expected,
// Delivered and Latency cover the measured window; Lost, Duplicates and
// Reordered cover the whole run (warm-up included).
type FanoutStats struct {
	Sessions        int     `json:"sessions"`
	Members         int     `json:"members"`
	PayloadBytes    int     `json:"payload_bytes"`
	TargetRate      float64 `json:"target_publish_rate"`
	PublishTarget   int64   `json:"publish_target"`
	Published       int64   `json:"published"`
	PublishedPerSec float64 `json:"published_per_s"`
	PublishErrors   int64   `json:"publish_errors"`
	Expected        int64   `json:"deliveries_expected"`
	Delivered       int64   `json:"delivered"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	Latency         Latency `json:"latency"`
	PublishedTotal  int64   `json:"published_total"`
	ExpectedTotal   int64   `json:"deliveries_expected_total"`
	DeliveredTotal  int64   `json:"delivered_total"`
	Lost            int64   `json:"lost"`
	LossPct         float64 `json:"loss_pct"`
	Duplicates      int64   `json:"duplicates"`
	Reordered       int64   `json:"reordered"`
	Misrouted       int64   `json:"misrouted"`
	BadPayload      int64   `json:"bad_payload"`
	DrainSeconds    float64 `json:"drain_s"`
}

// ConnectionsStats is the connections scenario's result.
type ConnectionsStats struct {
	Target    int `json:"target"`
	Sessions  int `json:"sessions"`
	Connected int `json:"connected"`
	// Dropped counts connections lost while held.
	Dropped int64 `json:"dropped_while_held"`
	// Alive counts connections that received the final probe message of
	// their session; Probed is how many should have.
	Probed       int64   `json:"probed"`
	Alive        int64   `json:"alive"`
	ProbeLatency Latency `json:"probe_latency"`
	// ServerKiBPerConn is the server processes' RSS growth over the connect
	// phase per connection (with --server-metrics).
	ServerKiBPerConn float64 `json:"server_kib_per_conn,omitempty"`
	// GeneratorKiBPerConn is the generator's own.
	GeneratorKiBPerConn float64 `json:"generator_kib_per_conn"`
}

// ChatStats is the chat scenario's result.
type ChatStats struct {
	Agent      string  `json:"agent"`
	Sessions   int     `json:"sessions"`
	TargetRate float64 `json:"target_rate"`
	Sent       int64   `json:"sent"`
	// Skipped counts sends not made because every session still waited for
	// its previous answer.
	Skipped     int64   `json:"skipped_all_busy"`
	Completed   int64   `json:"completed"`
	Failed      int64   `json:"failed"`
	TimedOut    int64   `json:"timed_out"`
	PerSec      float64 `json:"completed_per_s"`
	Chunks      int64   `json:"chunks"`
	FirstChunk  Latency `json:"first_chunk"`
	Completion  Latency `json:"completion"`
	Unsupported string  `json:"unsupported,omitempty"`
}

// PlansStats is the plans scenario's result.
type PlansStats struct {
	Agents       []string `json:"agents"`
	Sessions     int      `json:"sessions"`
	TargetRate   float64  `json:"target_rate,omitempty"`
	Concurrency  int      `json:"concurrency"`
	Started      int64    `json:"started"`
	Skipped      int64    `json:"skipped_at_cap"`
	Completed    int64    `json:"completed"`
	Succeeded    int64    `json:"succeeded"`
	Failed       int64    `json:"failed"`
	TimedOut     int64    `json:"timed_out"`
	PlansPerSec  float64  `json:"plans_per_s"`
	Steps        int64    `json:"steps"`
	StepsPerSec  float64  `json:"steps_per_s"`
	Progress     int64    `json:"progress_events"`
	Create       Latency  `json:"create"`
	Plan         Latency  `json:"plan"`
	StepsPerPlan float64  `json:"steps_per_plan"`
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	lat := func(name string, l Latency) {
		if l.Count == 0 {
			p("  %-22s -", name)
			return
		}
		p("  %-22s p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f ms  (n=%d, mean %.2f)",
			name, l.P50, l.P90, l.P99, l.P999, l.Max, l.Count, l.Mean)
	}
	head := fmt.Sprintf("hubfarm load %s: hub %s at %s, users %s-*", r.Scenario, r.Hub, strings.Join(r.URLs, " "), r.UserPrefix)
	if r.Interrupted {
		head += "  (INTERRUPTED)"
	}
	p("%s", head)
	c := r.Connect
	p("  %-22s %d/%d in %.1fs (%d failed, %d retried refusals)", "connect", c.Connected, c.Attempted, c.Seconds, c.Failed, c.Retries)
	lat("connect+setup", c.Latency)
	if f := r.Fanout; f != nil {
		p("  %-22s %d sessions x %d members, %d-byte payload, window %.1fs", "fanout", f.Sessions, f.Members, f.PayloadBytes, r.WindowSeconds)
		p("  %-22s %d of %d scheduled (%.0f/s, target %.0f/s), %d errors", "published", f.Published, f.PublishTarget, f.PublishedPerSec, f.TargetRate, f.PublishErrors)
		p("  %-22s %d of %d (%.0f/s)", "delivered", f.Delivered, f.Expected, f.DeliveredPerSec)
		lat("latency", f.Latency)
		p("  %-22s lost %d (%.4f%%) of %d, duplicates %d, reordered %d, misrouted %d, bad %d, drain %.2fs", "whole run",
			f.Lost, f.LossPct, f.ExpectedTotal, f.Duplicates, f.Reordered, f.Misrouted, f.BadPayload, f.DrainSeconds)
	}
	if cs := r.Connections; cs != nil {
		p("  %-22s %d of %d held %.1fs over %d sessions, %d dropped", "connections", cs.Connected, cs.Target, r.WindowSeconds, cs.Sessions, cs.Dropped)
		p("  %-22s %d of %d connections received their session's probe", "alive", cs.Alive, cs.Probed)
		lat("probe latency", cs.ProbeLatency)
		if cs.ServerKiBPerConn != 0 {
			p("  %-22s %.1f KiB per connection (server RSS growth)", "server memory", cs.ServerKiBPerConn)
		}
		p("  %-22s %.1f KiB per connection", "generator memory", cs.GeneratorKiBPerConn)
	}
	if ch := r.Chat; ch != nil {
		p("  %-22s agent %s, %d sessions, target %.1f/s, window %.1fs", "chat", ch.Agent, ch.Sessions, ch.TargetRate, r.WindowSeconds)
		if ch.Unsupported != "" {
			p("  %-22s %s", "UNSUPPORTED", ch.Unsupported)
		}
		p("  %-22s sent %d, completed %d (%.1f/s), failed %d, timed out %d, skipped (all busy) %d, chunks %d",
			"messages", ch.Sent, ch.Completed, ch.PerSec, ch.Failed, ch.TimedOut, ch.Skipped, ch.Chunks)
		lat("first chunk", ch.FirstChunk)
		lat("completion", ch.Completion)
	}
	if pl := r.Plans; pl != nil {
		mode := fmt.Sprintf("concurrency %d", pl.Concurrency)
		if pl.TargetRate > 0 {
			mode = fmt.Sprintf("rate %.1f/s (cap %d in flight)", pl.TargetRate, pl.Concurrency)
		}
		p("  %-22s %s, agents %s, %d sessions, window %.1fs", "plans", mode, strings.Join(pl.Agents, ","), pl.Sessions, r.WindowSeconds)
		p("  %-22s started %d, completed %d (%.2f/s), succeeded %d, failed %d, timed out %d, skipped %d",
			"plans", pl.Started, pl.Completed, pl.PlansPerSec, pl.Succeeded, pl.Failed, pl.TimedOut, pl.Skipped)
		p("  %-22s %d (%.2f/s, %.1f per plan), progress events %d", "steps", pl.Steps, pl.StepsPerSec, pl.StepsPerPlan, pl.Progress)
		lat("create", pl.Create)
		lat("execute->completed", pl.Plan)
	}
	p("  %-22s %d total, %d disconnects", "errors", r.ErrorsTotal, r.Disconnects)
	for _, e := range r.Errors {
		p("    %8d  %s  (e.g. %s)", e.Count, e.Kind, e.Example)
	}
	g := r.Generator
	p("  %-22s cpu %.2fs in window (%.0f%% of one core), %.2fs total; rss %d KiB (peak %d); %d goroutines",
		"generator", g.CPUSeconds, g.CPUPercent, g.CPUSecondsTotal, g.RSSKiB, g.PeakRSSKiB, g.Goroutines)
	p("  %-22s %d cores, %.0f%% busy during the window", "machine", r.Cores, g.MachineBusyPct)
	if s := r.Server; s != nil {
		p("  %-22s wrote %.0f records in window (generator received %d); rate-limited %.0f, slow-consumer closes %.0f, dropped frames %.0f, backplane errors %.0f",
			"server", s.MessagesOut, s.RecordsIn, s.RateLimited, s.SlowConsumerCloses, s.DroppedFrames, s.BackplaneErrors)
		p("  %-22s %d process(es): cpu %.2fs, rss %.0f KiB (%+.0f KiB) from scrape to scrape", "", s.Processes, s.CPUSeconds, s.RSSAfterKiB, s.RSSDeltaKiB)
		p("  %-22s %.0f%% of one core used by neither the generator nor the nodes (Redis, proxy, other processes)", "", s.OtherCPUPct)
		for _, is := range s.Invocations {
			p("  %-22s %s: %.0f calls, mean %.2f ms from dispatch to completion", "", is.Method, is.Count, is.MeanMs)
		}
		for _, n := range s.Nodes {
			if n.Error != "" {
				p("    %s: %s", n.URL, n.Error)
			}
		}
	}
}

package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server metrics read from each URL's /metrics (Prometheus text format).
// Every series of a name is summed (labels are dropped).
const (
	MetricMessagesOut     = "hubfarm_messages_out_total"
	MetricConnections     = "hubfarm_connections"
	MetricRateLimited     = "hubfarm_invocations_rate_limited_total"
	MetricSlowConsumers   = "hubfarm_slow_consumer_closes_total"
	MetricDroppedFrames   = "hubfarm_dropped_frames_total"
	MetricBackplaneErrors = "hubfarm_node_backplane_send_errors_total"
	MetricRSS             = "process_resident_memory_bytes"
	MetricCPU             = "process_cpu_seconds_total"
	MetricStartTime       = "process_start_time_seconds"
	MetricGoroutines      = "go_goroutines"
)

var scrapedMetrics = []string{MetricMessagesOut, MetricConnections, MetricRateLimited, MetricSlowConsumers,
	MetricDroppedFrames, MetricBackplaneErrors, MetricRSS, MetricCPU, MetricStartTime, MetricGoroutines}

// scenarioMethods are the hub methods whose server-side handling time
// each scenario reports.
var scenarioMethods = map[string][]string{
	ScenarioFanout:      {methodSendSessionMessage},
	ScenarioConnections: {methodCreateSession, methodJoinSession},
	ScenarioChat:        {methodSendAgentMessage},
	ScenarioPlans:       {methodCreatePlan, methodExecutePlan},
}

func invocationSeries(method, part string) string {
	return `hubfarm_invocation_duration_seconds_` + part + `{method="` + method + `"}`
}

// InvocationStat is a hub method's handling time on the nodes (dispatch to
// completion, from hubfarm_invocation_duration_seconds) over the window. A
// connection's invocations run one at a time, so a mean close to the
// interval between one connection's calls means its calls queue.
type InvocationStat struct {
	Method string  `json:"method"`
	Count  float64 `json:"count"`
	MeanMs float64 `json:"mean_ms"`
}

// NodeMetrics is one URL's scrape before and after the measured window.
type NodeMetrics struct {
	URL    string             `json:"url"`
	Before map[string]float64 `json:"before"`
	After  map[string]float64 `json:"after"`
	Error  string             `json:"error,omitempty"`
}

// ServerStats sums the nodes' counters over the measured window.
type ServerStats struct {
	Nodes []NodeMetrics `json:"nodes"`
	// MessagesOut is the records the nodes wrote to clients during the
	// window; RecordsIn is what the generator's connections received in
	// the same window. They match when nothing was lost on the way.
	MessagesOut        float64 `json:"messages_out"`
	RecordsIn          int64   `json:"generator_records_in"`
	RateLimited        float64 `json:"rate_limited"`
	SlowConsumerCloses float64 `json:"slow_consumer_closes"`
	DroppedFrames      float64 `json:"dropped_frames"`
	BackplaneErrors    float64 `json:"backplane_send_errors"`
	// CPUSeconds and RSSDeltaKiB count each server process once (URLs
	// served by one process, like a dev farm's nodes, share its figures).
	CPUSeconds  float64 `json:"cpu_seconds"`
	RSSDeltaKiB float64 `json:"rss_delta_kib"`
	RSSAfterKiB float64 `json:"rss_after_kib"`
	Processes   int     `json:"processes"`
	// Invocations is the nodes' handling time of the scenario's methods.
	Invocations []InvocationStat `json:"invocations,omitempty"`
	// OtherCPUPct is the machine's busy time during the window not spent
	// by the generator or the scraped node processes, in % of one core:
	// Redis, a proxy, and whatever else shares the machine.
	OtherCPUPct float64 `json:"other_cpu_pct"`
}

// ScrapeMetrics reads the named metrics from base+"/metrics", summing all
// series of each name.
func ScrapeMetrics(ctx context.Context, hc *http.Client, base string, names []string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s: HTTP %d", req.URL, resp.StatusCode)
	}
	return parseMetrics(resp.Body, names)
}

// A name may carry a label selector, `name{k="v",...}`: it then sums only
// the series carrying every one of those labels, under the name as given.
func parseMetrics(r io.Reader, names []string) (map[string]float64, error) {
	type selector struct {
		key    string
		labels []string
	}
	want := make(map[string][]selector, len(names))
	for _, n := range names {
		base, sel, _ := strings.Cut(n, "{")
		var labels []string
		for _, l := range strings.Split(strings.TrimSuffix(sel, "}"), ",") {
			if l != "" {
				labels = append(labels, l)
			}
		}
		want[base] = append(want[base], selector{key: n, labels: labels})
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		end := strings.IndexAny(line, "{ ")
		if end < 0 || want[line[:end]] == nil {
			continue
		}
		rest := line[end:]
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		labels := line[end : len(line)-len(rest)]
	selectors:
		for _, sel := range want[line[:end]] {
			for _, l := range sel.labels {
				if !strings.Contains(labels, l) {
					continue selectors
				}
			}
			out[sel.key] += v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

// scraper takes the before and after snapshots of every URL, and the
// generator's and the machine's CPU over the same span.
type scraper struct {
	hc      *http.Client
	nodes   []NodeMetrics
	names   []string
	methods []string

	t0, t1       time.Time
	self0, self1 float64
	busy0, busy1 uint64
}

func newScraper(urls []string, methods []string) *scraper {
	s := &scraper{hc: &http.Client{Timeout: 10 * time.Second}, methods: methods}
	s.names = append(s.names, scrapedMetrics...)
	for _, m := range methods {
		s.names = append(s.names, invocationSeries(m, "sum"), invocationSeries(m, "count"))
	}
	for _, u := range urls {
		s.nodes = append(s.nodes, NodeMetrics{URL: u})
	}
	return s
}

func (s *scraper) scrape(ctx context.Context, after bool) {
	var wg sync.WaitGroup
	for i := range s.nodes {
		wg.Add(1)
		go func(n *NodeMetrics) {
			defer wg.Done()
			m, err := ScrapeMetrics(ctx, s.hc, n.URL, s.names)
			switch {
			case err != nil:
				n.Error = err.Error()
			case after:
				n.After = m
			default:
				n.Before = m
			}
		}(&s.nodes[i])
	}
	wg.Wait()
	self, _ := selfCPU()
	busy, _ := machineCPU()
	if after {
		s.t1, s.self1, s.busy1 = time.Now(), self, busy
	} else {
		s.t0, s.self0, s.busy0 = time.Now(), self, busy
	}
}

// stats sums the deltas. Processes are told apart by their start time, so
// that the nodes of one dev process count its CPU and memory once.
func (s *scraper) stats(recordsIn int64) *ServerStats {
	st := &ServerStats{Nodes: s.nodes, RecordsIn: recordsIn}
	seen := map[float64]bool{}
	for _, n := range s.nodes {
		if n.Before == nil || n.After == nil {
			continue
		}
		d := func(name string) float64 { return n.After[name] - n.Before[name] }
		st.MessagesOut += d(MetricMessagesOut)
		st.RateLimited += d(MetricRateLimited)
		st.SlowConsumerCloses += d(MetricSlowConsumers)
		st.DroppedFrames += d(MetricDroppedFrames)
		st.BackplaneErrors += d(MetricBackplaneErrors)
		if p := n.After[MetricStartTime]; !seen[p] {
			seen[p] = true
			st.Processes++
			st.CPUSeconds += d(MetricCPU)
			st.RSSDeltaKiB += d(MetricRSS) / 1024
			st.RSSAfterKiB += n.After[MetricRSS] / 1024
		}
	}
	for _, m := range s.methods {
		is := InvocationStat{Method: m}
		var sum float64
		for _, n := range s.nodes {
			if n.Before != nil && n.After != nil {
				sum += n.After[invocationSeries(m, "sum")] - n.Before[invocationSeries(m, "sum")]
				is.Count += n.After[invocationSeries(m, "count")] - n.Before[invocationSeries(m, "count")]
			}
		}
		if is.Count > 0 {
			is.MeanMs = 1000 * sum / is.Count
			st.Invocations = append(st.Invocations, is)
		}
	}
	sort.Slice(st.Nodes, func(i, j int) bool { return st.Nodes[i].URL < st.Nodes[j].URL })
	if d := s.t1.Sub(s.t0).Seconds(); d > 0 && s.busy1 >= s.busy0 {
		other := float64(s.busy1-s.busy0)/clockTicks - (s.self1 - s.self0) - st.CPUSeconds
		st.OtherCPUPct = 100 * max(other, 0) / d
	}
	return st
}

// scrapeWindow is a server-metrics window opened by startScrape.
type scrapeWindow struct {
	sc       *scraper
	records0 int64
}

// startScrape takes the "before" scrape when --server-metrics is on.
func (r *runner) startScrape(ctx context.Context) *scrapeWindow {
	if !r.cfg.ServerMetrics {
		return nil
	}
	w := &scrapeWindow{sc: newScraper(r.cfg.URLs, scenarioMethods[r.cfg.Scenario])}
	w.sc.scrape(ctx, false)
	w.records0 = r.env.records.Load()
	return w
}

// finishScrape takes the "after" scrape and fills rep.Server.
func (r *runner) finishScrape(ctx context.Context, w *scrapeWindow, rep *Report) {
	if w == nil {
		return
	}
	w.sc.scrape(context.WithoutCancel(ctx), true)
	rep.Server = w.sc.stats(r.env.records.Load() - w.records0)
}

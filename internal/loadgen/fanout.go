package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Hub methods and callbacks the session scenarios use.
const (
	methodCreateSession      = "CreateSession"
	methodJoinSession        = "JoinSession"
	methodSendSessionMessage = "SendSessionMessage"
	targetReceiveSession     = "ReceiveSessionMessage"
)

// createSessionRequest mirrors the hub's CreateSessionRequest; it is
// declared here so the generator depends on the wire contract only.
type createSessionRequest struct {
	Name             string   `json:"name"`
	Type             int      `json:"type"`
	AgentIDs         []string `json:"agentIds"`
	WorkingDirectory string   `json:"workingDirectory"`
}

type createSessionResponse struct {
	Success   bool    `json:"success"`
	SessionID string  `json:"sessionId"`
	Error     *string `json:"error"`
}

// createSession creates a multi-agent session owned by c's user.
func createSession(ctx context.Context, c *conn, name string, agents []string) (string, error) {
	if agents == nil {
		agents = []string{}
	}
	var resp createSessionResponse
	err := c.invokeJSON(ctx, &resp, methodCreateSession, createSessionRequest{Name: name, Type: 1, AgentIDs: agents})
	if err != nil {
		return "", err
	}
	if !resp.Success || resp.SessionID == "" {
		msg := "no session id"
		if resp.Error != nil {
			msg = *resp.Error
		}
		return "", &invocationError{target: methodCreateSession, msg: "CREATE_FAILED: " + msg}
	}
	return resp.SessionID, nil
}

// member is one receiving connection of a session. Its tracker is written
// by the connection's read goroutine only and read after it ended.
type member struct {
	session int
	job     *connectJob
	tr      SeqTracker
}

// sessionTopology is the sessions of fanout and connections: members
// spread over the URLs, the first member of each session creating it and,
// in fanout, publishing to it.
type sessionTopology struct {
	r       *runner
	members []*member
	owners  []*member // by session
	sids    []string  // by session; "" until created
	joined  []atomic.Int64

	// Publishing state, per session. seq is owned by the session's
	// publisher goroutine; phases run one after another.
	seq           []uint64
	firstMeasured []uint64
	published     []atomic.Int64
	pubMeasured   []atomic.Int64
	sidJSON       [][]byte

	hist, warmHist *Histogram
	misrouted, bad atomic.Int64
	pubErrors      atomic.Int64
}

func newTopology(r *runner, sessions int) *sessionTopology {
	return &sessionTopology{r: r, owners: make([]*member, sessions), sids: make([]string, sessions),
		joined: make([]atomic.Int64, sessions), seq: make([]uint64, sessions),
		firstMeasured: make([]uint64, sessions), published: make([]atomic.Int64, sessions),
		pubMeasured: make([]atomic.Int64, sessions), sidJSON: make([][]byte, sessions),
		hist: NewHistogram(), warmHist: NewHistogram()}
}

// add appends a member of session s connecting as connection idx to url.
func (t *sessionTopology) add(s, idx int, url string) {
	m := &member{session: s}
	m.job = &connectJob{idx: idx, url: url, user: t.r.user(idx), h: handlers{inv: t.receive(m)}}
	if t.owners[s] == nil {
		t.owners[s] = m
		if t.r.cfg.Ack {
			m.job.h.ack = t.ack
		}
		m.job.setup = func(ctx context.Context, c *conn) error {
			sid, err := createSession(ctx, c, fmt.Sprintf("%s-s%d", t.r.cfg.UserPrefix, s), nil)
			if err != nil {
				return err
			}
			t.sids[s] = sid
			q, _ := json.Marshal(sid)
			t.sidJSON[s] = q
			t.joined[s].Add(1)
			return nil
		}
	} else {
		m.job.setup = func(ctx context.Context, c *conn) error {
			a, _ := json.Marshal([]string{t.sids[s]})
			if _, err := c.invoke(ctx, methodJoinSession, a); err != nil {
				return err
			}
			t.joined[s].Add(1)
			return nil
		}
	}
	t.members = append(t.members, m)
}

// receive returns m's ReceiveSessionMessage handler: the hot path. It finds
// the payload by a byte search, checks it and records it; nothing here
// allocates.
func (t *sessionTopology) receive(m *member) invocationHandler {
	return func(c *conn, target, rec []byte) {
		if string(target) != targetReceiveSession {
			return
		}
		now := t.r.env.now()
		raw, ok := FindPayload(rec)
		if !ok {
			return // someone else's message
		}
		p, ok := ParsePayload(raw)
		if !ok {
			t.bad.Add(1)
			return
		}
		if p.Session != uint64(m.session) {
			t.misrouted.Add(1)
			return
		}
		if !m.tr.Observe(p.Seq) {
			return // duplicate or invalid: counted by the tracker
		}
		t.r.recv.Add(1)
		h := t.warmHist
		if p.Phase == PhaseMeasure {
			h = t.hist
		}
		h.Record(c.idx, time.Duration(now-p.SentNano))
	}
}

// ack counts refused publishes (with --ack).
func (t *sessionTopology) ack(errText string) {
	if errText != "" {
		t.pubErrors.Add(1)
		t.r.env.errs.add("publish: "+hubErrorCode(errText), errors.New(errText))
	}
}

// connect opens the owners (who create the sessions) and then everyone
// else (who join them).
func (t *sessionTopology) connect(ctx context.Context, cs *ConnectStats) {
	var owners, rest []*connectJob
	for _, m := range t.members {
		if t.owners[m.session] == m {
			owners = append(owners, m.job)
		} else {
			rest = append(rest, m.job)
		}
	}
	t.r.connectAll(ctx, owners, cs)
	var joinable []*connectJob
	orphans := 0
	for _, m := range t.members {
		if t.owners[m.session] != m {
			if t.sids[m.session] != "" {
				joinable = append(joinable, m.job)
			} else {
				orphans++
			}
		}
	}
	if orphans > 0 {
		t.r.env.errs.add("setup: session not created", fmt.Errorf("%d members skipped: their session's owner failed", orphans))
		cs.Attempted += orphans
		cs.Failed += orphans
	}
	t.r.connectAll(ctx, joinable, cs)
}

// appendFrame builds the publish record for session s.
func (t *sessionTopology) appendFrame(b []byte, c *conn, s int, p Payload, size int) []byte {
	b = append(b, `{"type":1`...)
	if t.r.cfg.Ack {
		b = append(b, `,"invocationId":"`...)
		b = strconv.AppendUint(b, c.nextID.Add(1), 10)
		b = append(b, '"')
	}
	b = append(b, `,"target":"`+methodSendSessionMessage+`","arguments":[`...)
	b = append(b, t.sidJSON[s]...)
	b = append(b, ',', '"')
	b = AppendPayload(b, p, size)
	return append(b, '"', ']', '}', 0x1e)
}

// publishPhase has every session's owner publish at rate/sessions per
// second for dur, staggered evenly over the period. It returns how many
// publishes were scheduled.
func (t *sessionTopology) publishPhase(ctx context.Context, phase byte, rate float64, dur time.Duration, size int) int64 {
	var active []int
	for s, o := range t.owners {
		if o != nil && o.job.conn != nil && t.sids[s] != "" {
			active = append(active, s)
		}
	}
	if phase == PhaseMeasure {
		for s := range t.seq {
			t.firstMeasured[s] = t.seq[s] + 1
		}
	}
	if rate <= 0 || len(active) == 0 || dur <= 0 {
		return 0
	}
	period := float64(len(t.owners)) / rate * float64(time.Second)
	start := time.Now().Add(10 * time.Millisecond)
	end := start.Add(dur)
	// A publisher that fell behind catches up, but not forever.
	hardEnd := end.Add(2 * time.Second)
	due := func(i, k int) time.Time {
		return start.Add(time.Duration((float64(i)/float64(len(active)) + float64(k)) * period))
	}
	var target int64
	var wg sync.WaitGroup
	for i, s := range active {
		for k := 0; due(i, k).Before(end); k++ {
			target++
		}
		c := t.owners[s].job.conn
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, size+len(t.sidJSON[s])+96)
			for k := 0; ; k++ {
				next := due(i, k)
				if !next.Before(end) {
					return
				}
				if time.Now().Before(next) {
					if !sleepUntil(ctx, next) {
						return
					}
				} else if time.Now().After(hardEnd) || ctx.Err() != nil {
					return
				}
				seq := t.seq[s] + 1
				buf = t.appendFrame(buf[:0], c, s, Payload{Session: uint64(s), Seq: seq, Phase: phase, SentNano: t.r.env.now()}, size)
				if err := c.writeFrame(buf); err != nil {
					t.pubErrors.Add(1)
					t.r.env.errs.add(classify("publish", err), err)
					return
				}
				t.seq[s] = seq
				t.published[s].Add(1)
				if phase == PhaseMeasure {
					t.pubMeasured[s].Add(1)
				}
				t.r.sent.Add(1)
			}
		}()
	}
	wg.Wait()
	return target
}

// expected is the deliveries owed so far: every publish to every member
// that joined its session (the publisher receives its own message too).
func (t *sessionTopology) expected(measuredOnly bool) int64 {
	var e int64
	for s := range t.owners {
		p := t.published[s].Load()
		if measuredOnly {
			p = t.pubMeasured[s].Load()
		}
		e += p * t.joined[s].Load()
	}
	return e
}

// drain waits until every owed delivery arrived, the drain bound passed or
// ctx ended; it returns how long it waited.
func (t *sessionTopology) drain(ctx context.Context) time.Duration {
	start := time.Now()
	deadline := start.Add(t.r.cfg.Drain)
	want := t.expected(false)
	for t.r.recv.Load() < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

// tally reads the trackers; call it only after every connection closed.
func (t *sessionTopology) tally(f *FanoutStats) {
	for _, m := range t.members {
		if m.job.conn == nil {
			continue
		}
		s := m.session
		total := uint64(t.published[s].Load())
		f.Lost += int64(m.tr.Missing(total))
		f.Duplicates += int64(m.tr.Duplicates())
		f.Reordered += int64(m.tr.Reordered())
		f.BadPayload += int64(m.tr.Invalid())
		f.DeliveredTotal += int64(min(m.tr.Unique(), total))
	}
	f.Misrouted = t.misrouted.Load()
	f.BadPayload += t.bad.Load()
	f.ExpectedTotal = t.expected(false)
	for s := range t.published {
		f.PublishedTotal += t.published[s].Load()
		f.Published += t.pubMeasured[s].Load()
	}
	f.Expected = t.expected(true)
	f.PublishErrors = t.pubErrors.Load()
	hs := t.hist.Snapshot()
	f.Delivered = int64(hs.Count())
	f.Latency = hs.Summary()
	if f.ExpectedTotal > 0 {
		f.LossPct = 100 * float64(f.Lost) / float64(f.ExpectedTotal)
	}
}

// runFanout: R sessions x M members, one publisher per session.
func (r *runner) runFanout(ctx context.Context, rep *Report) error {
	cfg := &r.cfg
	r.labels = [2]string{"published", "delivered"}
	t := newTopology(r, cfg.Sessions)
	n := len(cfg.URLs)
	for s := 0; s < cfg.Sessions; s++ {
		for j := 0; j < cfg.Members; j++ {
			// Member j of session s goes to URL (s+j) mod n: publishers
			// rotate over the URLs and every session spans all of them.
			t.add(s, s*cfg.Members+j, cfg.URLs[(s+j)%n])
		}
	}
	t.connect(ctx, &rep.Connect)
	if rep.Connect.Connected == 0 {
		return fmt.Errorf("no connection succeeded: %s", firstError(r))
	}
	sc := r.startScrape(ctx)
	if cfg.Warmup > 0 {
		r.setPhase("warmup")
		r.progressHist.Store(t.warmHist)
		t.publishPhase(ctx, PhaseWarmup, cfg.Rate, cfg.Warmup, cfg.Payload)
	}
	r.setPhase("measure")
	r.progressHist.Store(t.hist)
	w := startWindow()
	target := t.publishPhase(ctx, PhaseMeasure, cfg.Rate, cfg.Duration, cfg.Payload)
	win := w.finish(&rep.Generator)
	r.setPhase("drain")
	f := &FanoutStats{Sessions: cfg.Sessions, Members: cfg.Members, PayloadBytes: cfg.Payload,
		TargetRate: cfg.Rate, PublishTarget: target}
	f.DrainSeconds = t.drain(ctx).Seconds()
	r.finishScrape(ctx, sc, rep)
	r.setPhase("close")
	r.env.closeAll()
	t.tally(f)
	rep.WindowSeconds = win.Seconds()
	if win > 0 {
		f.PublishedPerSec = float64(f.Published) / win.Seconds()
		f.DeliveredPerSec = float64(f.Delivered) / win.Seconds()
	}
	rep.Fanout = f
	return nil
}

// runConnections: N connections joined to sessions, held, then probed.
func (r *runner) runConnections(ctx context.Context, rep *Report) error {
	cfg := &r.cfg
	r.labels = [2]string{"connected", "probed"}
	t := newTopology(r, cfg.Sessions)
	for i := 0; i < cfg.Connections; i++ {
		t.add(i%cfg.Sessions, i, cfg.URLs[i%len(cfg.URLs)])
	}
	for _, m := range t.members {
		inner := m.job.setup
		m.job.setup = func(ctx context.Context, c *conn) error {
			err := inner(ctx, c)
			if err == nil {
				r.sent.Add(1)
			}
			return err
		}
	}
	sc := r.startScrape(ctx)
	rss0, _ := selfMemory()
	r.progressHist.Store(r.connectHist)
	t.connect(ctx, &rep.Connect)
	rss1, _ := selfMemory()
	cs := &ConnectionsStats{Target: cfg.Connections, Sessions: cfg.Sessions, Connected: rep.Connect.Connected}
	if cs.Connected > 0 {
		cs.GeneratorKiBPerConn = float64(rss1-rss0) / float64(cs.Connected)
	}
	rep.Connections = cs
	if cs.Connected == 0 {
		return fmt.Errorf("no connection succeeded: %s", firstError(r))
	}
	r.setPhase("hold")
	dropped0 := r.env.dropped.Load()
	w := startWindow()
	sleepUntil(ctx, time.Now().Add(cfg.Duration))
	win := w.finish(&rep.Generator)
	rep.WindowSeconds = win.Seconds()
	cs.Dropped = r.env.dropped.Load() - dropped0
	r.finishScrape(ctx, sc, rep)
	if s := rep.Server; s != nil && cs.Connected > 0 && s.Processes > 0 {
		cs.ServerKiBPerConn = s.RSSDeltaKiB / float64(cs.Connected)
	}
	// Probe: one message per session; every member still connected must
	// receive it.
	r.setPhase("probe")
	r.progressHist.Store(t.hist)
	var wg sync.WaitGroup
	for s, o := range t.owners {
		if o == nil || o.job.conn == nil || t.sids[s] == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := t.appendFrame(nil, o.job.conn, s, Payload{Session: uint64(s), Seq: 1, Phase: PhaseMeasure, SentNano: r.env.now()}, 0)
			if err := o.job.conn.writeFrame(b); err != nil {
				r.env.errs.add(classify("probe", err), err)
				return
			}
			t.seq[s] = 1
			t.published[s].Add(1)
			t.pubMeasured[s].Add(1)
		}()
	}
	wg.Wait()
	t.drain(ctx)
	r.env.closeAll()
	cs.Probed = t.expected(true)
	for _, m := range t.members {
		if m.job.conn != nil && m.tr.Seen(1) {
			cs.Alive++
		}
	}
	cs.ProbeLatency = t.hist.Snapshot().Summary()
	return nil
}

// firstError describes the most frequent error so far.
func firstError(r *runner) string {
	if l := r.env.errs.list(); len(l) > 0 {
		return fmt.Sprintf("%s (%d times), e.g. %s", l[0].Kind, l[0].Count, l[0].Example)
	}
	return "no error recorded"
}

// connected keeps the items whose connection succeeded, in order.
func connected[T any](items []T, job func(T) *connectJob) []T {
	live := items[:0:0]
	for _, it := range items {
		if job(it).conn != nil {
			live = append(live, it)
		}
	}
	return live
}

package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orchestratorchat/hubfarm/hubnode/protocol"
)

const (
	methodSendAgentMessage  = "SendAgentMessage"
	targetStreamingUpdate   = "ReceiveStreamingUpdate"
	targetAgentResponse     = "ReceiveAgentResponse"
	targetReceiveError      = "ReceiveError"
	methodNotFoundSubstring = "Method does not exist"
)

// agentMessageRequest mirrors the hub's AgentMessageRequest.
type agentMessageRequest struct {
	AgentID     string   `json:"agentId"`
	SessionID   string   `json:"sessionId"`
	Content     string   `json:"content"`
	Attachments []string `json:"attachments"`
	CommandID   string   `json:"commandId"`
}

// chatSession is one chat connection with its own session. It has at most
// one message in flight, so a streamed chunk or response arriving on it
// belongs to that message without relying on correlation ids.
type chatSession struct {
	idx int
	job *connectJob
	sid string

	mu       sync.Mutex
	busy     bool
	gen      uint64 // the message in flight; late events of older ones are ignored
	t0       int64  // env clock when it was sent
	gotFirst bool
}

type chatRun struct {
	r                        *runner
	first, done              *Histogram
	sent, skipped, completed atomic.Int64
	failed, timedOut, chunks atomic.Int64
	unsupported              atomic.Pointer[string]
	stop                     context.CancelFunc
	sessions                 []*chatSession
	nextCommand              atomic.Uint64
}

var isCompleteTrue = []byte(`"isComplete":true`)

// onEvent handles the agent's callbacks on the session's read goroutine.
func (cr *chatRun) onEvent(cs *chatSession) invocationHandler {
	return func(c *conn, target, rec []byte) {
		var complete, chunk bool
		switch string(target) {
		case targetStreamingUpdate:
			chunk = true
		case targetAgentResponse:
			complete = bytes.Contains(rec, isCompleteTrue)
			chunk = !complete
		case targetReceiveError:
			cr.onError(cs, rec)
			return
		default:
			return
		}
		now := cr.r.env.now()
		cs.mu.Lock()
		defer cs.mu.Unlock()
		if !cs.busy {
			return
		}
		if chunk {
			cr.chunks.Add(1)
		}
		if !cs.gotFirst {
			cs.gotFirst = true
			cr.first.Record(cs.idx, time.Duration(now-cs.t0))
		}
		if complete {
			cs.busy = false
			cr.done.Record(cs.idx, time.Duration(now-cs.t0))
			cr.completed.Add(1)
			cr.r.recv.Add(1)
		}
	}
}

// onError ends the message in flight with the error the hub reported.
func (cr *chatRun) onError(cs *chatSession, rec []byte) {
	m, err := protocol.DecodeMessage(rec)
	code := "ReceiveError"
	if err == nil && len(m.Arguments) > 0 {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(m.Arguments[0], &e) == nil {
			code, err = e.Code, errors.New(e.Error)
		}
	}
	cs.mu.Lock()
	wasBusy := cs.busy
	cs.busy = false
	cs.mu.Unlock()
	if wasBusy {
		cr.failed.Add(1)
	}
	cr.r.env.errs.add("chat: "+code, err)
}

// send starts one message on cs (already marked busy with generation gen).
func (cr *chatRun) send(ctx context.Context, cs *chatSession, gen uint64) {
	cfg := &cr.r.cfg
	n := cr.nextCommand.Add(1)
	req := agentMessageRequest{AgentID: cfg.Agent, SessionID: cs.sid, Attachments: []string{},
		Content:   fmt.Sprintf("hubfarm load: message %d", n),
		CommandID: fmt.Sprintf("%s-cmd-%d", cfg.UserPrefix, n)}
	ictx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	err := cs.job.conn.invokeJSON(ictx, nil, methodSendAgentMessage, req)
	if err == nil {
		return
	}
	cs.mu.Lock()
	mine := cs.busy && cs.gen == gen
	if mine {
		cs.busy = false
	}
	cs.mu.Unlock()
	if mine {
		cr.failed.Add(1)
	}
	cr.r.env.errs.add(classify("chat", err), err)
	if strings.Contains(err.Error(), methodNotFoundSubstring) {
		msg := fmt.Sprintf("%s%s has no %s method", cfg.URLs[0], cfg.Hub, methodSendAgentMessage)
		cr.unsupported.CompareAndSwap(nil, &msg)
		cr.stop()
	}
}

// sweep times out messages that waited longer than cfg.Timeout.
func (cr *chatRun) sweep(limit time.Duration) {
	now := cr.r.env.now()
	for _, cs := range cr.sessions {
		cs.mu.Lock()
		expired := cs.busy && now-cs.t0 > int64(limit)
		if expired {
			cs.busy = false
		}
		cs.mu.Unlock()
		if expired {
			cr.timedOut.Add(1)
			cr.r.env.errs.add("chat: timeout", fmt.Errorf("no complete response within %s", limit))
		}
	}
}

func (cr *chatRun) busyCount() int {
	n := 0
	for _, cs := range cr.sessions {
		cs.mu.Lock()
		if cs.busy {
			n++
		}
		cs.mu.Unlock()
	}
	return n
}

// runChat: agent messages at a rate, one in flight per session.
func (r *runner) runChat(ctx context.Context, rep *Report) error {
	cfg := &r.cfg
	r.labels = [2]string{"sent", "completed"}
	cr := &chatRun{r: r, first: NewHistogram(), done: NewHistogram()}
	ctx, cr.stop = context.WithCancel(ctx)
	defer cr.stop()
	var jobs []*connectJob
	for i := 0; i < cfg.Sessions; i++ {
		cs := &chatSession{idx: i}
		cs.job = &connectJob{idx: i, url: cfg.URLs[i%len(cfg.URLs)], user: r.user(i), h: handlers{inv: cr.onEvent(cs)},
			setup: func(ctx context.Context, c *conn) error {
				sid, err := createSession(ctx, c, fmt.Sprintf("%s-chat%d", cfg.UserPrefix, i), []string{cfg.Agent})
				cs.sid = sid
				return err
			}}
		cr.sessions = append(cr.sessions, cs)
		jobs = append(jobs, cs.job)
	}
	r.connectAll(ctx, jobs, &rep.Connect)
	if cr.sessions = connected(cr.sessions, func(cs *chatSession) *connectJob { return cs.job }); len(cr.sessions) == 0 {
		return fmt.Errorf("no connection succeeded: %s", firstError(r))
	}

	r.setPhase("measure")
	r.progressHist.Store(cr.done)
	sc := r.startScrape(ctx)
	w := startWindow()
	var wg sync.WaitGroup
	period := time.Duration(float64(time.Second) / cfg.Rate)
	start := time.Now()
	end := start.Add(cfg.Duration)
	next := 0
	lastSweep := time.Now()
	for k := 0; ; k++ {
		due := start.Add(time.Duration(k) * period)
		if !due.Before(end) || !sleepUntil(ctx, due) {
			break
		}
		if time.Since(lastSweep) > 100*time.Millisecond {
			cr.sweep(cfg.Timeout)
			lastSweep = time.Now()
		}
		var picked *chatSession
		var gen uint64
		for i := 0; i < len(cr.sessions) && picked == nil; i++ {
			cs := cr.sessions[(next+i)%len(cr.sessions)]
			cs.mu.Lock()
			if !cs.busy {
				cs.busy, cs.gotFirst, cs.t0 = true, false, r.env.now()
				cs.gen++
				picked, gen = cs, cs.gen
				next = (next + i + 1) % len(cr.sessions)
			}
			cs.mu.Unlock()
		}
		if picked == nil {
			cr.skipped.Add(1)
			continue
		}
		cr.sent.Add(1)
		r.sent.Add(1)
		wg.Add(1)
		go func() { defer wg.Done(); cr.send(ctx, picked, gen) }()
	}
	// The window spans the whole duration, not just up to the last send.
	sleepUntil(ctx, end)
	r.setPhase("drain")
	deadline := time.Now().Add(cfg.Drain)
	for cr.busyCount() > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		cr.sweep(cfg.Timeout)
	}
	cr.sweep(0) // what is still waiting now is not coming within the bound
	win := w.finish(&rep.Generator)
	r.finishScrape(ctx, sc, rep)
	r.env.closeAll()
	wg.Wait()
	rep.WindowSeconds = win.Seconds()
	ch := &ChatStats{Agent: cfg.Agent, Sessions: len(cr.sessions), TargetRate: cfg.Rate,
		Sent: cr.sent.Load(), Skipped: cr.skipped.Load(), Completed: cr.completed.Load(),
		Failed: cr.failed.Load(), TimedOut: cr.timedOut.Load(), Chunks: cr.chunks.Load(),
		FirstChunk: cr.first.Snapshot().Summary(), Completion: cr.done.Snapshot().Summary()}
	if win > 0 {
		ch.PerSec = float64(ch.Completed) / win.Seconds()
	}
	if u := cr.unsupported.Load(); u != nil {
		ch.Unsupported = *u
	}
	rep.Chat = ch
	return nil
}

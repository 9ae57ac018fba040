package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// routedSend is one Router call.
type routedSend struct {
	Group, Conn, Exclude, Target string
	JSON                         string
}

// fakeRouter records what the engine routes outside the session history.
type fakeRouter struct {
	mu       sync.Mutex
	sends    []routedSend
	watchers []string
}

func (r *fakeRouter) add(s routedSend, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	s.JSON = string(b)
	r.mu.Lock()
	r.sends = append(r.sends, s)
	r.mu.Unlock()
	return nil
}

func (r *fakeRouter) SendGroup(_ context.Context, group, exclude, target string, payload any) error {
	return r.add(routedSend{Group: group, Exclude: exclude, Target: target}, payload)
}

func (r *fakeRouter) SendConnection(_ context.Context, conn, target string, payload any) error {
	return r.add(routedSend{Conn: conn, Target: target}, payload)
}

func (r *fakeRouter) Watchers(context.Context, string, string, string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.watchers...), nil
}

// chunks returns the chunk sends to group (or to conn), decoded.
func (r *fakeRouter) chunks(t *testing.T, group, conn string) []contract.AgentResponseDto {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contract.AgentResponseDto
	for _, s := range r.sends {
		if s.Target != contract.TargetReceiveStreamingUpdate || s.Group != group || s.Conn != conn {
			continue
		}
		var d contract.AgentResponseDto
		if err := json.Unmarshal([]byte(s.JSON), &d); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func (r *fakeRouter) targets(conn, target string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sends {
		if s.Conn == conn && s.Target == target {
			n++
		}
	}
	return n
}

// statuses lists the AgentStatusUpdate statuses sent to an agent's group.
func (r *fakeRouter) statuses(agentID string) []contract.AgentStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []contract.AgentStatus
	for _, s := range r.sends {
		if s.Group == AgentGroup(agentID) && s.Target == contract.TargetAgentStatusUpdate {
			var d contract.AgentStatusDto
			_ = json.Unmarshal([]byte(s.JSON), &d)
			out = append(out, d.Status)
		}
	}
	return out
}

// routed is a Sessions value that also routes.
type routed struct {
	*fakeSessions
	*fakeRouter
}

// msgNode starts an engine whose Sessions value routes through router.
func (v *env) msgNode(cfg Config, catalog AgentCatalog, router *fakeRouter) *Engine {
	v.t.Helper()
	if catalog == nil {
		catalog = v.catalog
	}
	e, err := New(v.forBackend(cfg), v.rdb, routed{v.sessions, router}, catalog, nil)
	if err != nil {
		v.t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		v.t.Fatal(err)
	}
	v.engines = append(v.engines, e)
	v.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

// outcomeOf waits for the final callback of a message, as recorded
// through Emit: its ReceiveAgentResponse, or a ReceiveError about its
// agent.
func (v *env) outcomeOf(messageID, agentID string, timeout time.Duration) event {
	v.t.Helper()
	var got event
	waitFor(v.t, timeout, "the outcome of "+messageID, func() bool {
		for _, ev := range v.sessions.sessionEvents(testSession, "") {
			switch p := ev.Payload.(type) {
			case contract.AgentResponseDto:
				if p.Response.MessageID == messageID {
					got = ev
					return true
				}
			case contract.ErrorResponse:
				if p.AgentID != nil && *p.AgentID == agentID {
					got = ev
					return true
				}
			}
		}
		return false
	})
	return got
}

func send(t *testing.T, e *Engine, agent, content string) string {
	t.Helper()
	id, err := e.SendAgentMessage(context.Background(), testCaller, contract.AgentMessageRequest{
		AgentID: agent, SessionID: testSession, Content: content})
	if err != nil {
		t.Fatalf("SendAgentMessage: %v", err)
	}
	return id
}

// recorder keeps the requests an agent got and answers like Scripted.
type convRecorder struct {
	mu   sync.Mutex
	reqs []AgentRequest
}

func (c *convRecorder) Run(ctx context.Context, req AgentRequest, emit func(string)) (AgentResult, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, req)
	c.mu.Unlock()
	return (&Scripted{Chunks: 2}).Run(ctx, req, emit)
}

// TestAgentMessageAnswered: the user message is recorded before the job
// exists; chunks go to the session group and each watcher, in order, and
// the final answer is recorded once and sent to the other watchers; the
// agent's status goes Busy then Ready; the next job carries the
// conversation within its budget.
func TestAgentMessageAnswered(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		rec := &convRecorder{}
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{Chunks: 3}, "r": rec})
		router := &fakeRouter{watchers: []string{"w1", testCaller.ConnectionID}}
		api := v.msgNode(testConfig("api", 0), nil, router)
		v.msgNode(testConfig("n1", 2), nil, router)

		id := send(t, api, "a", "hello")
		ev := v.outcomeOf(id, "a", 10*time.Second)
		final := ev.Payload.(contract.AgentResponseDto)
		if ev.Target != contract.TargetReceiveAgentResponse || !final.Response.IsComplete || final.Response.Content != "a: hello" {
			t.Fatalf("final %s %s", ev.Target, ev.JSON)
		}
		evs := v.sessions.sessionEvents(testSession, "")
		if evs[0].Target != contract.TargetAgentMessage || !strings.Contains(evs[0].JSON, `"content":"hello"`) {
			t.Fatalf("first event %s %s", evs[0].Target, evs[0].JSON)
		}
		for _, dest := range []struct{ group, conn string }{{SessionGroup(testSession), ""}, {"", "w1"}, {"", testCaller.ConnectionID}} {
			cs := router.chunks(t, dest.group, dest.conn)
			var text string
			for i, c := range cs {
				if c.Response.MessageID != id || c.Response.IsComplete || c.Response.Metadata["sequence"] != float64(i) {
					t.Fatalf("%v chunk %d: %+v", dest, i, c.Response)
				}
				text += c.Response.Content
			}
			if len(cs) != 3 || text != "a: hello" {
				t.Fatalf("%v: %d chunks %q", dest, len(cs), text)
			}
		}
		// The caller got the final through Emit; only w1 through the router.
		waitFor(t, 5*time.Second, "the final to w1", func() bool { return router.targets("w1", contract.TargetReceiveAgentResponse) > 0 })
		if n, m := router.targets("w1", contract.TargetReceiveAgentResponse), router.targets(testCaller.ConnectionID, contract.TargetReceiveAgentResponse); n != 1 || m != 0 {
			t.Fatalf("final to w1 %d times, to the caller by the router %d times", n, m)
		}
		if n := len(v.sessions.sessionEvents(testSession, contract.TargetReceiveAgentResponse)); n != 1 {
			t.Fatalf("%d final answers recorded", n)
		}
		waitFor(t, 5*time.Second, "Ready", func() bool { return len(router.statuses("a")) == 2 })
		if st := router.statuses("a"); st[0] != contract.AgentStatusBusy || st[1] != contract.AgentStatusReady {
			t.Fatalf("statuses %v", st)
		}
		if dto, ok, err := api.AgentStatus(context.Background(), "a"); err != nil || !ok || dto.Status != contract.AgentStatusReady {
			t.Fatalf("AgentStatus %+v %v %v", dto, ok, err)
		}

		// The conversation: hello, its answer, then this message.
		id2 := send(t, api, "r", "second")
		v.outcomeOf(id2, "r", 10*time.Second)
		rec.mu.Lock()
		req := rec.reqs[0]
		rec.mu.Unlock()
		if req.MessageID != id2 || req.Task != "second" || req.Attempt != 1 || len(req.Messages) != 3 {
			t.Fatalf("request %+v", req)
		}
		roles := []contract.MessageRole{req.Messages[0].Role, req.Messages[1].Role, req.Messages[2].Role}
		if roles[0] != contract.MessageRoleUser || roles[1] != contract.MessageRoleAssistant || req.Messages[1].Content != "a: hello" || req.Messages[2].ID != id2 {
			t.Fatalf("conversation %+v", req.Messages)
		}
		// A small byte budget keeps only the newest message.
		small := testConfig("n2", 0)
		small.ConversationBytes = 10
		tiny := v.msgNode(small, nil, router)
		conv, err := tiny.enqueueMessage(context.Background(), messageJob{ID: "m-budget", AgentID: "r", SessionID: testSession, Content: "budget"}, false)
		if err != nil || len(conv) != 1 || conv[0].Content != "budget" {
			t.Fatalf("budgeted conversation %+v %v", conv, err)
		}
	})
}

// flaky emits a chunk and fails on its first attempt, then answers.
type flaky struct{}

func (flaky) Run(_ context.Context, req AgentRequest, emit func(string)) (AgentResult, error) {
	emit(fmt.Sprintf("attempt %d ", req.Attempt))
	if req.Attempt == 1 {
		return AgentResult{}, errors.New("backend hiccup")
	}
	emit("done")
	return AgentResult{}, nil
}

// TestAgentMessageRetries: a failed attempt is retried and streams again
// from sequence 0 with a higher attempt; the final answer is the
// successful attempt's text, once. Exhausted attempts dead-letter the job
// with ReceiveError PROCESSING_ERROR and status Error; a timeout is not
// retried and answers TIMEOUT.
func TestAgentMessageRetries(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"f": flaky{}, "dead": &Scripted{FailAttempts: 99},
			"slow": &Scripted{Delay: 10 * time.Second}})
		router := &fakeRouter{}
		cfg := testConfig("n1", 2)
		cfg.AgentTimeout = 300 * time.Millisecond
		e := v.msgNode(cfg, nil, router)

		id := send(t, e, "f", "go")
		final := v.outcomeOf(id, "f", 10*time.Second).Payload.(contract.AgentResponseDto)
		if final.Response.Content != "attempt 2 done" || fmt.Sprint(final.Response.Metadata["attempt"]) != "2" {
			t.Fatalf("final %+v", final.Response)
		}
		var seen []string
		for _, c := range router.chunks(t, SessionGroup(testSession), "") {
			seen = append(seen, fmt.Sprintf("%v/%v:%s", c.Response.Metadata["attempt"], c.Response.Metadata["sequence"], c.Response.Content))
		}
		if want := "1/0:attempt 1 |2/0:attempt 2 |2/1:done"; strings.Join(seen, "|") != want {
			t.Fatalf("chunks %q, want %q", strings.Join(seen, "|"), want)
		}

		id = send(t, e, "dead", "never")
		ev := v.outcomeOf(id, "dead", 10*time.Second)
		er, ok := ev.Payload.(contract.ErrorResponse)
		if !ok || er.Code != contract.CodeProcessingError || !strings.Contains(er.Error, "after 3 attempts") {
			t.Fatalf("dead-lettered outcome %s %s", ev.Target, ev.JSON)
		}
		dead, err := v.rdb.XRange(context.Background(), e.keys.part(testSession).dead, "-", "+").Result()
		if err != nil || len(dead) != 1 || dead[0].Values["kind"] != JobKindAgentMessage || dead[0].Values["msg"] != id {
			t.Fatalf("dead letters %+v %v", dead, err)
		}
		waitFor(t, 5*time.Second, "status Error", func() bool {
			st := router.statuses("dead")
			return len(st) > 0 && st[len(st)-1] == contract.AgentStatusError
		})

		v.sessions.mu.Lock()
		v.sessions.events = nil
		v.sessions.mu.Unlock()
		id = send(t, e, "slow", "hurry")
		ev = v.outcomeOf(id, "slow", 10*time.Second)
		if er, ok := ev.Payload.(contract.ErrorResponse); !ok || er.Code != contract.CodeTimeout {
			t.Fatalf("timeout outcome %s %s", ev.Target, ev.JSON)
		}
		if s := e.Stats(); s.MessagesAnswered != 1 || s.MessagesFailed != 2 {
			t.Fatalf("stats %+v", s)
		}
		// The job is acknowledged right after its callbacks.
		waitFor(t, 5*time.Second, "no pending job", func() bool {
			b, err := e.Backlog(context.Background())
			return err == nil && b.Pending == 0
		})
	})
}

// stuckOnce blocks its first attempt until cancelled and answers later
// ones.
type stuckOnce struct{ started chan int }

func (s stuckOnce) Run(ctx context.Context, req AgentRequest, emit func(string)) (AgentResult, error) {
	s.started <- req.Attempt
	if req.Attempt == 1 {
		emit("partial ")
		<-ctx.Done()
		return AgentResult{}, ctx.Err()
	}
	emit("whole answer")
	return AgentResult{}, nil
}

// TestAgentMessageReclaimedAfterCrash: the worker answering a message
// dies mid-answer; after the visibility timeout another node takes the job
// over and answers it once, as attempt 2.
func TestAgentMessageReclaimedAfterCrash(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		agent := stuckOnce{started: make(chan int, 4)}
		v := newEnv(t, b, map[string]Agent{"s": agent})
		router := &fakeRouter{}
		a := v.msgNode(crashConfig("node-a", 1), nil, router)
		id := send(t, a, "s", "q")
		if got := <-agent.started; got != 1 {
			t.Fatalf("first start was attempt %d", got)
		}
		a.crash()
		v.msgNode(crashConfig("node-b", 1), nil, router)
		final := v.outcomeOf(id, "s", 10*time.Second).Payload.(contract.AgentResponseDto)
		if final.Response.Content != "whole answer" || fmt.Sprint(final.Response.Metadata["attempt"]) != "2" {
			t.Fatalf("final %+v", final.Response)
		}
		if n := len(v.sessions.sessionEvents(testSession, contract.TargetReceiveAgentResponse)); n != 1 {
			t.Fatalf("%d final answers", n)
		}
	})
}

// TestAgentMessageValidation: requests that cannot be accepted are refused
// with their code and leave no event and no job.
func TestAgentMessageValidation(t *testing.T) {
	backends(t, func(t *testing.T, b backend) {
		v := newEnv(t, b, map[string]Agent{"a": &Scripted{}})
		v.sessions.forbid["mallory"] = true
		e := v.msgNode(testConfig("api", 0), nil, &fakeRouter{})
		ok := contract.AgentMessageRequest{AgentID: "a", SessionID: testSession, Content: "x"}
		cases := []struct {
			mut    func(*contract.AgentMessageRequest)
			caller Caller
			code   string
		}{
			{func(r *contract.AgentMessageRequest) { r.AgentID = "ghost" }, testCaller, contract.CodeAgentNotFound},
			{func(r *contract.AgentMessageRequest) { r.AgentID = "" }, testCaller, contract.CodeValidationFailed},
			{func(r *contract.AgentMessageRequest) { r.Content = " " }, testCaller, contract.CodeValidationFailed},
			{func(r *contract.AgentMessageRequest) { r.Content = strings.Repeat("x", maxMessageContent+1) }, testCaller, contract.CodeValidationFailed},
			{func(r *contract.AgentMessageRequest) { r.SessionID = "nope" }, testCaller, contract.CodeSessionNotFound},
			{func(*contract.AgentMessageRequest) {}, Caller{ConnectionID: "c9", User: "mallory"}, contract.CodeForbidden},
		}
		for i, c := range cases {
			req := ok
			c.mut(&req)
			if _, err := e.SendAgentMessage(context.Background(), c.caller, req); CodeOf(err) != c.code {
				t.Errorf("case %d: %v, want %s", i, err, c.code)
			}
			err := e.StreamAgentMessage(context.Background(), c.caller, req, func(contract.AgentResponse) error { return nil })
			if CodeOf(err) != c.code {
				t.Errorf("case %d (stream): %v, want %s", i, err, c.code)
			}
		}
		if n := len(v.sessions.sessionEvents(testSession, "")); n != 0 {
			t.Errorf("%d events for refused requests", n)
		}
		if b, _ := e.Backlog(context.Background()); b.Queued+b.Pending != 0 {
			t.Errorf("%d jobs for refused requests", b.Queued+b.Pending)
		}
		// Without a Router agent messages are unavailable.
		plain, _ := New(testConfig("plain", 0), v.rdb, v.sessions, v.catalog, nil)
		if _, err := plain.SendAgentMessage(context.Background(), testCaller, ok); CodeOf(err) != contract.CodeProcessingError {
			t.Errorf("without a router: %v", err)
		}
	})
}

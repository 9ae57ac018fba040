package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

const testKey = "sk-test-KEY-0123456789"

// fakeOpenAI is an OpenAI-compatible server on loopback. The i-th request
// is answered by handlers[i] (the last one repeats).
type fakeOpenAI struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   []map[string]any
	headers  []http.Header
	paths    []string
	handlers []http.HandlerFunc
	stop     chan struct{}
}

func newFake(t *testing.T, handlers ...http.HandlerFunc) *fakeOpenAI {
	f := &fakeOpenAI{handlers: handlers, stop: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		f.mu.Lock()
		i := len(f.bodies)
		f.bodies = append(f.bodies, m)
		f.headers = append(f.headers, r.Header.Clone())
		f.paths = append(f.paths, r.URL.Path)
		h := f.handlers[min(i, len(f.handlers)-1)]
		f.mu.Unlock()
		h(w, r)
	}))
	// Handlers that stall wait on stop, so the server can close.
	t.Cleanup(func() { close(f.stop); f.srv.Close() })
	return f
}

func (f *fakeOpenAI) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.bodies)
}

func (f *fakeOpenAI) body(i int) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[i]
}

// sse writes raw event-stream text, flushing after each piece.
func sse(w http.ResponseWriter, pieces ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	for _, p := range pieces {
		_, _ = io.WriteString(w, p)
		w.(http.Flusher).Flush()
	}
}

// ev formats one event from a JSON value.
func ev(v string) string { return "data: " + v + "\n\n" }

func content(s string) string {
	return ev(fmt.Sprintf(`{"choices":[{"delta":{"content":%q}}]}`, s))
}

const (
	stopEv  = `data: {"choices":[{"delta":{},"finish_reason":"stop"}]}` + "\n\n"
	usageEv = `data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13}}` + "\n\n"
	doneEv  = "data: [DONE]\n\n"
)

func okStream(w http.ResponseWriter, _ *http.Request) {
	sse(w, content("ok"), stopEv, usageEv, doneEv)
}

func failWith(status int, retryAfter, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// hangUp writes pieces, then cuts the connection.
func hangUp(pieces ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sse(w, pieces...)
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

// oaEnv collects what an openai agent under test needs.
type oaEnv struct {
	agent  *Agent
	fake   *fakeOpenAI
	mu     sync.Mutex
	sleeps []time.Duration
	logs   *bytes.Buffer
	logMu  sync.Mutex
}

func (e *oaEnv) slept() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]time.Duration(nil), e.sleeps...)
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newOAEnv(t *testing.T, mut func(*OpenAISpec), handlers ...http.HandlerFunc) *oaEnv {
	t.Helper()
	e := &oaEnv{fake: newFake(t, handlers...), logs: &bytes.Buffer{}}
	opts := Options{
		LookupEnv: func(k string) (string, bool) {
			if k == "TEST_OPENAI_KEY" {
				return testKey, true
			}
			return "", false
		},
		Sleep: func(ctx context.Context, d time.Duration) error {
			e.mu.Lock()
			e.sleeps = append(e.sleeps, d)
			e.mu.Unlock()
			return ctx.Err()
		},
		Jitter: func() float64 { return 0 },
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&e.logMu, e.logs}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	temp := 0.2
	spec := OpenAISpec{BaseURL: e.fake.srv.URL, Model: "test-model", APIKeyEnv: "TEST_OPENAI_KEY", Temperature: &temp,
		InputCostPerMillion: 1, OutputCostPerMillion: 2}
	if mut != nil {
		mut(&spec)
	}
	b, err := newOpenAIBackend("gpt", spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	e.agent = NewAgent(contract.AgentInfo{ID: "gpt"}, KindOpenAI, "system prompt", b, 16, opts.Logger, nil)
	t.Cleanup(func() {
		e.logMu.Lock()
		defer e.logMu.Unlock()
		if strings.Contains(e.logs.String(), testKey) {
			t.Errorf("the API key was logged: %s", e.logs.String())
		}
	})
	return e
}

func chat(t *testing.T, e *oaEnv) (Result, *collector, error) {
	t.Helper()
	c := &collector{}
	res, err := e.agent.Chat(context.Background(), Request{SessionID: "s1", AgentID: "gpt",
		Messages: []Message{{Role: contract.MessageRoleUser, Content: "hi"}}}, c.emit)
	if err != nil && strings.Contains(err.Error(), testKey) {
		t.Fatalf("the API key is in the error: %v", err)
	}
	return res, c, err
}

func TestOpenAIStream(t *testing.T) {
	e := newOAEnv(t, nil, func(w http.ResponseWriter, _ *http.Request) {
		sse(w,
			ev(`{"model":"test-model-0613","choices":[{"delta":{"role":"assistant"}}]}`),
			content("Hel"),
			": keep-alive\n\n",
			ev(`{"choices":[{"delta":{"reasoning_content":"pondering"}}]}`),
			// One event in two data lines.
			"data: {\"choices\":[{\"delta\":\ndata: {\"content\":\"lo\"}}]}\n\n",
			"event: message\r\ndata: {\"choices\":[{\"delta\":{\"content\":\" world\"}}]}\r\n\r\n",
			// The backend repeats the whole text: dropped.
			content("Hello world"),
			stopEv, usageEv, doneEv)
	})
	res, c, err := chat(t, e)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.texts(), "|"); got != "Hel|lo| world" {
		t.Fatalf("texts %q", got)
	}
	if res.Content != "Hello world" || res.FinishReason != "stop" || res.Model != "test-model-0613" {
		t.Fatalf("result %+v", res)
	}
	u := res.Usage
	if u.InputTokens != 10 || u.OutputTokens != 3 || u.TotalTokens != 13 || math.Abs(u.EstimatedCost-16e-6) > 1e-12 {
		t.Fatalf("usage %+v", res.Usage)
	}
	if c.chunks[1].Kind != ChunkThinking || c.chunks[1].Content != "pondering" {
		t.Fatalf("chunks %+v", c.chunks)
	}
	// The request.
	f := e.fake
	if f.paths[0] != "/v1/chat/completions" || f.headers[0].Get("Authorization") != "Bearer "+testKey ||
		f.headers[0].Get("Accept") != "text/event-stream" {
		t.Fatalf("path %s headers %v", f.paths[0], f.headers[0])
	}
	b := f.body(0)
	msgs := b["messages"].([]any)
	if b["model"] != "test-model" || b["stream"] != true || b["temperature"] != 0.2 || b["tools"] != nil ||
		b["stream_options"].(map[string]any)["include_usage"] != true || len(msgs) != 2 ||
		msgs[0].(map[string]any)["role"] != "system" || msgs[0].(map[string]any)["content"] != "system prompt" ||
		msgs[1].(map[string]any)["role"] != "user" || msgs[1].(map[string]any)["content"] != "hi" {
		t.Fatalf("body %v", b)
	}
}

func TestOpenAIBaseURLWithV1(t *testing.T) {
	e := newOAEnv(t, func(s *OpenAISpec) { s.BaseURL += "/v1/"; s.APIKeyEnv = "" }, okStream)
	if _, _, err := chat(t, e); err != nil {
		t.Fatal(err)
	}
	if e.fake.paths[0] != "/v1/chat/completions" || e.fake.headers[0].Get("Authorization") != "" {
		t.Fatalf("path %s auth %q", e.fake.paths[0], e.fake.headers[0].Get("Authorization"))
	}
}

func TestOpenAIRetryAfter429(t *testing.T) {
	e := newOAEnv(t, nil, failWith(429, "2", `{"error":{"message":"rate limited"}}`), okStream)
	res, _, err := chat(t, e)
	if err != nil || res.Content != "ok" {
		t.Fatalf("%+v %v", res, err)
	}
	if s := e.slept(); len(s) != 1 || s[0] != 2*time.Second {
		t.Fatalf("sleeps %v (want the Retry-After)", s)
	}
	if e.fake.requests() != 2 {
		t.Fatalf("%d requests", e.fake.requests())
	}
}

func TestOpenAIRetryAfter500(t *testing.T) {
	e := newOAEnv(t, nil, failWith(500, "", `oops`), okStream)
	res, _, err := chat(t, e)
	if err != nil || res.Content != "ok" {
		t.Fatalf("%+v %v", res, err)
	}
	// Back-off 500ms with jitter 0: half of it.
	if s := e.slept(); len(s) != 1 || s[0] != 250*time.Millisecond {
		t.Fatalf("sleeps %v", s)
	}
}

func TestOpenAIGivesUp(t *testing.T) {
	e := newOAEnv(t, func(s *OpenAISpec) { s.MaxAttempts = 3 }, failWith(503, "", `{"error":{"message":"overloaded"}}`))
	_, _, err := chat(t, e)
	if err == nil || !strings.Contains(err.Error(), "HTTP 503: overloaded (after 3 attempts)") {
		t.Fatalf("error %v", err)
	}
	if e.fake.requests() != 3 {
		t.Fatalf("%d requests", e.fake.requests())
	}
	if s := e.slept(); len(s) != 2 || s[0] != 250*time.Millisecond || s[1] != 500*time.Millisecond {
		t.Fatalf("sleeps %v (want exponential)", s)
	}
}

func TestOpenAIBackoffJitterBounds(t *testing.T) {
	b, _ := newOpenAIBackend("x", OpenAISpec{Model: "m", RetryBackoff: time.Second, MaxRetryBackoff: 4 * time.Second},
		Options{Jitter: func() float64 { return 0.999 }})
	for attempt, max := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 4 * time.Second} {
		if d := b.backoff(attempt); d < max/2 || d >= max {
			t.Errorf("backoff(%d) = %v, want in [%v, %v)", attempt, d, max/2, max)
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := http.Header{"Retry-After": {now.Add(3 * time.Second).Format(http.TimeFormat)}}
	if d := retryAfter(h, now); d != 3*time.Second {
		t.Fatalf("Retry-After date: %v", d)
	}
}

func TestOpenAIPermanentError(t *testing.T) {
	e := newOAEnv(t, nil, failWith(401, "", `{"error":{"message":"Incorrect API key provided: `+testKey+`"}}`))
	_, _, err := chat(t, e)
	if err == nil || !orchestration.IsPermanent(err) || !strings.Contains(err.Error(), "HTTP 401: Incorrect API key provided: [redacted]") {
		t.Fatalf("error %v", err)
	}
	if e.fake.requests() != 1 {
		t.Fatalf("%d requests", e.fake.requests())
	}
}

func TestOpenAIMissingKey(t *testing.T) {
	e := newOAEnv(t, func(s *OpenAISpec) { s.APIKeyEnv = "NOT_SET_KEY" }, okStream)
	_, _, err := chat(t, e)
	if err == nil || !orchestration.IsPermanent(err) || !strings.Contains(err.Error(), "NOT_SET_KEY") {
		t.Fatalf("error %v", err)
	}
	if e.fake.requests() != 0 {
		t.Fatal("sent a request without the key")
	}
}

func TestOpenAIBrokenStream(t *testing.T) {
	// Output began: the text reached the user, so no retry.
	e := newOAEnv(t, nil, hangUp(content("Hel")), okStream)
	res, c, err := chat(t, e)
	if err == nil || !strings.Contains(err.Error(), "the stream broke after 1 events") {
		t.Fatalf("error %v", err)
	}
	if res.Content != "Hel" || strings.Join(c.texts(), "") != "Hel" || e.fake.requests() != 1 {
		t.Fatalf("result %+v, %d requests", res, e.fake.requests())
	}
}

func TestOpenAIBrokenBeforeOutput(t *testing.T) {
	// Only a role delta, then the cut: nothing was shown, so retry.
	e := newOAEnv(t, nil, hangUp(ev(`{"choices":[{"delta":{"role":"assistant"}}]}`)), okStream)
	res, _, err := chat(t, e)
	if err != nil || res.Content != "ok" || e.fake.requests() != 2 {
		t.Fatalf("%+v %v, %d requests", res, err, e.fake.requests())
	}
}

func TestOpenAIStreamEnds(t *testing.T) {
	// A server that finishes but omits [DONE] is fine...
	e := newOAEnv(t, nil, func(w http.ResponseWriter, _ *http.Request) { sse(w, content("a"), stopEv) })
	if res, _, err := chat(t, e); err != nil || res.Content != "a" {
		t.Fatalf("%+v %v", res, err)
	}
	// ...one that stops without finishing is not.
	e = newOAEnv(t, nil, func(w http.ResponseWriter, _ *http.Request) { sse(w, content("a")) })
	if _, _, err := chat(t, e); err == nil || !strings.Contains(err.Error(), "ended before the answer was complete") {
		t.Fatalf("error %v", err)
	}
	// An error event mid-stream.
	e = newOAEnv(t, nil, func(w http.ResponseWriter, _ *http.Request) {
		sse(w, content("a"), ev(`{"error":{"message":"upstream overloaded"}}`))
	})
	if _, _, err := chat(t, e); err == nil || !strings.Contains(err.Error(), "mid-stream: upstream overloaded") {
		t.Fatalf("error %v", err)
	}
	// Garbage.
	e = newOAEnv(t, nil, func(w http.ResponseWriter, _ *http.Request) { sse(w, ev(`{not json`)) })
	if _, _, err := chat(t, e); err == nil || !strings.Contains(err.Error(), "malformed stream event") {
		t.Fatalf("error %v", err)
	}
}

func TestOpenAIStall(t *testing.T) {
	var e *oaEnv
	e = newOAEnv(t, func(s *OpenAISpec) { s.IdleTimeout = 300 * time.Millisecond; s.MaxAttempts = 1 },
		func(w http.ResponseWriter, r *http.Request) {
			sse(w, content("Hel"))
			select {
			case <-r.Context().Done():
			case <-e.fake.stop:
			}
		})
	start := time.Now()
	_, _, err := chat(t, e)
	if err == nil || !strings.Contains(err.Error(), "the stream stalled") {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestOpenAITimeout(t *testing.T) {
	var e *oaEnv
	e = newOAEnv(t, func(s *OpenAISpec) { s.Timeout = 300 * time.Millisecond },
		func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-e.fake.stop:
			}
		})
	_, _, err := chat(t, e)
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("error %v", err)
	}
}

func TestOpenAIToolCalls(t *testing.T) {
	e := newOAEnv(t, func(s *OpenAISpec) { s.Tools = true }, func(w http.ResponseWriter, _ *http.Request) {
		sse(w,
			ev(`{"choices":[{"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"file_read","arguments":""}}]}}]}`),
			ev(`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"file_"}}]}}]}`),
			ev(`{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"bash_command","arguments":"{\"command\":\"ls\"}"}}]}}]}`),
			ev(`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"path\":\"a.txt\"}"}}]}}]}`),
			ev(`{"choices":[{"delta":{"tool_calls":[{"index":2,"id":"call_3","function":{"name":"web_fetch","arguments":"{oops"}}]}}]}`),
			ev(`{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}`), doneEv)
	})
	res, _, err := chat(t, e)
	if err != nil {
		t.Fatal(err)
	}
	tc := res.ToolCalls
	if res.FinishReason != "tool_calls" || len(tc) != 3 ||
		tc[0].ID != "call_1" || tc[0].ToolName != "read_file" || tc[0].Parameters["file_path"] != "a.txt" ||
		tc[1].ID != "call_2" || tc[1].ToolName != "bash" || tc[1].Parameters["command"] != "ls" ||
		tc[2].ToolName != "web_fetch" || tc[2].Parameters["_invalidArguments"] != "{oops" ||
		*tc[0].SessionID != "s1" || *tc[0].AgentID != "gpt" {
		t.Fatalf("tool calls %+v", tc)
	}
	// The tools were offered, as JSON-schema functions.
	toolsSent := e.fake.body(0)["tools"].([]any)
	names := []string{}
	for _, x := range toolsSent {
		f := x.(map[string]any)["function"].(map[string]any)
		names = append(names, f["name"].(string))
		if f["name"] == "grep" {
			fe := f["parameters"].(map[string]any)["properties"].(map[string]any)["file_extensions"].(map[string]any)
			if fe["items"] == nil {
				t.Fatalf("array without items: %v", fe)
			}
		}
	}
	if strings.Join(names, ",") != "read_file,write_file,list_files,grep,bash" {
		t.Fatalf("tools %v", names)
	}

	// The follow-up turn carries the calls and their results.
	c := &collector{}
	_, err = e.agent.Chat(context.Background(), Request{Messages: []Message{
		{Role: contract.MessageRoleUser, Content: "read a.txt"},
		{Role: contract.MessageRoleAssistant, ToolCalls: tc[:1]},
		{Role: contract.MessageRoleTool, Content: "hello", ToolCallID: "call_1"}}}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	msgs := e.fake.body(1)["messages"].([]any)
	asst, tool := msgs[2].(map[string]any), msgs[3].(map[string]any)
	call := asst["tool_calls"].([]any)[0].(map[string]any)
	if asst["content"] != nil || call["id"] != "call_1" || call["type"] != "function" ||
		call["function"].(map[string]any)["arguments"] != `{"file_path":"a.txt"}` ||
		tool["role"] != "tool" || tool["tool_call_id"] != "call_1" || tool["content"] != "hello" {
		t.Fatalf("messages %v", msgs)
	}
}

func TestOpenAIAsPlanStep(t *testing.T) {
	e := newOAEnv(t, nil, okStream)
	var chunks []string
	res, err := e.agent.Run(context.Background(), orchestration.AgentRequest{AgentID: "gpt", Task: "t", Goal: "g"},
		func(s string) { chunks = append(chunks, s) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Output != "ok" || strings.Join(chunks, "") != "ok" || res.OutputData["finishReason"] != "stop" ||
		res.OutputData["usage"].(contract.TokenUsage).TotalTokens != 13 {
		t.Fatalf("result %+v", res)
	}
	if _, err := json.Marshal(res.OutputData); err != nil {
		t.Fatal(err)
	}
}

func TestOpenAICancelled(t *testing.T) {
	var e *oaEnv
	e = newOAEnv(t, nil, func(w http.ResponseWriter, r *http.Request) {
		sse(w, content("a"))
		select {
		case <-r.Context().Done():
		case <-e.fake.stop:
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{on: func(Chunk) { cancel() }}
	_, err := e.agent.Chat(ctx, Request{Messages: []Message{{Content: "x"}}}, c.emit)
	if err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("error %v", err)
	}
	if e.fake.requests() != 1 {
		t.Fatalf("%d requests", e.fake.requests())
	}
}

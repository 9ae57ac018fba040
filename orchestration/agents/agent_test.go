package agents

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

func TestDedup(t *testing.T) {
	cases := []struct {
		name   string
		in     []string
		emit   string // emitted chunks joined with |
		result string
	}{
		{"plain", []string{"a", "b"}, "a|b", "ab"},
		{"final repeat dropped", []string{"Hel", "lo", "Hello"}, "Hel|lo", "Hello"},
		{"single chunk kept", []string{"Hello"}, "Hello", "Hello"},
		{"repeat in the middle kept", []string{"ab", "ab", "c"}, "ab|ab|c", "ababc"},
		{"partial repeat kept", []string{"Hel", "lo", "Hell"}, "Hel|lo|Hell", "HelloHell"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := &dedup{}
			var out []string
			for _, s := range c.in {
				out = append(out, d.push(s)...)
			}
			if got := strings.Join(out, "|"); got != c.emit {
				t.Fatalf("emitted %q, want %q", got, c.emit)
			}
			if got := d.text(); got != c.result {
				t.Fatalf("text %q, want %q", got, c.result)
			}
		})
	}
}

// fakeBackend streams fixed chunks, optionally blocking until released.
type fakeBackend struct {
	chunks  []Chunk
	running atomic.Int32
	peak    atomic.Int32
	release chan struct{}
	mu      sync.Mutex
	last    Request
}

func (f *fakeBackend) Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error) {
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	f.mu.Lock()
	f.last = req
	f.mu.Unlock()
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return Result{}, ctx.Err()
		}
	}
	for _, c := range f.chunks {
		emit(c)
	}
	return Result{Content: "ignored", FinishReason: "stop"}, nil
}

func TestAgentChatDedupAndPrompt(t *testing.T) {
	fb := &fakeBackend{chunks: []Chunk{{Content: "Hi "}, {Kind: ChunkThinking, Content: "hm"}, {Content: "there"}, {Content: ""}, {Content: "Hi there"}}}
	a := NewAgent(contract.AgentInfo{ID: "x"}, "fake", "sys", fb, 0, nil, nil)
	c := &collector{}
	res, err := a.Chat(context.Background(), Request{Messages: []Message{{Content: "q"}}}, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	if res.Content != "Hi there" || strings.Join(c.texts(), "|") != "Hi |there" || len(c.chunks) != 3 {
		t.Fatalf("%+v %+v", res, c.chunks)
	}
	if fb.last.AgentID != "x" || len(fb.last.Messages) != 2 || fb.last.Messages[0].Role != contract.MessageRoleSystem ||
		fb.last.Messages[0].Content != "sys" {
		t.Fatalf("request %+v", fb.last)
	}
}

func TestAgentConcurrencyLimit(t *testing.T) {
	fb := &fakeBackend{release: make(chan struct{})}
	a := NewAgent(contract.AgentInfo{ID: "x"}, "fake", "", fb, 2, nil, nil)
	done := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := a.Chat(context.Background(), Request{}, nil)
			done <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for fb.running.Load() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("calls did not start")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A waiting call gives up with its context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Chat(ctx, Request{}, nil); err == nil || !strings.Contains(err.Error(), "free slot") {
		t.Fatalf("error %v", err)
	}
	close(fb.release)
	for range 5 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if p := fb.peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d", p)
	}
}

func TestStepPrompt(t *testing.T) {
	got := StepPrompt(orchestration.AgentRequest{Goal: "ship", Task: "test it", AvailableAgents: []string{"a", "b"},
		Input:           contract.Map{"goal": "ship", "previousOutputs": "x", "extra": 1},
		PreviousOutputs: map[string]string{"10": "ten", "2": "two"}})
	want := "Goal: ship\n\nYour task: test it\n\nAgents available to the plan: a, b\n\nInput: {\"extra\":1}\n" +
		"\nOutputs of the steps this one depends on:\n\n[Step 2]\ntwo\n\n[Step 10]\nten\n"
	if got != want {
		t.Fatalf("prompt\n%q\nwant\n%q", got, want)
	}
}

func TestMessagesFromHistory(t *testing.T) {
	got := MessagesFromHistory([]contract.AgentMessage{{Role: contract.MessageRoleUser, Content: "a"}, {Content: ""},
		{Role: contract.MessageRoleAssistant, Content: "b"}})
	if len(got) != 2 || got[1].Role != contract.MessageRoleAssistant || got[1].Content != "b" {
		t.Fatalf("%+v", got)
	}
}

func TestScriptedChat(t *testing.T) {
	c, err := Parse([]byte("agents:\n- id: demo\n  kind: scripted\n  scripted:\n    chunks: 3"), quietOpts(t))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Agent("demo")
	col := &collector{}
	res, err := a.Chat(context.Background(), Request{AgentID: "demo", Messages: []Message{
		{Role: contract.MessageRoleUser, Content: "first"}, {Role: contract.MessageRoleAssistant, Content: "x"},
		{Role: contract.MessageRoleUser, Content: "hello"}}}, col.emit)
	if err != nil || res.Content != "demo: hello" || len(col.texts()) != 3 {
		t.Fatalf("%+v %v %q", res, err, col.texts())
	}
}

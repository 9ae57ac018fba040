package agents

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// shAgent builds a command agent that runs a /bin/sh script (run as an
// argument of /bin/sh, so no freshly written file is exec'd: that races
// with fork in other goroutines, ETXTBSY).
func shAgent(t *testing.T, script string, mut func(*CommandSpec), env map[string]string) (*Agent, string) {
	t.Helper()
	opts := quietOpts(t)
	opts.LookupEnv = func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		if k == "PATH" {
			return os.LookupEnv(k)
		}
		return "", false
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sh")
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := CommandSpec{Path: "/bin/sh", Args: []string{path}, Timeout: 20 * time.Second}
	if mut != nil {
		mut(&spec)
	}
	b, err := newCommandBackend("cli", spec, "", opts)
	if err != nil {
		t.Fatal(err)
	}
	info := contract.AgentInfo{ID: "cli", Name: "cli"}
	return NewAgent(info, KindCommand, "be brief", b, 4, opts.Logger, nil), opts.SandboxRoot
}

// collector records chunks; safe for use from the backend's goroutine.
type collector struct {
	mu     sync.Mutex
	chunks []Chunk
	on     func(Chunk)
}

func (c *collector) emit(ch Chunk) {
	c.mu.Lock()
	c.chunks = append(c.chunks, ch)
	on := c.on
	c.mu.Unlock()
	if on != nil {
		on(ch)
	}
}

func (c *collector) texts() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, ch := range c.chunks {
		if ch.Kind == ChunkText {
			out = append(out, ch.Content)
		}
	}
	return out
}

func userTurn(content string) Request {
	return Request{SessionID: "s1", Messages: []Message{
		{Role: contract.MessageRoleUser, Content: "earlier"},
		{Role: contract.MessageRoleAssistant, Content: "reply"},
		{Role: contract.MessageRoleUser, Content: content}}}
}

// processGone reports whether pid no longer runs (absent or a zombie).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && len(s) > i+2 && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func waitProcessesGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for !processGone(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				t.Fatalf("process %d still runs", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// readPids polls for a file of pids written by a script.
func readPids(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				pids = append(pids, p)
			}
		}
		if len(pids) >= n {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pids in %s", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCommandStreamsLines(t *testing.T) {
	// The script echoes its stdin, then waits for a file the test creates
	// on the first chunk: the chunk must arrive while the program runs.
	a, root := shAgent(t, `while IFS= read -r line; do echo "got $line"; done
echo first
while [ ! -f release ]; do sleep 0.02; done
echo second
`, nil, nil)
	c := &collector{}
	c.on = func(ch Chunk) {
		if ch.Content == "first\n" {
			_ = os.WriteFile(filepath.Join(root, "sess", "release"), nil, 0o644)
		}
	}
	req := userTurn("hello")
	req.WorkingDirectory = "sess"
	res, err := a.Chat(context.Background(), req, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	got := c.texts()
	want := []string{
		`got {"role":"system","content":"be brief"}` + "\n",
		`got {"role":"user","content":"earlier"}` + "\n",
		`got {"role":"assistant","content":"reply"}` + "\n",
		`got {"role":"user","content":"hello"}` + "\n",
		"first\n", "second\n"}
	if strings.Join(got, "") != strings.Join(want, "") || len(got) != len(want) {
		t.Fatalf("chunks %q", got)
	}
	if res.Content != strings.Join(want, "") || res.FinishReason != "stop" {
		t.Fatalf("result %+v", res)
	}
}

func TestCommandHistoryLimitAndWorkingDirectory(t *testing.T) {
	a, root := shAgent(t, `cat >/dev/null; pwd`, func(s *CommandSpec) { s.HistoryMessages = 1 }, nil)
	res, err := a.Chat(context.Background(), Request{WorkingDirectory: "a/b", Messages: []Message{{Content: "x"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	real, _ := filepath.EvalSymlinks(root)
	if res.Content != filepath.Join(real, "a", "b")+"\n" {
		t.Fatalf("pwd %q", res.Content)
	}
	_, err = a.Chat(context.Background(), Request{WorkingDirectory: "../"}, nil)
	if err == nil || !strings.Contains(err.Error(), "access denied") || !orchestration.IsPermanent(err) {
		t.Fatalf("escape: %v", err)
	}
	// Only the last message (and the system prompt) reach stdin.
	b, _ := newCommandBackend("x", CommandSpec{Path: "/bin/cat", HistoryMessages: 1}, "", quietOpts(t))
	conv := b.conversation([]Message{{Role: contract.MessageRoleSystem, Content: "s"}, {Content: "1"}, {Content: "2"}})
	if len(conv) != 2 || conv[0].Role != "system" || conv[1].Content != "2" {
		t.Fatalf("conversation %+v", conv)
	}
}

func TestCommandEnvAllowList(t *testing.T) {
	a, _ := shAgent(t, `echo "[$SECRET_X][$ALLOWED_X][$FIXED][$HOME]"`, func(s *CommandSpec) {
		s.Env = []string{"ALLOWED_X"}
		s.SetEnv = map[string]string{"FIXED": "f"}
	}, map[string]string{"SECRET_X": "s3cret", "ALLOWED_X": "a", "HOME": "/home/x"})
	res, err := a.Chat(context.Background(), userTurn("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Content != "[][a][f][/home/x]\n" {
		t.Fatalf("env %q", res.Content)
	}
}

func TestCommandJSONL(t *testing.T) {
	// Text in pieces, thinking, a banner line, a final chunk repeating the
	// whole text (dropped), a tool call, usage and done — then the program
	// lingers and is killed after DoneGrace.
	a, root := shAgent(t, `cat >/dev/null
echo $$ > pid
echo 'starting up'
echo '{"type":"text","content":"Hel"}'
echo '{"type":"thinking","content":"hmm"}'
echo '{"type":"text","content":"lo"}'
printf '%s\n' '{"type":"text","content":"starting up\nHello"}'
echo '{"type":"tool_call","toolCalls":[{"id":"t1","name":"file_read","input":{"file_path":"a.txt"}},{"name":"custom","parameters":{"x":1}}]}'
echo '{"type":"status","done":true,"usage":{"inputTokens":3,"outputTokens":2}}'
sleep 100
`, func(s *CommandSpec) { s.Format = FormatJSONL; s.DoneGrace = 200 * time.Millisecond }, nil)
	c := &collector{}
	start := time.Now()
	req := userTurn("x")
	req.WorkingDirectory = "w"
	req.AgentID = "cli"
	res, err := a.Chat(context.Background(), req, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
	if got := strings.Join(c.texts(), "|"); got != "starting up\n|Hel|lo" {
		t.Fatalf("texts %q", got)
	}
	if res.Content != "starting up\nHello" {
		t.Fatalf("content %q", res.Content)
	}
	if c.chunks[2].Kind != ChunkThinking || c.chunks[2].Content != "hmm" {
		t.Fatalf("chunks %+v", c.chunks)
	}
	if res.Usage != (contract.TokenUsage{InputTokens: 3, OutputTokens: 2, TotalTokens: 5}) {
		t.Fatalf("usage %+v", res.Usage)
	}
	if len(res.ToolCalls) != 2 || res.ToolCalls[0].ID != "t1" || res.ToolCalls[0].ToolName != "read_file" ||
		res.ToolCalls[0].Parameters["file_path"] != "a.txt" || *res.ToolCalls[0].AgentID != "cli" ||
		res.ToolCalls[1].ToolName != "custom" || res.ToolCalls[1].ID == "" {
		t.Fatalf("tool calls %+v", res.ToolCalls)
	}
	waitProcessesGone(t, readPids(t, filepath.Join(root, "w", "pid"), 1))
}

func TestCommandJSONLError(t *testing.T) {
	a, _ := shAgent(t, `echo '{"type":"text","content":"partial"}'
echo '{"type":"error","content":"model overloaded"}'
`, func(s *CommandSpec) { s.Format = FormatJSONL }, nil)
	res, err := a.Chat(context.Background(), userTurn("x"), nil)
	if err == nil || !strings.Contains(err.Error(), "the command reported an error: model overloaded") {
		t.Fatalf("error %v", err)
	}
	if res.Content != "partial" {
		t.Fatalf("content %q", res.Content)
	}
}

func TestCommandTimeoutKillsGroup(t *testing.T) {
	a, root := shAgent(t, `echo $$ > pid; sleep 100 & echo $! >> pid; echo started; wait`,
		func(s *CommandSpec) { s.Timeout = 500 * time.Millisecond }, nil)
	start := time.Now()
	req := userTurn("x")
	req.WorkingDirectory = "w"
	res, err := a.Chat(context.Background(), req, nil)
	if err == nil || !strings.Contains(err.Error(), "timed out after 500ms") {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("took %v", d)
	}
	if res.Content != "started\n" {
		t.Fatalf("content %q", res.Content)
	}
	waitProcessesGone(t, readPids(t, filepath.Join(root, "w", "pid"), 2))
}

func TestCommandCrash(t *testing.T) {
	a, _ := shAgent(t, `echo partial; echo "fatal: boom" >&2; exit 7`, nil, nil)
	res, err := a.Chat(context.Background(), userTurn("x"), nil)
	if err == nil || !strings.Contains(err.Error(), "agent cli: command exited with code 7: fatal: boom") {
		t.Fatalf("error %v", err)
	}
	if orchestration.IsPermanent(err) {
		t.Fatal("a crash is worth a retry")
	}
	if res.Content != "partial\n" {
		t.Fatalf("content %q", res.Content)
	}
	// Killed by a signal.
	a, _ = shAgent(t, `kill -9 $$`, nil, nil)
	if _, err := a.Chat(context.Background(), userTurn("x"), nil); err == nil || !strings.Contains(err.Error(), "crashed") {
		t.Fatalf("error %v", err)
	}
	// A missing executable is permanent.
	b, _ := newCommandBackend("x", CommandSpec{Path: "no-such-agent-binary"}, "", quietOpts(t))
	if _, err := b.Chat(context.Background(), Request{}, func(Chunk) {}); err == nil || !orchestration.IsPermanent(err) {
		t.Fatalf("error %v", err)
	}
}

func TestCommandCancellation(t *testing.T) {
	a, root := shAgent(t, `echo $$ > pid; sleep 100 & echo $! >> pid; echo started; wait`, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := &collector{on: func(Chunk) { cancel() }}
	req := userTurn("x")
	req.WorkingDirectory = "w"
	done := make(chan error, 1)
	go func() {
		_, err := a.Chat(ctx, req, c.emit)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "cancelled") {
			t.Fatalf("error %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Chat did not return after cancel")
	}
	waitProcessesGone(t, readPids(t, filepath.Join(root, "w", "pid"), 2))
}

func TestCommandOutputCap(t *testing.T) {
	a, _ := shAgent(t, `i=0; while [ $i -lt 1000 ]; do echo 0123456789; i=$((i+1)); done`,
		func(s *CommandSpec) { s.MaxOutputBytes = 100 }, nil)
	res, err := a.Chat(context.Background(), userTurn("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("0123456789\n", 9) + "\n[output truncated at 100 bytes]"
	if res.Content != want || res.FinishReason != "length" {
		t.Fatalf("content %q %q", res.Content, res.FinishReason)
	}
}

func TestCommandAsPlanStep(t *testing.T) {
	// Run (the engine's interface) sends StepPrompt as the user message.
	a, _ := shAgent(t, `tail -n 1`, nil, nil)
	req := orchestration.AgentRequest{AgentID: "cli", Task: "summarise", Goal: "ship it",
		PreviousOutputs: map[string]string{"2": "two", "1": "one"}}
	var chunks []string
	res, err := a.Run(context.Background(), req, func(s string) { chunks = append(chunks, s) })
	if err != nil {
		t.Fatal(err)
	}
	var m wireMessage
	if err := json.Unmarshal([]byte(res.Output), &m); err != nil {
		t.Fatalf("output %q: %v", res.Output, err)
	}
	if m.Role != "user" || m.Content != StepPrompt(req) || strings.Join(chunks, "") != res.Output {
		t.Fatalf("message %+v", m)
	}
	if res.OutputData["kind"] != KindCommand {
		t.Fatalf("outputData %v", res.OutputData)
	}
}

// TestRunCarriesTheConversation: an agent message job (SendAgentMessage)
// hands the agent the recent conversation, not a plan-step prompt.
func TestRunCarriesTheConversation(t *testing.T) {
	a, _ := shAgent(t, `while IFS= read -r line; do echo "got $line"; done
`, nil, nil)
	var out strings.Builder
	_, err := a.Run(context.Background(), orchestration.AgentRequest{
		AgentID: "cli", SessionID: "s1", MessageID: "m2",
		Messages: []contract.AgentMessage{
			{Role: contract.MessageRoleUser, Content: "first question"},
			{Role: contract.MessageRoleAssistant, Content: "first answer"},
			{Role: contract.MessageRoleUser, Content: "second question"},
		},
	}, func(chunk string) { out.WriteString(chunk) })
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"content":"first question"`, `"content":"first answer"`, `"role":"user","content":"second question"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("agent input lacks %s:\n%s", want, out.String())
		}
	}
}

// TestRunWorksInTheSessionDirectory: the engine's calls (plan steps and
// conversation turns) run a command agent in the session's working
// directory under the sandbox root; a directory that escapes the root —
// by "..", as an absolute path elsewhere, or through a symbolic link — is
// refused for good, and nothing runs.
func TestRunWorksInTheSessionDirectory(t *testing.T) {
	a, root := shAgent(t, `cat >/dev/null; pwd; touch ran`, nil, nil)
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	step := orchestration.AgentRequest{AgentID: "cli", SessionID: "s1", PlanID: "p1", StepOrder: 1, Attempt: 1,
		Task: "where are you", WorkingDirectory: "projects/s1"}
	turn := orchestration.AgentRequest{AgentID: "cli", SessionID: "s1", MessageID: "m1", Attempt: 1,
		Task: "where are you", WorkingDirectory: "projects/s1",
		Messages: []contract.AgentMessage{{Role: contract.MessageRoleUser, Content: "where are you"}}}
	for name, req := range map[string]orchestration.AgentRequest{"step": step, "turn": turn} {
		res, err := a.Run(context.Background(), req, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := filepath.Join(real, "projects", "s1") + "\n"; res.Output != want {
			t.Fatalf("%s ran in %q, want %q", name, res.Output, want)
		}
	}

	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"../escape", "projects/../../escape", outside, "link", "link/sub"} {
		req := step
		req.WorkingDirectory = dir
		_, err := a.Run(context.Background(), req, nil)
		if err == nil || !strings.Contains(err.Error(), "access denied") || !orchestration.IsPermanent(err) {
			t.Fatalf("working directory %q: %v", dir, err)
		}
	}
	if entries, _ := os.ReadDir(outside); len(entries) != 0 {
		t.Fatalf("the agent ran outside the root: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(real), "escape")); err == nil {
		t.Fatal("a directory was created outside the root")
	}
}

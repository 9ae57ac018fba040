package agents

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// Command output formats.
const (
	FormatText  = "text"
	FormatJSONL = "jsonl"
)

// CommandSpec configures a command agent: a program run once per message,
// with the conversation on stdin as JSON lines {"role", "content"} (role
// in lower case: system, user, assistant, tool) and its answer on stdout.
type CommandSpec struct {
	// Path is the executable (looked up on PATH when it has no slash)
	// (required).
	Path string   `yaml:"path"`
	Args []string `yaml:"args"`
	// Env names the variables of the node's environment the program
	// inherits, besides PATH, HOME, LANG, LC_ALL, TZ and TMPDIR (always
	// passed). Nothing else is inherited: the node's secrets stay put
	// unless named here.
	Env []string `yaml:"env"`
	// SetEnv sets literal variables (not secrets: a secret-looking entry
	// is refused; inherit secrets with Env).
	SetEnv map[string]string `yaml:"setEnv"`
	// Format is text (each stdout line is a chunk) or jsonl (each line is
	// {"type": "text"|"thinking"|"error"|…, "content", "done", "usage":
	// {"inputTokens", "outputTokens", "totalTokens"}, "toolCalls": [{"id",
	// "name", "input"}]}; "done": true ends the answer) (text).
	Format string `yaml:"format"`
	// Timeout bounds one message (5m); the whole process group is killed.
	Timeout time.Duration `yaml:"timeout"`
	// MaxOutputBytes caps stdout per message (1 MiB); beyond it the process
	// group is killed and the answer ends with a truncation marker.
	MaxOutputBytes int `yaml:"maxOutputBytes"`
	// HistoryMessages is how many of the latest conversation messages go on
	// stdin (50); the system prompt always does.
	HistoryMessages int `yaml:"historyMessages"`
	// DoneGrace is how long the program may keep running after "done"
	// before it is killed (2s).
	DoneGrace time.Duration `yaml:"doneGrace"`
}

func (c CommandSpec) withDefaults() CommandSpec {
	if c.Format == "" {
		c.Format = FormatText
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 1 << 20
	}
	if c.HistoryMessages <= 0 {
		c.HistoryMessages = 50
	}
	if c.DoneGrace <= 0 {
		c.DoneGrace = 2 * time.Second
	}
	return c
}

// alwaysInherited are passed to every command: not secrets, and most
// programs misbehave without them.
func alwaysInherited() []string { return []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"} }

// stderrTail is how much of stderr is kept for error messages.
const stderrTail = 4 << 10

type commandBackend struct {
	id     string
	cfg    CommandSpec
	defDir string // the agent's own working directory, relative to the root
	opts   Options
}

func newCommandBackend(id string, c CommandSpec, workingDir string, opts Options) (*commandBackend, error) {
	c = c.withDefaults()
	opts = opts.withDefaults()
	if strings.TrimSpace(c.Path) == "" {
		return nil, field("command.path", "required")
	}
	if c.Format != FormatText && c.Format != FormatJSONL {
		return nil, field("command.format", "%q is not text or jsonl", c.Format)
	}
	if opts.SandboxRoot == "" {
		return nil, field("command", "command agents need a sandbox root (the tools' root) to run in")
	}
	for k := range c.SetEnv {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, field("command.setEnv", "invalid variable name %q", k)
		}
	}
	for _, k := range c.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, field("command.env", "invalid variable name %q", k)
		}
	}
	return &commandBackend{id: id, cfg: c, defDir: workingDir, opts: opts}, nil
}

func (b *commandBackend) env() []string {
	var env []string
	seen := map[string]bool{}
	for _, k := range append(alwaysInherited(), b.cfg.Env...) {
		if seen[k] {
			continue
		}
		seen[k] = true
		if v, ok := b.opts.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	for k, v := range b.cfg.SetEnv {
		env = append(env, k+"="+v)
	}
	return env
}

// wireMessage is one stdin line.
type wireMessage struct {
	Role       string              `json:"role"`
	Content    string              `json:"content"`
	ToolCallID string              `json:"toolCallId,omitempty"`
	ToolCalls  []contract.ToolCall `json:"toolCalls,omitempty"`
}

func roleName(r contract.MessageRole) string { return strings.ToLower(r.String()) }

// jsonLine is one stdout line in jsonl format.
type jsonLine struct {
	Type    string `json:"type"`
	Content string `json:"content"`
	Done    bool   `json:"done"`
	Usage   *struct {
		InputTokens  int `json:"inputTokens"`
		OutputTokens int `json:"outputTokens"`
		TotalTokens  int `json:"totalTokens"`
	} `json:"usage"`
	ToolCalls []struct {
		ID         string         `json:"id"`
		Name       string         `json:"name"`
		ToolName   string         `json:"toolName"`
		Input      map[string]any `json:"input"`
		Parameters map[string]any `json:"parameters"`
	} `json:"toolCalls"`
}

// tailWriter keeps the last max bytes written.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(strings.ToValidUTF8(string(w.buf), ""))
}

func killGroup(pid int) {
	// ESRCH (already gone) is the common, harmless case.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}

// Chat runs the program once for the turn.
func (b *commandBackend) Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error) {
	path, err := exec.LookPath(b.cfg.Path)
	if err != nil {
		return Result{}, permanent(fmt.Errorf("agent %s: command %q: %w", b.id, b.cfg.Path, err))
	}
	wd := req.WorkingDirectory
	if wd == "" {
		wd = b.defDir
	}
	dir, err := tools.ConfineDir(b.opts.SandboxRoot, wd)
	if err != nil {
		return Result{}, permanent(fmt.Errorf("agent %s: working directory: %w", b.id, err))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, fmt.Errorf("agent %s: create working directory: %w", b.id, err)
	}

	runCtx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, path, b.cfg.Args...)
	cmd.Dir = dir
	cmd.Env = b.env()
	// Own process group: a timeout or cancellation kills the program and
	// everything it started.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { killGroup(cmd.Process.Pid); return nil }
	cmd.WaitDelay = time.Second
	stderr := &tailWriter{max: stderrTail}
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Result{}, fmt.Errorf("agent %s: stdin: %w", b.id, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return Result{}, fmt.Errorf("agent %s: stdout: %w", b.id, err)
	}
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("agent %s: start %s: %w", b.id, b.cfg.Path, err)
	}
	pid := cmd.Process.Pid
	defer killGroup(pid) // nothing the program started outlives the turn

	go func() {
		// A program that does not read stdin makes this fail with EPIPE:
		// that is its business, not an error of the turn.
		defer stdin.Close()
		enc := json.NewEncoder(stdin)
		for _, m := range b.conversation(req.Messages) {
			if enc.Encode(m) != nil {
				return
			}
		}
	}()

	res, protoErr, early := b.read(stdout, req, emit)
	// Stop waiting for a program that said done (or overflowed) but keeps
	// running.
	if early {
		grace := time.AfterFunc(b.cfg.DoneGrace, func() { killGroup(pid) })
		defer grace.Stop()
	}
	waitErr := cmd.Wait()

	switch {
	case errors.Is(runCtx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
		return res, fmt.Errorf("agent %s: command timed out after %s (process group killed)%s", b.id, b.cfg.Timeout, tailSuffix(stderr))
	case ctx.Err() != nil:
		return res, fmt.Errorf("agent %s: command cancelled (process group killed): %w", b.id, ctx.Err())
	case protoErr != nil:
		return res, protoErr
	case early:
		return res, nil // the answer was complete; how the program ended does not matter
	case waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay):
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		if code >= 0 {
			return res, fmt.Errorf("agent %s: command exited with code %d%s", b.id, code, tailSuffix(stderr))
		}
		return res, fmt.Errorf("agent %s: command crashed (%v)%s", b.id, waitErr, tailSuffix(stderr))
	}
	return res, nil
}

func tailSuffix(w *tailWriter) string {
	if s := w.String(); s != "" {
		if len(s) > 1000 {
			s = "…" + s[len(s)-1000:]
		}
		return ": " + s
	}
	return ""
}

// conversation is what goes on stdin: the system prompt(s) and the latest
// HistoryMessages others.
func (b *commandBackend) conversation(msgs []Message) []wireMessage {
	var sys, rest []Message
	for _, m := range msgs {
		if m.Role == contract.MessageRoleSystem {
			sys = append(sys, m)
		} else {
			rest = append(rest, m)
		}
	}
	if len(rest) > b.cfg.HistoryMessages {
		rest = rest[len(rest)-b.cfg.HistoryMessages:]
	}
	out := make([]wireMessage, 0, len(sys)+len(rest))
	for _, m := range append(sys, rest...) {
		out = append(out, wireMessage{Role: roleName(m.Role), Content: m.Content, ToolCallID: m.ToolCallID, ToolCalls: m.ToolCalls})
	}
	return out
}

// read consumes stdout. early is set when reading stopped before EOF
// (done, or the output cap); protoErr is an error reported by the program
// in jsonl.
func (b *commandBackend) read(stdout io.Reader, req Request, emit func(Chunk)) (res Result, protoErr error, early bool) {
	r := bufio.NewReaderSize(stdout, 64<<10)
	total := 0
	var partial []byte // a jsonl line longer than the buffer
	for {
		line, err := r.ReadSlice('\n')
		total += len(line)
		if total > b.cfg.MaxOutputBytes {
			emit(Chunk{Content: fmt.Sprintf("\n[output truncated at %d bytes]", b.cfg.MaxOutputBytes)})
			res.FinishReason = "length"
			return res, nil, true
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if b.cfg.Format == FormatText {
				emit(Chunk{Content: string(line)}) // stream long lines in pieces
			} else {
				partial = append(partial, line...)
			}
			continue
		}
		if len(line) > 0 {
			if partial != nil {
				line = append(partial, line...)
				partial = nil
			}
			if b.cfg.Format == FormatText {
				emit(Chunk{Content: string(line)})
			} else if done, perr := b.jsonl(line, req, &res, emit); perr != nil {
				return res, perr, true
			} else if done {
				if res.FinishReason == "" {
					res.FinishReason = "stop"
				}
				return res, nil, true
			}
		}
		if err != nil {
			// EOF, or the pipe closed because the process died: Wait says
			// which.
			if res.FinishReason == "" {
				res.FinishReason = "stop"
			}
			return res, nil, false
		}
	}
}

// jsonl handles one line of jsonl output. Lines that are not JSON objects
// are passed on as text (programs print banners and warnings).
func (b *commandBackend) jsonl(line []byte, req Request, res *Result, emit func(Chunk)) (done bool, err error) {
	trimmed := strings.TrimSpace(string(line))
	if trimmed == "" {
		return false, nil
	}
	var l jsonLine
	if !strings.HasPrefix(trimmed, "{") || json.Unmarshal([]byte(trimmed), &l) != nil {
		emit(Chunk{Content: string(line)})
		return false, nil
	}
	switch strings.ToLower(l.Type) {
	case "", "text", "message", "content":
		emit(Chunk{Content: l.Content})
	case "thinking", "reasoning":
		emit(Chunk{Kind: ChunkThinking, Content: l.Content})
	case "error":
		msg := l.Content
		if msg == "" {
			msg = "unspecified error"
		}
		return true, fmt.Errorf("agent %s: the command reported an error: %s", b.id, msg)
	}
	if l.Usage != nil {
		res.Usage = contract.TokenUsage{InputTokens: l.Usage.InputTokens, OutputTokens: l.Usage.OutputTokens, TotalTokens: l.Usage.TotalTokens}
		if res.Usage.TotalTokens == 0 {
			res.Usage.TotalTokens = res.Usage.InputTokens + res.Usage.OutputTokens
		}
	}
	for _, tc := range l.ToolCalls {
		name := tc.Name
		if name == "" {
			name = tc.ToolName
		}
		params := tc.Input
		if params == nil {
			params = tc.Parameters
		}
		res.ToolCalls = append(res.ToolCalls, newToolCall(tc.ID, name, params, req, b.opts.Now()))
	}
	return l.Done, nil
}

// newToolCall builds a ToolCall with the name mapped onto our canonical
// tool names when it is one of them (or an alias).
func newToolCall(id, name string, params map[string]any, req Request, now time.Time) contract.ToolCall {
	if c, ok := tools.CanonicalName(name); ok {
		name = c
	}
	if id == "" {
		id = uuid.NewString()
	}
	if params == nil {
		params = map[string]any{}
	}
	tc := contract.ToolCall{ID: id, ToolName: name, Parameters: params, Timestamp: contract.NewDateTime(now.UTC())}
	if req.AgentID != "" {
		tc.AgentID = contract.Ptr(req.AgentID)
	}
	if req.SessionID != "" {
		tc.SessionID = contract.Ptr(req.SessionID)
	}
	return tc
}

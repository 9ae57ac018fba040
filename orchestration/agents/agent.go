package agents

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Message is one turn of a conversation.
type Message struct {
	Role    contract.MessageRole
	Content string
	// ToolCalls are the calls an assistant turn made (sent back to models
	// that need them to match the tool results that follow).
	ToolCalls []contract.ToolCall
	// ToolCallID is the call a Tool turn answers.
	ToolCallID string
}

// MessagesFromHistory turns a session's messages (oldest first) into a
// conversation; messages with neither content nor tool calls are dropped.
func MessagesFromHistory(history []contract.AgentMessage) []Message {
	out := make([]Message, 0, len(history))
	for _, m := range history {
		if m.Content == "" {
			continue
		}
		out = append(out, Message{Role: m.Role, Content: m.Content})
	}
	return out
}

// Request is one turn asked of an agent.
type Request struct {
	AgentID   string
	SessionID string
	// MessageID is the id of the message being answered (for logs).
	MessageID string
	// Messages is the conversation, oldest first; the last is normally the
	// new user message. The agent's system prompt is added in front.
	Messages []Message
	// WorkingDirectory is the session's working directory, relative to the
	// sandbox root; command agents run in it ("" = the agent's own
	// configured directory).
	WorkingDirectory string
}

// ChunkKind says what a streamed chunk carries.
type ChunkKind int

// Chunk kinds.
const (
	// ChunkText is answer text (ResponseType Text).
	ChunkText ChunkKind = iota
	// ChunkThinking is reasoning shown apart from the answer (ResponseType
	// Thinking); it is not part of the answer text.
	ChunkThinking
)

// ResponseType maps a chunk kind onto the wire's ResponseType.
func (k ChunkKind) ResponseType() contract.ResponseType {
	if k == ChunkThinking {
		return contract.ResponseTypeThinking
	}
	return contract.ResponseTypeText
}

// Chunk is one piece of streamed output.
type Chunk struct {
	Kind    ChunkKind
	Content string
}

// Result is the end of a turn.
type Result struct {
	// Content is the whole answer text (the de-duplicated concatenation of
	// the text chunks).
	Content string
	// Usage is the token usage reported by the backend (zero when it
	// reports none).
	Usage contract.TokenUsage
	// ToolCalls are the tools the model asked for, with names mapped onto
	// the canonical tool names (read_file, …) when they match one. They
	// have not been run: the caller executes them (authorising each) and
	// may start another turn with the results as Tool messages.
	ToolCalls []contract.ToolCall
	// FinishReason is the backend's reason to stop ("stop", "length",
	// "tool_calls", …; "" when unknown).
	FinishReason string
	// Model is the model that answered, when the backend says.
	Model string
}

// Backend is a kind of agent that holds a conversation turn: it streams
// its output through emit (never after returning) and returns the turn's
// usage and tool calls. The Content of its Result is ignored: Agent builds
// it from the emitted text. Implementations are safe for concurrent use
// and return promptly when ctx is done.
type Backend interface {
	Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error)
}

// Agent is one agent of the catalogue: a backend plus its description,
// system prompt and concurrency limit. It implements orchestration.Agent
// (plan steps) and offers Chat (conversation turns). It is safe for
// concurrent use.
type Agent struct {
	info    contract.AgentInfo
	kind    string
	prompt  string
	backend Backend
	// slots bounds concurrent calls on this node (capabilities'
	// maxConcurrentRequests): a CLI or a rate-limited API must not be
	// flooded by parallel plan steps.
	slots  chan struct{}
	logger *slog.Logger
	now    func() time.Time
}

var _ orchestration.Agent = (*Agent)(nil)

// NewAgent wraps a backend. maxConcurrent ≤ 0 means no limit.
func NewAgent(info contract.AgentInfo, kind, systemPrompt string, b Backend, maxConcurrent int, logger *slog.Logger, now func() time.Time) *Agent {
	if logger == nil {
		logger = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	a := &Agent{info: info, kind: kind, prompt: systemPrompt, backend: b, logger: logger, now: now}
	if maxConcurrent > 0 {
		a.slots = make(chan struct{}, maxConcurrent)
	}
	return a
}

// Info describes the agent (without secrets).
func (a *Agent) Info() contract.AgentInfo { return a.info }

// Kind is the agent's kind (scripted, command, openai).
func (a *Agent) Kind() string { return a.kind }

// Chat runs one conversation turn. Text chunks reach emit de-duplicated
// (DESIGN decision 3: a backend whose last chunk repeats the whole text
// has that chunk dropped); Result.Content is the de-duplicated text.
// emit is never called after Chat returns.
func (a *Agent) Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error) {
	if a.slots != nil {
		select {
		case a.slots <- struct{}{}:
			defer func() { <-a.slots }()
		case <-ctx.Done():
			return Result{}, fmt.Errorf("agent %s: waiting for a free slot: %w", a.info.ID, ctx.Err())
		}
	}
	if req.AgentID == "" {
		req.AgentID = a.info.ID
	}
	if a.prompt != "" {
		req.Messages = append([]Message{{Role: contract.MessageRoleSystem, Content: a.prompt}}, req.Messages...)
	}
	if emit == nil {
		emit = func(Chunk) {}
	}
	start := a.now()
	d := &dedup{}
	res, err := a.backend.Chat(ctx, req, func(c Chunk) {
		if c.Content == "" {
			return
		}
		if c.Kind != ChunkText {
			emit(c)
			return
		}
		for _, s := range d.push(c.Content) {
			emit(Chunk{Kind: ChunkText, Content: s})
		}
	})
	// A held chunk that nothing followed was the backend repeating the
	// whole text: it is dropped.
	res.Content = d.text()
	if err != nil {
		a.logger.LogAttrs(ctx, slog.LevelWarn, "agent call failed", slog.String("agent_id", a.info.ID),
			slog.String("kind", a.kind), slog.String("session_id", req.SessionID),
			slog.Duration("duration", a.now().Sub(start)), slog.String("error", err.Error()))
		return res, err
	}
	a.logger.LogAttrs(ctx, slog.LevelDebug, "agent call", slog.String("agent_id", a.info.ID),
		slog.String("kind", a.kind), slog.String("session_id", req.SessionID),
		slog.Duration("duration", a.now().Sub(start)), slog.Int("input_tokens", res.Usage.InputTokens),
		slog.Int("output_tokens", res.Usage.OutputTokens), slog.Int("tool_calls", len(res.ToolCalls)),
		slog.Bool("deduplicated", d.dropped))
	return res, nil
}

// Run implements orchestration.Agent: the step becomes one user message
// (StepPrompt) and the answer the step's output. Steps and conversation
// turns alike run in the session's working directory
// (req.WorkingDirectory). OutputData carries what
// AgentResult has no field for: "usage" (TokenUsage), "toolCalls"
// (ToolCall list, not executed), "finishReason", "model" and "kind".
func (a *Agent) Run(ctx context.Context, req orchestration.AgentRequest, emit func(chunk string)) (orchestration.AgentResult, error) {
	if r, ok := a.backend.(orchestration.Agent); ok {
		// The backend runs steps itself (scripted); only the slots apply.
		if a.slots != nil {
			select {
			case a.slots <- struct{}{}:
				defer func() { <-a.slots }()
			case <-ctx.Done():
				return orchestration.AgentResult{}, fmt.Errorf("agent %s: waiting for a free slot: %w", a.info.ID, ctx.Err())
			}
		}
		return r.Run(ctx, req, emit)
	}
	chat := Request{AgentID: req.AgentID, SessionID: req.SessionID,
		MessageID:        fmt.Sprintf("%s/%d/%d", req.PlanID, req.StepOrder, req.Attempt),
		Messages:         []Message{{Role: contract.MessageRoleUser, Content: StepPrompt(req)}},
		WorkingDirectory: req.WorkingDirectory}
	if req.MessageID != "" && len(req.Messages) > 0 {
		// A conversation turn (SendAgentMessage): the job carries the recent
		// conversation, the user's message last; agents hold no state.
		chat.MessageID, chat.Messages = req.MessageID, MessagesFromHistory(req.Messages)
	}
	res, err := a.Chat(ctx, chat,
		func(c Chunk) {
			if c.Kind == ChunkText && emit != nil {
				emit(c.Content)
			}
		})
	if err != nil {
		return orchestration.AgentResult{}, err
	}
	data := contract.Map{"kind": a.kind, "usage": res.Usage}
	if len(res.ToolCalls) > 0 {
		data["toolCalls"] = contract.List[contract.ToolCall](res.ToolCalls)
	}
	if res.FinishReason != "" {
		data["finishReason"] = res.FinishReason
	}
	if res.Model != "" {
		data["model"] = res.Model
	}
	return orchestration.AgentResult{Output: res.Content, OutputData: data}, nil
}

// StepPrompt is the user message a plan step becomes: the goal, the task,
// the plan's agents (for Adaptive's analysis step), extra input, and the
// outputs of the steps it depends on, in order.
func StepPrompt(req orchestration.AgentRequest) string {
	var b strings.Builder
	if req.Goal != "" {
		fmt.Fprintf(&b, "Goal: %s\n\n", req.Goal)
	}
	fmt.Fprintf(&b, "Your task: %s\n", req.Task)
	if len(req.AvailableAgents) > 0 {
		fmt.Fprintf(&b, "\nAgents available to the plan: %s\n", strings.Join(req.AvailableAgents, ", "))
	}
	extra := contract.Map{}
	for k, v := range req.Input {
		if k != "goal" && k != "previousOutputs" && k != "availableAgents" {
			extra[k] = v
		}
	}
	if len(extra) > 0 {
		if j, err := json.Marshal(extra); err == nil {
			fmt.Fprintf(&b, "\nInput: %s\n", j)
		}
	}
	if len(req.PreviousOutputs) > 0 {
		orders := make([]string, 0, len(req.PreviousOutputs))
		for o := range req.PreviousOutputs {
			orders = append(orders, o)
		}
		slices.SortFunc(orders, func(x, y string) int {
			a, _ := strconv.Atoi(x)
			b, _ := strconv.Atoi(y)
			return a - b
		})
		b.WriteString("\nOutputs of the steps this one depends on:\n")
		for _, o := range orders {
			fmt.Fprintf(&b, "\n[Step %s]\n%s\n", o, req.PreviousOutputs[o])
		}
	}
	return b.String()
}

// dedup drops a final text chunk that repeats the whole text so far
// (DESIGN decision 3; Claude's CLI does this). Such a chunk is held back
// rather than dropped at once: if anything follows it, it was real output
// and is released, so only a repeat at the very end is lost — a genuine
// "ha" "ha" answer that ends on the repeat is the one ambiguity left.
type dedup struct {
	acc     strings.Builder
	held    string
	holding bool
	dropped bool
}

// push returns the chunks to emit now.
func (d *dedup) push(s string) []string {
	var out []string
	if d.holding {
		d.holding = false
		d.acc.WriteString(d.held)
		out = append(out, d.held)
	}
	if d.acc.Len() > 0 && s == d.acc.String() {
		d.held, d.holding = s, true
		return out
	}
	d.acc.WriteString(s)
	return append(out, s)
}

// text returns the accumulated text, without a held repeat.
func (d *dedup) text() string {
	if d.holding {
		d.dropped = true
	}
	return d.acc.String()
}

// permanent marks errors that retrying cannot fix, for the engine.
func permanent(err error) error { return orchestration.Permanent(err) }

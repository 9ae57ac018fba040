package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// OpenAISpec configures an agent on an OpenAI-compatible chat completions
// API (OpenAI, OpenRouter, Ollama, vLLM, llama.cpp): POST
// {baseURL}/v1/chat/completions with stream: true, read as server-sent
// events.
type OpenAISpec struct {
	// BaseURL is the API's root, with or without /v1
	// (https://api.openai.com).
	BaseURL string `yaml:"baseURL"`
	// Model is sent as "model" (required).
	Model string `yaml:"model"`
	// APIKeyEnv names the environment variable holding the API key, sent
	// as a bearer token. Empty: no key (local servers). The key is read
	// per call, and never logged nor put in an error.
	APIKeyEnv string `yaml:"apiKeyEnv"`
	// Temperature and MaxTokens are sent when set.
	Temperature *float64 `yaml:"temperature"`
	MaxTokens   int      `yaml:"maxTokens"`
	// Tools sends the definitions of the sandbox tools, so the model may
	// call them; the calls come back in Result.ToolCalls (not executed).
	Tools bool `yaml:"tools"`
	// Headers are extra request headers (e.g. OpenRouter's HTTP-Referer);
	// not secrets (a secret-looking header is refused).
	Headers map[string]string `yaml:"headers"`
	// Timeout bounds a whole turn, retries included (5m).
	Timeout time.Duration `yaml:"timeout"`
	// IdleTimeout is how long the server may stay silent — before the
	// response headers or within the stream — before the attempt is
	// abandoned (60s).
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// MaxAttempts bounds the attempts on 429, 5xx and connection errors
	// before any output (4). A stream broken after output began is not
	// retried: its text was already streamed.
	MaxAttempts int `yaml:"maxAttempts"`
	// RetryBackoff is the first back-off (500ms); it doubles per attempt
	// up to MaxRetryBackoff (30s), with jitter; a Retry-After header wins.
	RetryBackoff    time.Duration `yaml:"retryBackoff"`
	MaxRetryBackoff time.Duration `yaml:"maxRetryBackoff"`
	// InputCostPerMillion and OutputCostPerMillion price the tokens for
	// TokenUsage.EstimatedCost (0: no estimate).
	InputCostPerMillion  float64 `yaml:"inputCostPerMillion"`
	OutputCostPerMillion float64 `yaml:"outputCostPerMillion"`
}

func (c OpenAISpec) withDefaults() OpenAISpec {
	if c.BaseURL == "" {
		c.BaseURL = "https://api.openai.com"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 4
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 500 * time.Millisecond
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = 30 * time.Second
	}
	return c
}

// maxSSELine bounds one line of the stream.
const maxSSELine = 4 << 20

type openAIBackend struct {
	id   string
	cfg  OpenAISpec
	url  string
	opts Options
}

func newOpenAIBackend(id string, c OpenAISpec, opts Options) (*openAIBackend, error) {
	c = c.withDefaults()
	opts = opts.withDefaults()
	if c.Model == "" {
		return nil, field("openai.model", "required")
	}
	if err := validURL(c.BaseURL); err != nil {
		return nil, field("openai.baseURL", "%v", err)
	}
	if c.APIKeyEnv != "" && (strings.ContainsAny(c.APIKeyEnv, "= \t") || strings.HasPrefix(c.APIKeyEnv, "sk-")) {
		return nil, field("openai.apiKeyEnv", "must name an environment variable, not hold a key")
	}
	if c.Temperature != nil && (*c.Temperature < 0 || *c.Temperature > 2) {
		return nil, field("openai.temperature", "%v is not in [0,2]", *c.Temperature)
	}
	if c.MaxTokens < 0 {
		return nil, field("openai.maxTokens", "must not be negative")
	}
	base := strings.TrimRight(c.BaseURL, "/")
	if !strings.HasSuffix(base, "/v1") {
		base += "/v1"
	}
	return &openAIBackend{id: id, cfg: c, url: base + "/chat/completions", opts: opts}, nil
}

// Wire types of the chat completions API.
type (
	oaMessage struct {
		Role       string       `json:"role"`
		Content    *string      `json:"content"`
		ToolCalls  []oaToolCall `json:"tool_calls,omitempty"`
		ToolCallID string       `json:"tool_call_id,omitempty"`
	}
	oaToolCall struct {
		Index    *int   `json:"index,omitempty"`
		ID       string `json:"id,omitempty"`
		Type     string `json:"type,omitempty"`
		Function struct {
			Name      string `json:"name,omitempty"`
			Arguments string `json:"arguments,omitempty"`
		} `json:"function"`
	}
	oaTool struct {
		Type     string `json:"type"`
		Function struct {
			Name        string         `json:"name"`
			Description string         `json:"description"`
			Parameters  map[string]any `json:"parameters"`
		} `json:"function"`
	}
	oaRequest struct {
		Model         string      `json:"model"`
		Messages      []oaMessage `json:"messages"`
		Stream        bool        `json:"stream"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
		Temperature *float64 `json:"temperature,omitempty"`
		MaxTokens   int      `json:"max_tokens,omitempty"`
		Tools       []oaTool `json:"tools,omitempty"`
	}
	oaUsage struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
		TotalTokens      int `json:"total_tokens"`
	}
	oaError struct {
		Message string `json:"message"`
		Type    string `json:"type"`
	}
	oaChunk struct {
		Model   string `json:"model"`
		Choices []struct {
			Delta struct {
				Content          string       `json:"content"`
				ReasoningContent string       `json:"reasoning_content"`
				Reasoning        string       `json:"reasoning"`
				ToolCalls        []oaToolCall `json:"tool_calls"`
				FunctionCall     *struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function_call"`
			} `json:"delta"`
			FinishReason *string `json:"finish_reason"`
		} `json:"choices"`
		Usage *oaUsage `json:"usage"`
		Error *oaError `json:"error"`
	}
)

func (b *openAIBackend) body(req Request) ([]byte, error) {
	r := oaRequest{Model: b.cfg.Model, Stream: true, Temperature: b.cfg.Temperature, MaxTokens: b.cfg.MaxTokens}
	r.StreamOptions.IncludeUsage = true
	for _, m := range req.Messages {
		content := m.Content
		om := oaMessage{Role: roleName(m.Role), Content: &content, ToolCallID: m.ToolCallID}
		for _, tc := range m.ToolCalls {
			args, err := json.Marshal(contract.Map(tc.Parameters))
			if err != nil {
				return nil, err
			}
			var c oaToolCall
			c.ID, c.Type = tc.ID, "function"
			c.Function.Name, c.Function.Arguments = tc.ToolName, string(args)
			om.ToolCalls = append(om.ToolCalls, c)
		}
		if content == "" && len(om.ToolCalls) > 0 {
			om.Content = nil
		}
		r.Messages = append(r.Messages, om)
	}
	if b.cfg.Tools {
		for _, d := range tools.Definitions() {
			r.Tools = append(r.Tools, openAITool(d))
		}
	}
	return json.Marshal(r)
}

// openAITool converts a tool definition to a function tool with a JSON
// schema (arrays need "items").
func openAITool(d contract.ToolDefinition) oaTool {
	props := map[string]any{}
	for name, p := range d.Schema.Properties {
		s := map[string]any{"type": p.Type, "description": p.Description}
		if p.Type == "array" {
			s["items"] = map[string]any{"type": "string"}
		}
		props[name] = s
	}
	var t oaTool
	t.Type = "function"
	t.Function.Name = d.Name
	t.Function.Description = d.Description
	t.Function.Parameters = map[string]any{"type": "object", "properties": props, "required": []string(d.Schema.Required)}
	if d.Schema.Required == nil {
		t.Function.Parameters["required"] = []string{}
	}
	return t
}

// apiError is a non-success HTTP answer.
type apiError struct {
	status  int
	message string
}

func (e *apiError) Error() string {
	if e.message == "" {
		return fmt.Sprintf("HTTP %d", e.status)
	}
	return fmt.Sprintf("HTTP %d: %s", e.status, e.message)
}

func retryable(status int) bool { return status == http.StatusTooManyRequests || status >= 500 }

// errIdle is the cause of an attempt abandoned for silence.
var errIdle = errors.New("no data from the server")

// Chat sends the turn, retrying on 429/5xx and connection errors before
// any output, and streams the answer.
func (b *openAIBackend) Chat(ctx context.Context, req Request, emit func(Chunk)) (Result, error) {
	key := ""
	if b.cfg.APIKeyEnv != "" {
		v, ok := b.opts.LookupEnv(b.cfg.APIKeyEnv)
		if !ok || v == "" {
			return Result{}, permanent(fmt.Errorf("agent %s: environment variable %s (openai.apiKeyEnv) is not set", b.id, b.cfg.APIKeyEnv))
		}
		key = v
	}
	body, err := b.body(req)
	if err != nil {
		return Result{}, permanent(fmt.Errorf("agent %s: encode request: %w", b.id, err))
	}
	ctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	for attempt := 1; ; attempt++ {
		res, retry, wait, err := b.attempt(ctx, body, key, req, emit)
		if err == nil {
			return res, nil
		}
		err = scrub(err, key)
		if !retry || attempt >= b.cfg.MaxAttempts || ctx.Err() != nil {
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%w)", err, ctx.Err())
			}
			if !retry {
				return res, err
			}
			return res, fmt.Errorf("%w (after %d attempts)", err, attempt)
		}
		if wait <= 0 {
			wait = b.backoff(attempt)
		}
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return res, fmt.Errorf("%w; the next attempt (in %s) would pass the timeout", err, wait.Round(time.Millisecond))
		}
		b.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "openai call failed; retrying", slog.String("agent_id", b.id),
			slog.Int("attempt", attempt), slog.Duration("delay", wait), slog.String("error", err.Error()))
		if serr := b.opts.Sleep(ctx, wait); serr != nil {
			return res, fmt.Errorf("%w (%w)", err, serr)
		}
	}
}

// backoff is the delay before attempt+1: exponential with jitter in
// [d/2, d), so that many nodes rate-limited at once do not retry at once.
func (b *openAIBackend) backoff(attempt int) time.Duration {
	d := b.cfg.RetryBackoff << min(attempt-1, 20)
	d = min(d, b.cfg.MaxRetryBackoff)
	return d/2 + time.Duration(b.opts.Jitter()*float64(d/2))
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// scrubText removes the API key from text a server sent, in case it
// echoes it: server text is the only way the key could reach an error.
func scrubText(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[redacted]")
}

// scrub is the last line of defence: an error whose text still holds the
// key is replaced by its redacted text (keeping permanence).
func scrub(err error, key string) error {
	if key == "" || err == nil || !strings.Contains(err.Error(), key) {
		return err
	}
	red := errors.New(scrubText(err.Error(), key))
	if orchestration.IsPermanent(err) {
		return permanent(red)
	}
	return red
}

// attempt makes one request. retry says whether another attempt may help;
// wait is the server's Retry-After (0 = use the back-off).
func (b *openAIBackend) attempt(ctx context.Context, body []byte, key string, req Request, emit func(Chunk)) (res Result, retry bool, wait time.Duration, err error) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	idle := time.AfterFunc(b.cfg.IdleTimeout, func() { cancel(errIdle) })
	defer idle.Stop()

	hr, err := http.NewRequestWithContext(actx, http.MethodPost, b.url, bytes.NewReader(body))
	if err != nil {
		return res, false, 0, permanent(fmt.Errorf("agent %s: %w", b.id, err))
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "text/event-stream")
	for k, v := range b.cfg.Headers {
		hr.Header.Set(k, v)
	}
	if key != "" {
		hr.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := b.opts.HTTPClient.Do(hr)
	if err != nil {
		if context.Cause(actx) == errIdle {
			return res, true, 0, fmt.Errorf("agent %s: no response within %s", b.id, b.cfg.IdleTimeout)
		}
		// Connection refused, reset, DNS: nothing was streamed, so another
		// attempt is safe. (The URL is ours; it carries no secret.)
		return res, ctx.Err() == nil, 0, fmt.Errorf("agent %s: request failed: %w", b.id, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := scrubText(errorMessage(resp.Body), key)
		aerr := fmt.Errorf("agent %s: %w", b.id, &apiError{status: resp.StatusCode, message: msg})
		if retryable(resp.StatusCode) {
			return res, true, retryAfter(resp.Header, b.opts.Now()), aerr
		}
		return res, false, 0, permanent(aerr)
	}
	idle.Reset(b.cfg.IdleTimeout)
	body2 := &idleReader{r: resp.Body, reset: func() { idle.Reset(b.cfg.IdleTimeout) }}
	res, started, err := b.stream(body2, req, key, emit)
	if err != nil {
		if context.Cause(actx) == errIdle {
			err = fmt.Errorf("agent %s: the stream stalled (no data for %s)", b.id, b.cfg.IdleTimeout)
		}
		// Only a stream that broke before producing anything may be
		// retried; otherwise its text has already reached the user.
		return res, !started && ctx.Err() == nil, 0, err
	}
	return res, false, 0, nil
}

// idleReader resets the idle timer on every read that returns data.
type idleReader struct {
	r     io.Reader
	reset func()
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.reset()
	}
	return n, err
}

// errorMessage extracts an API error message from a response body.
func errorMessage(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 16<<10))
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	msg := strings.TrimSpace(string(b))
	if json.Unmarshal(b, &e) == nil && len(e.Error) > 0 {
		var oe oaError
		var s string
		switch {
		case json.Unmarshal(e.Error, &oe) == nil && oe.Message != "":
			msg = oe.Message
		case json.Unmarshal(e.Error, &s) == nil:
			msg = s
		}
	}
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return strings.ToValidUTF8(msg, "")
}

// toolAcc accumulates one streamed tool call.
type toolAcc struct {
	id, name string
	args     strings.Builder
}

// stream reads the event stream. started reports whether any output was
// emitted.
func (b *openAIBackend) stream(body io.Reader, req Request, key string, emit func(Chunk)) (res Result, started bool, err error) {
	sr := newSSEReader(body, maxSSELine)
	calls := map[int]*toolAcc{}
	events := 0
	finish := func() (Result, bool, error) {
		res.ToolCalls = b.toolCalls(calls, req)
		if res.Usage.TotalTokens == 0 {
			res.Usage.TotalTokens = res.Usage.InputTokens + res.Usage.OutputTokens
		}
		res.Usage.EstimatedCost = float64(res.Usage.InputTokens)/1e6*b.cfg.InputCostPerMillion +
			float64(res.Usage.OutputTokens)/1e6*b.cfg.OutputCostPerMillion
		return res, started, nil
	}
	for {
		ev, err := sr.next()
		if errors.Is(err, io.EOF) {
			if res.FinishReason != "" {
				return finish() // a server that omits [DONE] after finishing
			}
			return res, started, fmt.Errorf("agent %s: the stream ended before the answer was complete (after %d events)", b.id, events)
		}
		if err != nil {
			return res, started, fmt.Errorf("agent %s: the stream broke after %d events: %w", b.id, events, err)
		}
		events++
		data := strings.TrimSpace(ev.Data)
		if data == "[DONE]" {
			return finish()
		}
		var c oaChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return res, started, fmt.Errorf("agent %s: malformed stream event: %w", b.id, err)
		}
		if c.Error != nil || ev.Event == "error" {
			msg := "unspecified error"
			if c.Error != nil && c.Error.Message != "" {
				msg = scrubText(c.Error.Message, key)
			}
			return res, started, fmt.Errorf("agent %s: the server reported an error mid-stream: %s", b.id, msg)
		}
		if c.Model != "" {
			res.Model = c.Model
		}
		if c.Usage != nil {
			res.Usage.InputTokens = c.Usage.PromptTokens
			res.Usage.OutputTokens = c.Usage.CompletionTokens
			res.Usage.TotalTokens = c.Usage.TotalTokens
		}
		if len(c.Choices) == 0 {
			continue
		}
		ch := c.Choices[0]
		if t := ch.Delta.ReasoningContent + ch.Delta.Reasoning; t != "" {
			started = true
			emit(Chunk{Kind: ChunkThinking, Content: t})
		}
		if ch.Delta.Content != "" {
			started = true
			emit(Chunk{Content: ch.Delta.Content})
		}
		for i, tc := range ch.Delta.ToolCalls {
			idx := i
			if tc.Index != nil {
				idx = *tc.Index
			}
			acc := calls[idx]
			if acc == nil {
				acc = &toolAcc{}
				calls[idx] = acc
			}
			if tc.ID != "" {
				acc.id = tc.ID
			}
			if tc.Function.Name != "" {
				acc.name += tc.Function.Name
			}
			acc.args.WriteString(tc.Function.Arguments)
			started = true
		}
		if fc := ch.Delta.FunctionCall; fc != nil {
			acc := calls[0]
			if acc == nil {
				acc = &toolAcc{}
				calls[0] = acc
			}
			acc.name += fc.Name
			acc.args.WriteString(fc.Arguments)
			started = true
		}
		if ch.FinishReason != nil && *ch.FinishReason != "" {
			res.FinishReason = *ch.FinishReason
		}
	}
}

// toolCalls finishes the accumulated calls, in index order, with names
// mapped onto the canonical tool names. Arguments that are not a JSON
// object are passed as {"_invalidArguments": text}, so the caller can
// tell the model.
func (b *openAIBackend) toolCalls(calls map[int]*toolAcc, req Request) []contract.ToolCall {
	if len(calls) == 0 {
		return nil
	}
	idx := make([]int, 0, len(calls))
	for i := range calls {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	out := make([]contract.ToolCall, 0, len(idx))
	for _, i := range idx {
		acc := calls[i]
		params := map[string]any{}
		if s := strings.TrimSpace(acc.args.String()); s != "" {
			if json.Unmarshal([]byte(s), &params) != nil {
				params = map[string]any{"_invalidArguments": s}
			}
		}
		out = append(out, newToolCall(acc.id, acc.name, params, req, b.opts.Now()))
	}
	return out
}

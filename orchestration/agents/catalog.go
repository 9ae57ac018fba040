package agents

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/orchestratorchat/hubfarm/orchestration"
	"github.com/orchestratorchat/hubfarm/orchestration/contract"
	"github.com/orchestratorchat/hubfarm/orchestration/tools"
)

// Agent kinds (DESIGN decision 9).
const (
	KindScripted = "scripted"
	KindCommand  = "command"
	KindOpenAI   = "openai"
)

// File is the catalogue file: a list of agents. YAML or JSON (JSON is
// YAML); unknown fields are errors, so a misspelt setting is not ignored.
type File struct {
	Agents []Spec `yaml:"agents"`
}

// Spec is one agent of the catalogue file.
type Spec struct {
	// ID is the agent id clients use (required, unique; letters, digits,
	// '.', '_', '-').
	ID string `yaml:"id"`
	// Name is shown to users (default: ID).
	Name string `yaml:"name"`
	// Kind is scripted, command or openai (required).
	Kind        string `yaml:"kind"`
	Description string `yaml:"description"`
	// Type is the AgentType reported to clients, by name (Claude, Saturn,
	// GPT4, Custom, Orchestrator) or number (default Custom).
	Type string `yaml:"type"`
	// SystemPrompt is put in front of every conversation.
	SystemPrompt string `yaml:"systemPrompt"`
	// WorkingDirectory is where a command agent runs when the request has
	// no session working directory, relative to the sandbox root; it is
	// also reported in AgentInfo.
	WorkingDirectory string `yaml:"workingDirectory"`
	// Capabilities reported to clients; see CapabilitiesSpec for defaults.
	Capabilities CapabilitiesSpec `yaml:"capabilities"`

	// Exactly the block of the agent's kind may be present.
	Scripted *ScriptedSpec `yaml:"scripted"`
	Command  *CommandSpec  `yaml:"command"`
	OpenAI   *OpenAISpec   `yaml:"openai"`
}

// CapabilitiesSpec is the AgentCapabilities of an agent. Unset booleans
// take the kind's defaults: streaming on; tools on for openai agents with
// tools enabled; file operations on for command agents.
type CapabilitiesSpec struct {
	SupportsStreaming      *bool    `yaml:"supportsStreaming"`
	SupportsTools          *bool    `yaml:"supportsTools"`
	SupportsFileOperations *bool    `yaml:"supportsFileOperations"`
	SupportsWebSearch      bool     `yaml:"supportsWebSearch"`
	SupportedModels        []string `yaml:"supportedModels"`
	MaxTokens              int      `yaml:"maxTokens"`
	// MaxConcurrentRequests bounds concurrent calls per node (scripted 64,
	// command 4, openai 16).
	MaxConcurrentRequests int `yaml:"maxConcurrentRequests"`
	// Tools names the tools advertised in availableTools (canonical names
	// or aliases; default none, or all for openai agents with tools).
	Tools []string `yaml:"tools"`
}

// ScriptedSpec configures the built-in deterministic agent
// (orchestration.Scripted).
type ScriptedSpec struct {
	Delay        time.Duration `yaml:"delay"`
	Chunks       int           `yaml:"chunks"`
	FailureRate  float64       `yaml:"failureRate"`
	FailAttempts int           `yaml:"failAttempts"`
	AdaptivePlan string        `yaml:"adaptivePlan"`
}

// Load reads and validates a catalogue file. Validation errors name the
// agent and the field; inline secrets are refused (name an environment
// variable with apiKeyEnv instead).
func Load(path string, opts Options) (*Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("agents: load catalogue: %w", err)
	}
	c, err := Parse(data, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Options are the dependencies of a catalogue's agents. Zero values take
// the defaults on each field.
type Options struct {
	// SandboxRoot is the directory command agents run under (the tools'
	// Config.Root); required when the catalogue has command agents.
	SandboxRoot string
	// LookupEnv reads environment variables: API keys (apiKeyEnv) and the
	// variables a command may inherit (os.LookupEnv).
	LookupEnv func(string) (string, bool)
	// HTTPClient sends openai requests (a client without an overall
	// timeout — streams are long; each agent's timeouts apply).
	HTTPClient *http.Client
	// Now is the clock (time.Now).
	Now func() time.Time
	// Sleep waits between retries; it returns ctx's error when ctx ends
	// first (a timer).
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a number in [0,1) for retry back-off (math/rand/v2).
	Jitter func() float64
	// Logger receives agent logs (slog.Default()). API keys are never
	// logged.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.LookupEnv == nil {
		o.LookupEnv = os.LookupEnv
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = sleepCtx
	}
	if o.Jitter == nil {
		o.Jitter = rand.Float64
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Catalog is a set of agents loaded from a file. It implements
// orchestration.AgentCatalog and is safe for concurrent use (it is
// immutable after Parse).
type Catalog struct {
	agents map[string]*Agent
	order  []string
}

var _ orchestration.AgentCatalog = (*Catalog)(nil)

// Lookup implements orchestration.AgentCatalog.
func (c *Catalog) Lookup(id string) (orchestration.Agent, contract.AgentInfo, bool) {
	a, ok := c.agents[id]
	if !ok {
		return nil, contract.AgentInfo{}, false
	}
	return a, a.info, true
}

// Agent returns the agent with the given id, for conversation turns
// (Agent.Chat).
func (c *Catalog) Agent(id string) (*Agent, bool) {
	a, ok := c.agents[id]
	return a, ok
}

// List implements orchestration.AgentCatalog: every agent, in file order.
func (c *Catalog) List() []contract.AgentInfo {
	out := make([]contract.AgentInfo, 0, len(c.order))
	for _, id := range c.order {
		out = append(out, c.agents[id].info)
	}
	return out
}

// Parse validates a catalogue (YAML or JSON) and builds its agents.
func Parse(data []byte, opts Options) (*Catalog, error) {
	opts = opts.withDefaults()
	// Secrets are checked on the raw document, so that a key under any
	// name, known field or not, is refused before anything else.
	var raw yaml.Node
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("agents: catalogue: %w", err)
	}
	if err := checkSecrets(&raw); err != nil {
		return nil, err
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("agents: catalogue: %w", err)
	}
	if len(f.Agents) == 0 {
		return nil, errors.New("agents: catalogue: no agents (want a top-level \"agents:\" list)")
	}
	c := &Catalog{agents: map[string]*Agent{}}
	var errs []error
	for i, s := range f.Agents {
		a, err := build(s, opts)
		if err != nil {
			name := s.ID
			if name == "" {
				name = "#" + strconv.Itoa(i+1)
			}
			errs = append(errs, fmt.Errorf("agent %s: %w", name, err))
			continue
		}
		if _, dup := c.agents[s.ID]; dup {
			errs = append(errs, fmt.Errorf("agent %s: id: duplicate", s.ID))
			continue
		}
		c.agents[s.ID] = a
		c.order = append(c.order, s.ID)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("agents: catalogue: %w", err)
	}
	return c, nil
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// field formats a validation error for one field.
func field(name, format string, args ...any) error {
	return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
}

func build(s Spec, opts Options) (*Agent, error) {
	if s.ID == "" {
		return nil, field("id", "required")
	}
	if !idPattern.MatchString(s.ID) {
		return nil, field("id", "%q: use letters, digits, '.', '_' and '-' (at most 128)", s.ID)
	}
	typ := contract.AgentTypeCustom
	if s.Type != "" {
		if err := json.Unmarshal([]byte(strconv.Quote(s.Type)), &typ); err != nil {
			if n, nerr := strconv.Atoi(s.Type); nerr != nil || json.Unmarshal([]byte(strconv.Itoa(n)), &typ) != nil {
				return nil, field("type", "%q is not an agent type (Claude, Saturn, GPT4, Custom, Orchestrator)", s.Type)
			}
		}
	}
	blocks := map[string]bool{KindScripted: s.Scripted != nil, KindCommand: s.Command != nil, KindOpenAI: s.OpenAI != nil}
	for k, present := range blocks {
		if present && k != s.Kind {
			return nil, field(k, "settings for kind %s on an agent of kind %q", k, s.Kind)
		}
	}
	if s.WorkingDirectory != "" && opts.SandboxRoot != "" {
		if _, err := tools.ConfineDir(opts.SandboxRoot, s.WorkingDirectory); err != nil {
			return nil, field("workingDirectory", "%v", err)
		}
	}
	caps := contract.AgentCapabilities{SupportsStreaming: true, SupportsWebSearch: s.Capabilities.SupportsWebSearch,
		SupportedModels: s.Capabilities.SupportedModels, MaxTokens: s.Capabilities.MaxTokens}
	config := contract.Map{"kind": s.Kind}
	var backend Backend
	maxConc := 64
	toolsOn := false
	switch s.Kind {
	case KindScripted:
		sc := ScriptedSpec{}
		if s.Scripted != nil {
			sc = *s.Scripted
		}
		if sc.FailureRate < 0 || sc.FailureRate > 1 {
			return nil, field("scripted.failureRate", "%v is not in [0,1]", sc.FailureRate)
		}
		if sc.Delay < 0 || sc.Chunks < 0 || sc.FailAttempts < 0 {
			return nil, field("scripted", "delay, chunks and failAttempts must not be negative")
		}
		backend = &scriptedBackend{s: &orchestration.Scripted{Delay: sc.Delay, Chunks: sc.Chunks,
			FailureRate: sc.FailureRate, FailAttempts: sc.FailAttempts, AdaptivePlan: sc.AdaptivePlan}}
		config["delay"] = sc.Delay.String()
		config["chunks"] = sc.Chunks
	case KindCommand:
		if s.Command == nil {
			return nil, field("command", "required for kind command")
		}
		cb, err := newCommandBackend(s.ID, *s.Command, s.WorkingDirectory, opts)
		if err != nil {
			return nil, err
		}
		backend = cb
		maxConc = 4
		caps.SupportsFileOperations = true
		config["command"] = cb.cfg.Path
		config["format"] = cb.cfg.Format
	case KindOpenAI:
		if s.OpenAI == nil {
			return nil, field("openai", "required for kind openai")
		}
		ob, err := newOpenAIBackend(s.ID, *s.OpenAI, opts)
		if err != nil {
			return nil, err
		}
		backend = ob
		maxConc = 16
		toolsOn = ob.cfg.Tools
		caps.SupportsTools = toolsOn
		if len(caps.SupportedModels) == 0 {
			caps.SupportedModels = []string{ob.cfg.Model}
		}
		config["model"] = ob.cfg.Model
		config["baseURL"] = ob.cfg.BaseURL
		if ob.cfg.APIKeyEnv != "" {
			config["apiKeyEnv"] = ob.cfg.APIKeyEnv // the variable's name, never its value
		}
	case "":
		return nil, field("kind", "required (scripted, command or openai)")
	default:
		return nil, field("kind", "%q is not scripted, command or openai", s.Kind)
	}
	cs := s.Capabilities
	if cs.SupportsStreaming != nil {
		caps.SupportsStreaming = *cs.SupportsStreaming
	}
	if cs.SupportsTools != nil {
		caps.SupportsTools = *cs.SupportsTools
	}
	if cs.SupportsFileOperations != nil {
		caps.SupportsFileOperations = *cs.SupportsFileOperations
	}
	if cs.MaxConcurrentRequests < 0 || cs.MaxTokens < 0 {
		return nil, field("capabilities", "maxConcurrentRequests and maxTokens must not be negative")
	}
	if cs.MaxConcurrentRequests > 0 {
		maxConc = cs.MaxConcurrentRequests
	}
	caps.MaxConcurrentRequests = maxConc
	defs, err := toolDefs(cs.Tools, toolsOn)
	if err != nil {
		return nil, field("capabilities.tools", "%v", err)
	}
	caps.AvailableTools = defs
	if len(defs) > 0 && cs.SupportsTools == nil {
		caps.SupportsTools = true
	}

	info := contract.AgentInfo{ID: s.ID, Name: s.Name, Type: typ, Description: s.Description,
		Status: contract.AgentStatusReady, Capabilities: &caps, WorkingDirectory: s.WorkingDirectory,
		LastActive: contract.NewDateTime(opts.Now().UTC()), Configuration: config}
	if info.Name == "" {
		info.Name = s.ID
	}
	return NewAgent(info, s.Kind, s.SystemPrompt, backend, maxConc, opts.Logger.With(slog.String("agent_id", s.ID)), opts.Now), nil
}

// toolDefs returns the definitions of the named tools (all when names is
// empty and all is set).
func toolDefs(names []string, all bool) ([]contract.ToolDefinition, error) {
	defs := tools.Definitions()
	if len(names) == 0 {
		if all {
			return defs, nil
		}
		return nil, nil
	}
	var out []contract.ToolDefinition
	for _, n := range names {
		c, ok := tools.CanonicalName(n)
		if !ok {
			return nil, fmt.Errorf("unknown tool %q", n)
		}
		i := slices.IndexFunc(defs, func(d contract.ToolDefinition) bool { return d.Name == c })
		out = append(out, defs[i])
	}
	return out, nil
}

// secretValue matches values that look like API keys or tokens.
var secretValue = regexp.MustCompile(`^(sk-|sk_|xox[abp]-|ghp_|gho_|github_pat_|AKIA|AIza|hf_|Bearer\s)[A-Za-z0-9_\-./+=]{8,}`)

// checkSecrets refuses inline secrets anywhere in the document: a key
// naming a secret (apiKey, token, password, authorization, …) unless it
// names an environment variable (ends in "Env"), and any value that looks
// like a key.
func checkSecrets(n *yaml.Node) error {
	var walk func(n *yaml.Node, path string) error
	walk = func(n *yaml.Node, path string) error {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for i, c := range n.Content {
				p := path
				if n.Kind == yaml.SequenceNode {
					p = fmt.Sprintf("%s[%d]", path, i)
				}
				if err := walk(c, p); err != nil {
					return err
				}
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := strings.TrimPrefix(path+"."+k.Value, ".")
				lk := strings.ToLower(k.Value)
				if contract.IsSecretKey(k.Value) && !strings.HasSuffix(lk, "env") && v.Kind == yaml.ScalarNode && v.Value != "" {
					return fmt.Errorf("agents: catalogue: %s (line %d): inline secrets are not allowed; put the secret in an environment variable and name it with apiKeyEnv", p, k.Line)
				}
				if err := walk(v, p); err != nil {
					return err
				}
			}
		case yaml.ScalarNode:
			if secretValue.MatchString(n.Value) {
				return fmt.Errorf("agents: catalogue: %s (line %d): the value looks like an API key or token; inline secrets are not allowed, use apiKeyEnv", path, n.Line)
			}
		}
		return nil
	}
	return walk(n, "")
}

// validURL checks an http(s) base URL.
func validURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	if u.User != nil {
		return fmt.Errorf("%q has credentials in it; use apiKeyEnv", s)
	}
	return nil
}

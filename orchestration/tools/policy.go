package tools

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Mode is what the policy does when no rule decides (CONTRACT §8.4's
// ApprovalPolicy). The zero value is RequireUserApproval, the contract's
// default. The numeric values differ from the .NET enum's (AlwaysApprove 0,
// AlwaysDeny 1, RequireUserApproval 2) so that an unset Mode is the safe
// one; they never go on the wire — use [ParseMode] for configuration.
type Mode int

// Modes.
const (
	RequireUserApproval Mode = iota
	AlwaysApprove
	AlwaysDeny
)

// String returns the contract's name of the mode.
func (m Mode) String() string {
	switch m {
	case RequireUserApproval:
		return "RequireUserApproval"
	case AlwaysApprove:
		return "AlwaysApprove"
	case AlwaysDeny:
		return "AlwaysDeny"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads a mode name, ignoring case, '_' and '-'
// ("RequireUserApproval", "always-approve", ...).
func ParseMode(s string) (Mode, error) {
	switch normKey(s) {
	case "requireuserapproval", "":
		return RequireUserApproval, nil
	case "alwaysapprove":
		return AlwaysApprove, nil
	case "alwaysdeny":
		return AlwaysDeny, nil
	}
	return 0, fmt.Errorf("tools: unknown approval policy %q (AlwaysApprove, AlwaysDeny or RequireUserApproval)", s)
}

// DefaultAutoApprovedTools are approved without asking (CONTRACT §8.4).
// Names are compared after mapping aliases to canonical names, so file_read
// covers read_file.
func DefaultAutoApprovedTools() []string {
	return []string{"file_read", "list_files", "glob", "grep", "web_search"}
}

// DefaultAllowPatterns approve a matching command (CONTRACT §8.4).
func DefaultAllowPatterns() []string {
	return []string{`^ls\s`, `^dir\s`, `^pwd$`, `^echo\s`, `^cat\s.*\.txt$`, `^head\s`, `^tail\s`}
}

// DefaultDenyPatterns deny a matching command (CONTRACT §8.4).
func DefaultDenyPatterns() []string {
	return []string{`^rm\s+-rf\s+/`, `^del\s+/s\s+/q\s+\*`, `^format\s`, `^fdisk\s`, `^mkfs\s`, `^dd\s+if=.*of=`}
}

// DefaultDangerousPatterns make a command dangerous (CONTRACT §8.4).
func DefaultDangerousPatterns() []string {
	return []string{`\brm\s+`, `\bdel\s+`, `\bformat\s+`, `\bfdisk\s+`, `\bmkfs\s+`, `\bdd\s+`,
		`\breboot\s*$`, `\bshutdown\s+`, `\bsudo\s+`, `\breadpasswd\s+`, `\bchmod\s+777`,
		`\bwget\s+.*\|.*sh`, `\bcurl\s+.*\|.*sh`}
}

// DefaultDangerousTools make every call of the tool dangerous (CONTRACT
// §8.4); compared after mapping aliases, so bash covers bash_command.
func DefaultDangerousTools() []string {
	return []string{"bash", "powershell", "command_execution", "file_write", "file_delete"}
}

// PolicyConfig holds the settings of CONTRACT §8.4. Nil lists take the
// defaults (Default* functions); an empty non-nil list means none. Other
// zero values take the defaults documented on each field.
type PolicyConfig struct {
	// YOLO approves everything (enableYoloMode, false).
	YOLO bool
	// DangerousOnly approves every call that is not dangerous
	// (requireApprovalForDangerousOnly, false).
	DangerousOnly bool
	// Mode applies when no rule decides (RequireUserApproval).
	Mode Mode
	// AutoApprovedTools, AllowPatterns, DenyPatterns, DangerousPatterns and
	// DangerousTools: see the Default* functions. Patterns are regular
	// expressions (RE2), matched case-insensitively against the command.
	AutoApprovedTools []string
	AllowPatterns     []string
	DenyPatterns      []string
	DangerousPatterns []string
	DangerousTools    []string
	// AllowCompoundCommands lets an allow-list pattern approve a command
	// that chains, pipes, substitutes or redirects (; & | ` $( > or a line
	// break), as the original does: "ls; rm -rf ~" matches ^ls\s. Default
	// false: such a command skips the allow-list and goes on to the
	// deny-list and the policy — stricter than the original, never looser.
	AllowCompoundCommands bool
	// MaxPendingRequests bounds the approvals waiting for a user; more are
	// denied (10). See Approvals for the scope of the count.
	MaxPendingRequests int
	// ApprovalTimeout is how long a user has to decide; then the call is
	// denied (defaultApprovalTimeout, 5 minutes).
	ApprovalTimeout time.Duration
	// CacheSize bounds the decision cache (1024 entries; the oldest entry
	// is evicted first).
	CacheSize int
}

// Defaults of PolicyConfig.
const (
	DefaultMaxPendingRequests = 10
	DefaultApprovalTimeout    = 5 * time.Minute
	DefaultPolicyCacheSize    = 1024
)

func (c PolicyConfig) withDefaults() PolicyConfig {
	if c.AutoApprovedTools == nil {
		c.AutoApprovedTools = DefaultAutoApprovedTools()
	}
	if c.AllowPatterns == nil {
		c.AllowPatterns = DefaultAllowPatterns()
	}
	if c.DenyPatterns == nil {
		c.DenyPatterns = DefaultDenyPatterns()
	}
	if c.DangerousPatterns == nil {
		c.DangerousPatterns = DefaultDangerousPatterns()
	}
	if c.DangerousTools == nil {
		c.DangerousTools = DefaultDangerousTools()
	}
	if c.MaxPendingRequests <= 0 {
		c.MaxPendingRequests = DefaultMaxPendingRequests
	}
	if c.ApprovalTimeout <= 0 {
		c.ApprovalTimeout = DefaultApprovalTimeout
	}
	if c.CacheSize <= 0 {
		c.CacheSize = DefaultPolicyCacheSize
	}
	return c
}

// Context is what the policy judges (CONTRACT §8.4's context).
type Context struct {
	ToolName string
	// Command is the shell command for bash, "" for other tools.
	Command          string
	Parameters       map[string]any
	Reason           string
	AgentID          string
	SessionID        string
	WorkingDirectory string
}

// ContextFor builds the policy context of a tool call: Command is the
// call's "command" parameter, if any.
func ContextFor(call Call) Context {
	cmd, _, _ := params(call.Parameters).str("command", "cmd")
	return Context{ToolName: call.ToolName, Command: cmd, Parameters: call.Parameters,
		AgentID: call.AgentID, SessionID: call.SessionID, WorkingDirectory: call.WorkingDirectory}
}

// Outcome is the kind of a Decision.
type Outcome int

// Outcomes.
const (
	// Approve: run the tool.
	Approve Outcome = iota
	// Deny: refuse it, with Decision.Reason.
	Deny
	// AskUser: a user must decide (see Approvals).
	AskUser
)

// String names the outcome.
func (o Outcome) String() string {
	switch o {
	case Approve:
		return "approve"
	case Deny:
		return "deny"
	case AskUser:
		return "ask-user"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// Rules that can decide, reported in Decision.Rule and the audit log.
const (
	RuleYOLO          = "yolo"
	RuleDangerousOnly = "dangerous-only"
	RuleAutoApproved  = "auto-approved-tool"
	RuleAllowList     = "allow-list"
	RuleDenyList      = "deny-list"
	RulePolicy        = "policy"
)

// Decision is the policy's answer.
type Decision struct {
	Outcome Outcome
	// Reason explains the outcome in words fit for the user.
	Reason string
	// IsDangerous is set whatever the outcome (deny-listed, a dangerous
	// tool, or a dangerous command pattern).
	IsDangerous bool
	// Cached is true when the answer came from the cache.
	Cached bool
	// Rule names the rule that decided (Rule* constants).
	Rule string
}

// Policy evaluates the approval rules of CONTRACT §8.4. It does no I/O and
// never blocks; it is safe for concurrent use. Its only state is the
// decision cache, which holds only answers of the static rules
// (auto-approved tool, allow-list, deny-list), so it never changes an
// outcome — it saves the regular expressions.
type Policy struct {
	cfg                    PolicyConfig
	auto, dangerousTools   map[string]bool
	allow, deny, dangerous []*regexp.Regexp
	mu                     sync.Mutex
	cache                  map[string]Decision
	order                  []string // cache keys, oldest first
}

// NewPolicy compiles cfg. It fails on an invalid pattern, naming it.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	cfg = cfg.withDefaults()
	p := &Policy{cfg: cfg, auto: toolSet(cfg.AutoApprovedTools), dangerousTools: toolSet(cfg.DangerousTools),
		cache: make(map[string]Decision)}
	var err error
	if p.allow, err = compileAll("allow", cfg.AllowPatterns); err != nil {
		return nil, err
	}
	if p.deny, err = compileAll("deny", cfg.DenyPatterns); err != nil {
		return nil, err
	}
	if p.dangerous, err = compileAll("dangerous", cfg.DangerousPatterns); err != nil {
		return nil, err
	}
	return p, nil
}

// Config returns the configuration with its defaults filled in.
func (p *Policy) Config() PolicyConfig { return p.cfg }

func compileAll(kind string, patterns []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(patterns))
	for _, s := range patterns {
		re, err := regexp.Compile("(?i)" + s)
		if err != nil {
			return nil, fmt.Errorf("tools: %s pattern %q: %w", kind, s, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// toolKey is the name tools are compared by: canonical when known, else
// lower case.
func toolKey(name string) string {
	if c, ok := CanonicalName(name); ok {
		return c
	}
	return strings.ToLower(strings.TrimSpace(name))
}

func toolSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[toolKey(n)] = true
	}
	return m
}

func firstMatch(res []*regexp.Regexp, s string) *regexp.Regexp {
	for _, re := range res {
		if re.MatchString(s) {
			return re
		}
	}
	return nil
}

// compound reports whether a command does more than one simple thing.
func compound(cmd string) bool {
	return strings.ContainsAny(cmd, ";&|`>\n\r") || strings.Contains(cmd, "$(")
}

// IsDangerous reports whether the call is dangerous: deny-listed, a
// dangerous tool, or a command matching a dangerous pattern.
func (p *Policy) IsDangerous(c Context) bool {
	return p.dangerousTools[toolKey(c.ToolName)] ||
		(c.Command != "" && (firstMatch(p.deny, c.Command) != nil || firstMatch(p.dangerous, c.Command) != nil))
}

// Evaluate applies the rules in the contract's order: YOLO → approve;
// dangerous-only mode and not dangerous → approve; cached answer;
// auto-approved tool → approve; allow-list → approve; deny-list → deny (the
// last three are cached under tool|command|workingDirectory|dangerous);
// then the Mode: approve, deny, or AskUser. Max pending and the timeout are
// the Approvals coordinator's business.
func (p *Policy) Evaluate(c Context) Decision {
	dangerous := p.IsDangerous(c)
	tool := toolKey(c.ToolName)
	if p.cfg.YOLO {
		return Decision{Outcome: Approve, Reason: "YOLO mode: every tool call is approved", IsDangerous: dangerous, Rule: RuleYOLO}
	}
	if p.cfg.DangerousOnly && !dangerous {
		return Decision{Outcome: Approve, Reason: "not dangerous; approval is required for dangerous operations only",
			Rule: RuleDangerousOnly}
	}
	key := fmt.Sprintf("%s|%s|%s|%t", tool, c.Command, c.WorkingDirectory, dangerous)
	if d, ok := p.cached(key); ok {
		d.Cached = true
		return d
	}
	var d Decision
	switch {
	case p.auto[tool]:
		d = Decision{Outcome: Approve, Reason: fmt.Sprintf("tool '%s' is auto-approved", tool), Rule: RuleAutoApproved}
	case c.Command != "" && (p.cfg.AllowCompoundCommands || !compound(c.Command)) && firstMatch(p.allow, c.Command) != nil:
		d = Decision{Outcome: Approve, Rule: RuleAllowList,
			Reason: fmt.Sprintf("command matches the allow-list pattern %s", unflag(firstMatch(p.allow, c.Command)))}
	case c.Command != "" && firstMatch(p.deny, c.Command) != nil:
		d = Decision{Outcome: Deny, Rule: RuleDenyList,
			Reason: fmt.Sprintf("command matches the deny-list pattern %s", unflag(firstMatch(p.deny, c.Command)))}
	default:
		switch p.cfg.Mode {
		case AlwaysApprove:
			return Decision{Outcome: Approve, Reason: "approved by policy AlwaysApprove", IsDangerous: dangerous, Rule: RulePolicy}
		case AlwaysDeny:
			return Decision{Outcome: Deny, Reason: "denied by policy AlwaysDeny", IsDangerous: dangerous, Rule: RulePolicy}
		default:
			return Decision{Outcome: AskUser, Reason: "user approval required", IsDangerous: dangerous, Rule: RulePolicy}
		}
	}
	d.IsDangerous = dangerous
	p.store(key, d)
	return d
}

func unflag(re *regexp.Regexp) string { return strings.TrimPrefix(re.String(), "(?i)") }

func (p *Policy) cached(key string) (Decision, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.cache[key]
	return d, ok
}

func (p *Policy) store(key string, d Decision) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.cache[key]; ok {
		return
	}
	if len(p.order) >= p.cfg.CacheSize {
		delete(p.cache, p.order[0])
		p.order = p.order[1:]
	}
	p.cache[key] = d
	p.order = append(p.order, key)
}

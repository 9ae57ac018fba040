package tools

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// Canonical tool names (DESIGN decision 10).
const (
	ToolReadFile  = "read_file"
	ToolWriteFile = "write_file"
	ToolListFiles = "list_files"
	ToolGrep      = "grep"
	ToolBash      = "bash"
)

// CanonicalName maps a tool name or alias (file_read, file_write,
// bash_command), in any letter case, to its canonical name. ok is false for
// an unknown tool.
func CanonicalName(name string) (canonical string, ok bool) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case ToolReadFile, "file_read":
		return ToolReadFile, true
	case ToolWriteFile, "file_write":
		return ToolWriteFile, true
	case ToolListFiles:
		return ToolListFiles, true
	case ToolGrep:
		return ToolGrep, true
	case ToolBash, "bash_command":
		return ToolBash, true
	}
	return "", false
}

// Call is one tool invocation.
type Call struct {
	// ToolName is a canonical name or an alias, in any letter case.
	ToolName string
	// Parameters are the JSON-decoded arguments.
	Parameters map[string]any
	AgentID    string
	SessionID  string
	// WorkingDirectory is the session's working directory, relative to
	// Config.Root ("" = Root itself).
	WorkingDirectory string
}

// Executor runs tool calls in the sandbox. It is safe for concurrent use.
type Executor struct {
	cfg Config
	sb  *sandbox
}

// New returns an executor for cfg. It fails when Root is missing or cannot
// be created and opened.
func New(cfg Config) (*Executor, error) {
	cfg = cfg.withDefaults()
	sb, err := newSandbox(cfg.Root)
	if err != nil {
		return nil, err
	}
	return &Executor{cfg: cfg, sb: sb}, nil
}

// Close releases the handle on the sandbox root. Calls after Close fail.
func (e *Executor) Close() error { return e.sb.root.Close() }

// Config returns the configuration with its defaults filled in.
func (e *Executor) Config() Config { return e.cfg }

// handler runs one tool and returns its output and metadata; a non-nil
// error makes the result a failure (metadata is kept).
type handler func(ctx context.Context, s *session, p params) (string, contract.Map, error)

func (e *Executor) handler(name string) handler {
	switch name {
	case ToolReadFile:
		return e.readFile
	case ToolWriteFile:
		return e.writeFile
	case ToolListFiles:
		return e.listFiles
	case ToolGrep:
		return e.grep
	case ToolBash:
		return e.bash
	}
	return nil
}

// Execute runs call and reports its outcome. It never panics (a panic in a
// tool becomes a failure result and is logged), always sets
// ExecutionTime and a non-nil Metadata, and returns promptly once ctx is
// done (bash commands are killed). Unknown tools fail with
// "No handler found for tool '<name>'".
func (e *Executor) Execute(ctx context.Context, call Call) (res contract.ToolExecutionResult) {
	start := e.cfg.Now()
	defer func() {
		if r := recover(); r != nil {
			e.cfg.Logger.Error("tool panicked", slog.String("tool", call.ToolName),
				slog.String("session_id", call.SessionID), slog.Any("panic", r),
				slog.String("stack", string(debug.Stack())))
			res = contract.ToolExecutionResult{Error: fmt.Sprintf("tool '%s' failed: internal error", call.ToolName)}
		}
		if res.Metadata == nil {
			res.Metadata = contract.Map{}
		}
		res.ExecutionTime = contract.TimeSpan(e.cfg.Now().Sub(start))
	}()

	name, ok := CanonicalName(call.ToolName)
	if !ok {
		return contract.ToolExecutionResult{Error: fmt.Sprintf("No handler found for tool '%s'", call.ToolName)}
	}
	if err := ctx.Err(); err != nil {
		return contract.ToolExecutionResult{Error: fmt.Sprintf("%s: %v", name, err)}
	}
	if name == ToolBash && !e.cfg.EnableBash {
		return contract.ToolExecutionResult{Error: fmt.Sprintf("%s: %v", name, ErrBashDisabled)}
	}
	if name != ToolBash && e.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.Timeout)
		defer cancel()
	}
	// write_file may create the working directory; the others need it.
	s, err := e.sb.open(call.WorkingDirectory, name == ToolWriteFile)
	if err != nil {
		return contract.ToolExecutionResult{Error: fmt.Sprintf("%s: %v", name, err)}
	}
	defer s.close()

	out, meta, err := e.handler(name)(ctx, s, params(call.Parameters))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
			err = fmt.Errorf("timed out: %w", err)
		}
		return contract.ToolExecutionResult{Output: out, Error: fmt.Sprintf("%s: %v", name, err), Metadata: meta}
	}
	return contract.ToolExecutionResult{Success: true, Output: out, Metadata: meta}
}

// Definitions describes the tools this executor runs (bash only when
// enabled), for AgentCapabilities.AvailableTools and for models that call
// tools. RequiresApproval marks the tools the default policy treats as
// dangerous.
func (e *Executor) Definitions() []contract.ToolDefinition {
	defs := Definitions()
	if e.cfg.EnableBash {
		return defs
	}
	out := defs[:0]
	for _, d := range defs {
		if d.Name != ToolBash {
			out = append(out, d)
		}
	}
	return out
}

// Definitions describes every tool of the package (a fresh slice each call).
func Definitions() []contract.ToolDefinition {
	prop := func(typ, desc string) contract.ToolProperty {
		return contract.ToolProperty{Type: typ, Description: desc}
	}
	def := func(name, desc string, approval bool, cats []string, required []string, props map[string]contract.ToolProperty) contract.ToolDefinition {
		return contract.ToolDefinition{Name: name, Description: desc, RequiresApproval: approval,
			Categories: cats, Metadata: contract.Map{},
			Schema: contract.ToolSchema{Type: "object", Properties: props, Required: required}}
	}
	return []contract.ToolDefinition{
		def(ToolReadFile, "Read a text file in the session's working directory.", false,
			[]string{"file"}, []string{"file_path"}, map[string]contract.ToolProperty{
				"file_path": prop("string", "Path relative to the working directory."),
				"encoding":  prop("string", "utf-8 (default), latin1 or base64."),
			}),
		def(ToolWriteFile, "Write (or append to) a file in the session's working directory.", true,
			[]string{"file"}, []string{"file_path", "content"}, map[string]contract.ToolProperty{
				"file_path":        prop("string", "Path relative to the working directory."),
				"content":          prop("string", "Text to write."),
				"append":           prop("boolean", "Append instead of replacing (default false)."),
				"create_directory": prop("boolean", "Create missing parent directories (default true)."),
				"encoding":         prop("string", "utf-8 (default) or base64 (content is base64)."),
			}),
		def(ToolListFiles, "List files and directories in the session's working directory.", false,
			[]string{"file"}, nil, map[string]contract.ToolProperty{
				"path":      prop("string", "Directory relative to the working directory (default .)."),
				"recursive": prop("boolean", "Descend into subdirectories (default false)."),
				"pattern":   prop("string", "Glob matched against entry names, e.g. *.go."),
			}),
		def(ToolGrep, "Search files (or a given text) with a regular expression.", false,
			[]string{"file", "search"}, []string{"pattern"}, map[string]contract.ToolProperty{
				"pattern":         prop("string", "Regular expression (RE2 syntax)."),
				"text":            prop("string", "Search this text instead of files."),
				"file_path":       prop("string", "File or directory to search (default .)."),
				"recursive":       prop("boolean", "Search subdirectories (default false)."),
				"ignore_case":     prop("boolean", "Case-insensitive match (default false)."),
				"line_numbers":    prop("boolean", "Prefix matches with line numbers (default true)."),
				"max_matches":     prop("integer", "Stop after this many matches (default 100)."),
				"context_before":  prop("integer", "Lines of context before each match (default 0)."),
				"context_after":   prop("integer", "Lines of context after each match (default 0)."),
				"file_extensions": prop("array", "Only files with these extensions, e.g. [\".go\", \"md\"]."),
			}),
		def(ToolBash, "Run a shell command in the session's working directory.", true,
			[]string{"shell"}, []string{"command"}, map[string]contract.ToolProperty{
				"command":           prop("string", "The command, run with bash -c."),
				"working_directory": prop("string", "Directory relative to the working directory."),
				"timeout_seconds":   prop("integer", "1 to 300 (default 30)."),
			}),
	}
}

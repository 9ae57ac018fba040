package tools

import (
	"log/slog"
	"os"
	"time"
)

// Config configures an [Executor]. Zero values take the defaults documented
// on each field; they are filled in by [Config.withDefaults], the one place
// defaults live.
type Config struct {
	// Root is the directory every session's working directory lives under
	// (required). A session's workingDirectory is taken relative to it (an
	// absolute one must lie inside it). New creates Root when it is missing.
	Root string
	// MaxReadBytes is the largest file read_file returns and the largest
	// file grep searches (1 MiB). Larger files are refused (read_file) or
	// skipped (grep), never truncated silently.
	MaxReadBytes int64
	// MaxWriteBytes is the largest content write_file accepts (1 MiB).
	MaxWriteBytes int64
	// MaxListEntries caps the entries list_files returns (1000); the result
	// says when it was truncated.
	MaxListEntries int
	// MaxGrepMatches caps max_matches of grep (1000; the per-call default is
	// 100).
	MaxGrepMatches int
	// MaxGrepFiles caps the files one grep call opens (5000), so a search of
	// a huge tree ends; the result says when it was truncated.
	MaxGrepFiles int
	// MaxContextLines caps context_before and context_after of grep (10).
	MaxContextLines int

	// EnableBash turns the bash tool on (false: it is refused).
	EnableBash bool
	// Shell runs bash commands as Shell -c command ("/bin/bash").
	Shell string
	// BashEnv is the whole environment of bash commands. Nil means a minimal
	// one: PATH (from this process), HOME (the sandbox directory), LANG=C.UTF-8
	// and TERM=dumb. The node's own environment is never inherited, because
	// it holds secrets (API keys) that a command could print.
	BashEnv []string
	// DefaultBashTimeout applies when a call gives no timeout_seconds (30s).
	DefaultBashTimeout time.Duration
	// MaxBashTimeout is the largest timeout_seconds honoured (300s); larger
	// values are clamped to it, smaller than one second to one second.
	MaxBashTimeout time.Duration
	// MaxOutputBytes caps what is kept of each of stdout and stderr of a
	// command (64 KiB); the rest is counted and replaced by a marker.
	MaxOutputBytes int

	// Timeout, when positive, bounds every tool call other than bash (which
	// has its own timeout_seconds). Zero: only the caller's context bounds
	// it.
	Timeout time.Duration
	// Now is the clock used to measure executionTime and stamp metadata
	// (time.Now).
	Now func() time.Time
	// Logger receives warnings such as recovered panics (slog.Default()).
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultMaxReadBytes    = 1 << 20
	DefaultMaxWriteBytes   = 1 << 20
	DefaultMaxListEntries  = 1000
	DefaultMaxGrepMatches  = 1000
	DefaultGrepMatches     = 100
	DefaultMaxGrepFiles    = 5000
	DefaultMaxContextLines = 10
	DefaultShell           = "/bin/bash"
	DefaultBashTimeout     = 30 * time.Second
	DefaultMaxBashTimeout  = 300 * time.Second
	DefaultMaxOutputBytes  = 64 << 10
)

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.MaxReadBytes <= 0 {
		c.MaxReadBytes = DefaultMaxReadBytes
	}
	if c.MaxWriteBytes <= 0 {
		c.MaxWriteBytes = DefaultMaxWriteBytes
	}
	if c.MaxListEntries <= 0 {
		c.MaxListEntries = DefaultMaxListEntries
	}
	if c.MaxGrepMatches <= 0 {
		c.MaxGrepMatches = DefaultMaxGrepMatches
	}
	if c.MaxGrepFiles <= 0 {
		c.MaxGrepFiles = DefaultMaxGrepFiles
	}
	if c.MaxContextLines <= 0 {
		c.MaxContextLines = DefaultMaxContextLines
	}
	if c.Shell == "" {
		c.Shell = DefaultShell
	}
	if c.DefaultBashTimeout <= 0 {
		c.DefaultBashTimeout = DefaultBashTimeout
	}
	if c.MaxBashTimeout <= 0 {
		c.MaxBashTimeout = DefaultMaxBashTimeout
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = DefaultMaxOutputBytes
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// bashEnv returns the environment of a command run in dir.
func (c *Config) bashEnv(dir string) []string {
	if c.BashEnv != nil {
		return c.BashEnv
	}
	path := os.Getenv("PATH")
	if path == "" {
		path = "/usr/local/bin:/usr/bin:/bin"
	}
	return []string{"PATH=" + path, "HOME=" + dir, "LANG=C.UTF-8", "TERM=dumb"}
}

package tools

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/orchestratorchat/hubfarm/orchestration/contract"
)

// newExec returns an executor rooted in a fresh directory, with a session
// directory "s1" holding a few files, and the root path.
func newExec(t *testing.T, mut func(*Config)) (*Executor, string) {
	t.Helper()
	root := t.TempDir()
	cfg := Config{Root: root, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mut != nil {
		mut(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	mustWrite(t, filepath.Join(root, "s1", "hello.txt"), "hello\nworld\n")
	mustWrite(t, filepath.Join(root, "s1", "src", "main.go"), "package main\n\nfunc main() {\n\tprintln(\"Hello\")\n}\n")
	mustWrite(t, filepath.Join(root, "s1", "src", "util.go"), "package main\n\n// hello helper\nfunc hello() {}\n")
	mustWrite(t, filepath.Join(root, "s1", "docs", "readme.md"), "# Hello\nsay hello\n")
	mustWrite(t, filepath.Join(root, "secret.txt"), "root secret\n")
	return e, root
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func run(t *testing.T, e *Executor, tool string, p map[string]any) contract.ToolExecutionResult {
	t.Helper()
	return e.Execute(context.Background(), Call{ToolName: tool, Parameters: p, SessionID: "sess", AgentID: "agent", WorkingDirectory: "s1"})
}

func wantOK(t *testing.T, r contract.ToolExecutionResult) {
	t.Helper()
	if !r.Success {
		t.Fatalf("want success, got error %q (output %q)", r.Error, r.Output)
	}
	if r.Metadata == nil {
		t.Fatal("metadata is nil")
	}
}

func wantFail(t *testing.T, r contract.ToolExecutionResult, substr string) {
	t.Helper()
	if r.Success {
		t.Fatalf("want failure containing %q, got success: %q", substr, r.Output)
	}
	if !strings.Contains(r.Error, substr) {
		t.Fatalf("error %q does not contain %q", r.Error, substr)
	}
	if r.Metadata == nil {
		t.Fatal("metadata is nil")
	}
}

func TestCanonicalNames(t *testing.T) {
	for in, want := range map[string]string{"read_file": "read_file", "FILE_READ": "read_file", "File_Write": "write_file",
		"write_file": "write_file", "list_files": "list_files", "GREP": "grep", "bash": "bash", "Bash_Command": "bash"} {
		got, ok := CanonicalName(in)
		if !ok || got != want {
			t.Errorf("CanonicalName(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
	e, _ := newExec(t, nil)
	r := run(t, e, "web_fetch", nil)
	if r.Success || r.Error != "No handler found for tool 'web_fetch'" {
		t.Fatalf("unknown tool: %+v", r)
	}
	// Aliases run the same handler.
	wantOK(t, run(t, e, "FILE_READ", map[string]any{"file_path": "hello.txt"}))
}

func TestSandboxEscapes(t *testing.T) {
	e, root := newExec(t, nil)
	outside := t.TempDir()
	mustWrite(t, filepath.Join(outside, "x.txt"), "outside\n")
	s1 := filepath.Join(root, "s1")
	if err := os.Symlink(filepath.Join(outside, "x.txt"), filepath.Join(s1, "link.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(s1, "linkdir")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "new.txt"), filepath.Join(s1, "dangling.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello.txt", filepath.Join(s1, "inside.txt")); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, tool string
		p          map[string]any
		want       string
	}{
		{"dotdot", "read_file", map[string]any{"file_path": "../x"}, "escapes the working directory"},
		{"dotdot to a sibling file", "read_file", map[string]any{"file_path": "../secret.txt"}, "escapes"},
		{"deep dotdot", "read_file", map[string]any{"file_path": "src/../../secret.txt"}, "escapes"},
		{"absolute outside", "read_file", map[string]any{"file_path": "/etc/passwd"}, "is outside the working directory"},
		{"symlink to outside file", "read_file", map[string]any{"file_path": "link.txt"}, "through a symbolic link"},
		{"symlinked dir outside", "read_file", map[string]any{"file_path": "linkdir/x.txt"}, "through a symbolic link"},
		{"list symlinked dir", "list_files", map[string]any{"path": "linkdir"}, "through a symbolic link"},
		{"grep symlinked dir", "grep", map[string]any{"pattern": "o", "file_path": "linkdir"}, "through a symbolic link"},
		{"write through symlinked dir", "write_file", map[string]any{"file_path": "linkdir/y.txt", "content": "x"}, "through a symbolic link"},
		{"write through dangling link", "write_file", map[string]any{"file_path": "dangling.txt", "content": "x"}, "through a symbolic link"},
		{"write dotdot", "write_file", map[string]any{"file_path": "../evil.txt", "content": "x"}, "escapes"},
		{"bash working dir outside", "bash", map[string]any{"command": "pwd", "working_directory": "../"}, "disabled"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := run(t, e, c.tool, c.p)
			wantFail(t, r, c.want)
			if strings.Contains(r.Error, root) || strings.Contains(r.Error, outside) {
				t.Errorf("error leaks a host path: %q", r.Error)
			}
		})
	}
	for _, f := range []string{filepath.Join(outside, "y.txt"), filepath.Join(outside, "new.txt"), filepath.Join(root, "evil.txt")} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s was created outside the sandbox", f)
		}
	}
	// A link that stays inside works.
	r := run(t, e, "read_file", map[string]any{"file_path": "inside.txt"})
	wantOK(t, r)
	if r.Output != "hello\nworld\n" {
		t.Fatalf("inside link: %q", r.Output)
	}
	// Absolute paths inside the session directory are accepted.
	wantOK(t, run(t, e, "read_file", map[string]any{"file_path": filepath.Join(root, "s1", "hello.txt")}))
}

func TestWorkingDirectoryConfined(t *testing.T) {
	e, root := newExec(t, nil)
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(root, "escape")); err != nil {
		t.Fatal(err)
	}
	for _, wd := range []string{"../", "/etc", "escape", "s1/../../x"} {
		r := e.Execute(context.Background(), Call{ToolName: "list_files", WorkingDirectory: wd})
		wantFail(t, r, "access denied")
	}
	r := e.Execute(context.Background(), Call{ToolName: "list_files", WorkingDirectory: "nope"})
	wantFail(t, r, "does not exist")
	// "" is the root itself.
	r = e.Execute(context.Background(), Call{ToolName: "read_file", Parameters: map[string]any{"file_path": "secret.txt"}})
	wantOK(t, r)
	// write_file creates a missing working directory.
	r = e.Execute(context.Background(), Call{ToolName: "write_file", WorkingDirectory: "new/session",
		Parameters: map[string]any{"file_path": "a.txt", "content": "a"}})
	wantOK(t, r)
	if b, _ := os.ReadFile(filepath.Join(root, "new", "session", "a.txt")); string(b) != "a" {
		t.Fatalf("content %q", b)
	}
}

func TestReadFile(t *testing.T) {
	e, root := newExec(t, nil)
	r := run(t, e, "read_file", map[string]any{"file_path": "hello.txt"})
	wantOK(t, r)
	if r.Output != "hello\nworld\n" {
		t.Fatalf("output %q", r.Output)
	}
	if r.Metadata["file_size"] != 12 || r.Metadata["line_count"] != 2 || r.Metadata["file_path"] != "hello.txt" {
		t.Fatalf("metadata %v", r.Metadata)
	}
	if _, ok := r.Metadata["last_modified"].(contract.DateTime); !ok {
		t.Fatalf("last_modified %T", r.Metadata["last_modified"])
	}
	if r.ExecutionTime <= 0 {
		t.Fatalf("executionTime %v", r.ExecutionTime)
	}
	// The result must be valid contract JSON.
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
	// camelCase parameter names and base64.
	r = run(t, e, "read_file", map[string]any{"filePath": "hello.txt", "encoding": "base64"})
	wantOK(t, r)
	if r.Output != base64.StdEncoding.EncodeToString([]byte("hello\nworld\n")) {
		t.Fatalf("base64 %q", r.Output)
	}
	wantFail(t, run(t, e, "read_file", map[string]any{"file_path": "missing.txt"}), "no such file")
	wantFail(t, run(t, e, "read_file", map[string]any{"file_path": "src"}), "is a directory")
	wantFail(t, run(t, e, "read_file", map[string]any{}), "file_path is required")
	wantFail(t, run(t, e, "read_file", map[string]any{"file_path": []any{1}}), "file_path must be a string")

	// Huge file.
	mustWrite(t, filepath.Join(root, "s1", "big.bin"), strings.Repeat("x", DefaultMaxReadBytes+1))
	wantFail(t, run(t, e, "read_file", map[string]any{"file_path": "big.bin"}), "read limit")
}

func TestReadFIFORefused(t *testing.T) {
	e, root := newExec(t, nil)
	if err := mkfifo(filepath.Join(root, "s1", "pipe")); err != nil {
		t.Skip("mkfifo:", err)
	}
	done := make(chan contract.ToolExecutionResult, 1)
	go func() { done <- run(t, e, "read_file", map[string]any{"file_path": "pipe"}) }()
	select {
	case r := <-done:
		wantFail(t, r, "not a regular file")
	case <-time.After(10 * time.Second):
		t.Fatal("read_file of a FIFO hangs")
	}
}

func TestWriteFile(t *testing.T) {
	e, root := newExec(t, func(c *Config) { c.MaxWriteBytes = 100 })
	r := run(t, e, "write_file", map[string]any{"file_path": "out/new.txt", "content": "one\n"})
	wantOK(t, r)
	if r.Metadata["operation"] != "create" || r.Metadata["created_directory"] != true || r.Metadata["bytes_written"] != 4 {
		t.Fatalf("metadata %v", r.Metadata)
	}
	r = run(t, e, "write_file", map[string]any{"file_path": "out/new.txt", "content": "two\n", "append": "true"})
	wantOK(t, r)
	if r.Metadata["operation"] != "append" || r.Metadata["file_size"] != int64(8) {
		t.Fatalf("metadata %v", r.Metadata)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "s1", "out", "new.txt")); string(b) != "one\ntwo\n" {
		t.Fatalf("content %q", b)
	}
	// Overwrite keeps the mode.
	p := filepath.Join(root, "s1", "hello.txt")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, e, "write_file", map[string]any{"file_path": "hello.txt", "content": "bye"})
	wantOK(t, r)
	if r.Metadata["operation"] != "overwrite" {
		t.Fatalf("metadata %v", r.Metadata)
	}
	st, _ := os.Stat(p)
	if b, _ := os.ReadFile(p); string(b) != "bye" || st.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %v", b, st.Mode())
	}
	// No temporary file is left behind.
	ents, _ := os.ReadDir(filepath.Join(root, "s1"))
	for _, d := range ents {
		if strings.Contains(d.Name(), ".tmp-") {
			t.Fatalf("left %s", d.Name())
		}
	}
	wantFail(t, run(t, e, "write_file", map[string]any{"file_path": "x/y.txt", "content": "a", "create_directory": false}), "does not exist")
	wantFail(t, run(t, e, "write_file", map[string]any{"file_path": "src", "content": "a"}), "is a directory")
	wantFail(t, run(t, e, "write_file", map[string]any{"file_path": "a.txt"}), "content is required")
	// Huge write.
	wantFail(t, run(t, e, "write_file", map[string]any{"file_path": "huge.txt", "content": strings.Repeat("x", 101)}), "write limit")
	if _, err := os.Stat(filepath.Join(root, "s1", "huge.txt")); err == nil {
		t.Fatal("huge write created a file")
	}
	// Empty content truncates.
	wantOK(t, run(t, e, "write_file", map[string]any{"file_path": "hello.txt", "content": ""}))
}

func TestListFiles(t *testing.T) {
	e, _ := newExec(t, nil)
	r := run(t, e, "list_files", nil)
	wantOK(t, r)
	if r.Output != "docs/\nhello.txt\nsrc/\n" {
		t.Fatalf("output %q", r.Output)
	}
	r = run(t, e, "list_files", map[string]any{"recursive": true, "pattern": "*.go"})
	wantOK(t, r)
	if r.Output != "src/main.go\nsrc/util.go\n" || r.Metadata["count"] != 2 {
		t.Fatalf("output %q %v", r.Output, r.Metadata)
	}
	r = run(t, e, "list_files", map[string]any{"path": "src"})
	wantOK(t, r)
	if r.Output != "src/main.go\nsrc/util.go\n" {
		t.Fatalf("output %q", r.Output)
	}
	wantFail(t, run(t, e, "list_files", map[string]any{"pattern": "["}), "pattern")
}

func TestListCap(t *testing.T) {
	e, root := newExec(t, func(c *Config) { c.MaxListEntries = 3 })
	for i := range 10 {
		mustWrite(t, filepath.Join(root, "s1", "many", fmt.Sprintf("f%02d", i)), "x")
	}
	r := run(t, e, "list_files", map[string]any{"path": "many"})
	wantOK(t, r)
	if r.Metadata["count"] != 3 || r.Metadata["truncated"] != true || !strings.Contains(r.Output, "truncated") {
		t.Fatalf("output %q %v", r.Output, r.Metadata)
	}
}

func TestGrep(t *testing.T) {
	e, root := newExec(t, nil)
	r := run(t, e, "grep", map[string]any{"pattern": "hello", "recursive": true})
	wantOK(t, r)
	want := "docs/readme.md:2:say hello\nhello.txt:1:hello\nsrc/util.go:3:// hello helper\nsrc/util.go:4:func hello() {}\n"
	if r.Output != want {
		t.Fatalf("output\n%s\nwant\n%s", r.Output, want)
	}
	if r.Metadata["matches"] != 4 || r.Metadata["files_matched"] != 3 {
		t.Fatalf("metadata %v", r.Metadata)
	}
	// Not recursive: only files directly in the directory.
	r = run(t, e, "grep", map[string]any{"pattern": "hello"})
	wantOK(t, r)
	if r.Output != "hello.txt:1:hello\n" {
		t.Fatalf("output %q", r.Output)
	}
	// ignore_case, extensions (string form), max_matches as a string.
	r = run(t, e, "grep", map[string]any{"pattern": "HELLO", "ignore_case": "true", "recursive": "1",
		"file_extensions": "go", "max_matches": "1", "line_numbers": false})
	wantOK(t, r)
	if r.Output != "src/main.go:\tprintln(\"Hello\")\n" || r.Metadata["max_matches_reached"] != true {
		t.Fatalf("output %q %v", r.Output, r.Metadata)
	}
	// Context lines and separators.
	r = run(t, e, "grep", map[string]any{"pattern": "^func", "file_path": "src", "context_before": 1.0, "context_after": float64(1)})
	wantOK(t, r)
	want = "src/main.go-2-\nsrc/main.go:3:func main() {\nsrc/main.go-4-\tprintln(\"Hello\")\n--\nsrc/util.go-3-// hello helper\nsrc/util.go:4:func hello() {}\n"
	if r.Output != want {
		t.Fatalf("output\n%s\nwant\n%s", r.Output, want)
	}
	// A single file, and a text.
	r = run(t, e, "grep", map[string]any{"pattern": "wor", "file_path": "hello.txt"})
	wantOK(t, r)
	if r.Output != "hello.txt:2:world\n" {
		t.Fatalf("output %q", r.Output)
	}
	r = run(t, e, "grep", map[string]any{"pattern": "b", "text": "a\nb\nc"})
	wantOK(t, r)
	if r.Output != "2:b\n" {
		t.Fatalf("output %q", r.Output)
	}
	r = run(t, e, "grep", map[string]any{"pattern": "zzz", "recursive": true})
	wantOK(t, r)
	if r.Output != "No matches found." || r.Metadata["matches"] != 0 {
		t.Fatalf("output %q", r.Output)
	}
	wantFail(t, run(t, e, "grep", map[string]any{"pattern": "("}), "pattern")
	// Large and binary files are skipped, not read.
	mustWrite(t, filepath.Join(root, "s1", "big.txt"), "hello\n"+strings.Repeat("x", DefaultMaxReadBytes))
	mustWrite(t, filepath.Join(root, "s1", "bin.dat"), "hello\x00\x01")
	r = run(t, e, "grep", map[string]any{"pattern": "hello"})
	wantOK(t, r)
	if r.Output != "hello.txt:1:hello\n" || r.Metadata["skipped_large"] != 1 || r.Metadata["skipped_binary"] != 1 {
		t.Fatalf("output %q %v", r.Output, r.Metadata)
	}
}

func TestGrepCaps(t *testing.T) {
	e, root := newExec(t, func(c *Config) { c.MaxGrepMatches = 5; c.MaxGrepFiles = 3 })
	for i := range 10 {
		mustWrite(t, filepath.Join(root, "s1", "m", fmt.Sprintf("f%02d.txt", i)), "no\n")
	}
	r := run(t, e, "grep", map[string]any{"pattern": "yes", "file_path": "m"})
	wantOK(t, r)
	if r.Metadata["files_searched"] != 3 || r.Metadata["truncated"] != true {
		t.Fatalf("metadata %v", r.Metadata)
	}
	mustWrite(t, filepath.Join(root, "s1", "lines.txt"), strings.Repeat("yes\n", 50))
	r = run(t, e, "grep", map[string]any{"pattern": "yes", "file_path": "lines.txt", "max_matches": 1000})
	wantOK(t, r)
	if r.Metadata["matches"] != 5 {
		t.Fatalf("metadata %v", r.Metadata)
	}
}

func TestExecuteHonoursContext(t *testing.T) {
	e, _ := newExec(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := e.Execute(ctx, Call{ToolName: "read_file", Parameters: map[string]any{"file_path": "hello.txt"}, WorkingDirectory: "s1"})
	wantFail(t, r, "context canceled")
}

func TestExecuteRecoversPanics(t *testing.T) {
	e, _ := newExec(t, nil)
	// A parameter map whose values panic when formatted would be contrived;
	// instead call a handler through Execute with a nil sandbox root.
	e2 := &Executor{cfg: e.cfg, sb: &sandbox{rootAbs: e.sb.rootAbs, rootReal: e.sb.rootReal}}
	r := e2.Execute(context.Background(), Call{ToolName: "read_file", Parameters: map[string]any{"file_path": "secret.txt"}})
	wantFail(t, r, "internal error")
}

func TestConfineDir(t *testing.T) {
	root := t.TempDir()
	real, _ := filepath.EvalSymlinks(root)
	if d, err := ConfineDir(root, "a/b"); err != nil || d != filepath.Join(real, "a", "b") {
		t.Fatalf("%q %v", d, err)
	}
	if d, err := ConfineDir(root, ""); err != nil || d != real {
		t.Fatalf("%q %v", d, err)
	}
	for _, bad := range []string{"..", "/etc", "a/../../b"} {
		if _, err := ConfineDir(root, bad); !errors.Is(err, ErrOutsideSandbox) {
			t.Fatalf("ConfineDir(%q): %v", bad, err)
		}
	}
}
